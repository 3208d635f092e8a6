"""bench/state.py's quick run prints every figure issue 10 asks for, and its restores are identical.

No timing is asserted (the figures are whatever the machine gives); what is
asserted is that each figure is there, and that the restored pipelines of the
run have the same state and give the same alerts as the uninterrupted ones.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "state.py"
NUMBER = r"[\d,]+(?:\.\d+)?"


@pytest.fixture(scope="module")
def output() -> str:
    spec = importlib.util.spec_from_file_location("bench_state", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert module.main(["--quick", "--bootstrap", ""]) == 0
    return buffer.getvalue()


@pytest.mark.parametrize("row", [
    "numeric signal (median of 21)", "categorical signal (median of 1)",
    "performance:error_rate (median of 1)", "whole model version record (23 signals)",
    "numeric signal, rule with a reference snapshot of 3,000 values",
    "label join, per waiting prediction (2,000 waiting)",
])
def test_bytes_per_signal_beside_json(output, row):
    assert re.search(rf"^   {re.escape(row)} +{NUMBER} +{NUMBER} +{NUMBER}$", output, re.M), output


def test_snapshot_cost_per_message_beside_pipeline_process(output):
    costs = re.findall(rf"Pipeline\.process ({NUMBER}) us/message; one snapshot ({NUMBER}) ms CPU", output)
    assert len(costs) == 2, output  # no labels topic, and labels 500 events late
    for every in ("5,000", "50,000"):
        assert len(re.findall(rf"1 snapshot per {every}\): {NUMBER} us/message", output)) == 2, output


def test_every_restore_is_identical(output):
    assert output.count("restored from the last snapshot: state identical; next alerts the same") == 2, output
    assert "DIFFERENT" not in output, output


def test_restore_time_and_bytes(output):
    assert re.search(r"3\. restore of 640 signals \(10 model versions", output), output
    assert re.search(rf"restore_pipeline \(decode \+ load\): {NUMBER} s CPU.*restored state identical", output), output
    assert re.search(rf"changelog: \d+ records, {NUMBER} MB", output), output
    assert "reading the records back from a changelog partition: skipped" in output, output
