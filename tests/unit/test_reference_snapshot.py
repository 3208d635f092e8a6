"""`stream-monitor reference`: snapshots from training data, stamped, and used by every detector."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import orjson
import pytest

from stream_monitor.cli import main
from stream_monitor.config import load_settings
from stream_monitor.detectors.reference import SnapshotError, content_hash, load_snapshot, snapshot_id
from stream_monitor.errors import ConfigError
from stream_monitor.simulate import Scenario, parse_drift, stream
from stream_monitor.snapshot import MAX_CATEGORIES, SnapshotBuildError, build_snapshot


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _numbers(n: int, offset: float = 0.0) -> list[float]:
    return [offset + (i % 97) / 7.0 for i in range(n)]


def test_a_csv_gives_numeric_samples_and_category_counts_stamped_with_id_and_hash(tmp_path):
    rows = [[x, ["FR", "DE", "IT"][i % 3], i, 0.25, "m"] for i, x in enumerate(_numbers(900))]
    path = _write_csv(tmp_path / "train.csv", ["amount", "country", "event_id", "prediction", "model"], rows)
    built = build_snapshot(path, "train-v1")
    snapshot = built.snapshot
    assert snapshot["id"] == "train-v1" and snapshot["rows"] == 900 and snapshot["source"] == "train.csv"
    signals = snapshot["signals"]
    # the contract's own fields are never signals; "prediction" is the prediction signal
    assert sorted(signals) == ["feature:amount", "feature:country", "prediction"]
    assert signals["feature:amount"] == _numbers(900)
    assert signals["feature:country"] == {"DE": 300, "FR": 300, "IT": 300}
    assert signals["prediction"] == [0.25] * 900
    assert snapshot["content_sha256"] == content_hash(signals)


def test_the_command_writes_a_snapshot_the_config_loads_with_its_stamped_id(tmp_path, capsys):
    path = _write_csv(tmp_path / "train.csv", ["amount"], [[x] for x in _numbers(600)])
    folder = tmp_path / "conf"
    folder.mkdir()
    assert main(["reference", "--input", str(path), "--id", "train-v1", "--out", str(folder / "ref.json")]) == 0
    out = capsys.readouterr().out
    assert "reference 'train-v1': 1 signals (1 numeric, 0 categorical) from 600 rows of train.csv" in out
    assert load_snapshot(folder / "ref.json") == {"feature:amount": _numbers(600)}
    assert snapshot_id(folder / "ref.json") == "train-v1"
    # no 'id' in the rule: the snapshot's own names it
    (folder / "config.yaml").write_text("models:\n  - reference: {snapshot: ref.json}\n")
    reference = load_settings(folder / "config.yaml").models[0].reference
    assert reference.reference_id() == "train-v1"


def test_a_rule_id_that_disagrees_with_the_stamped_id_is_refused_naming_the_field(tmp_path):
    path = _write_csv(tmp_path / "train.csv", ["amount"], [[x] for x in _numbers(600)])
    assert main(["reference", "--input", str(path), "--id", "train-v1", "--out", str(tmp_path / "ref.json")]) == 0
    (tmp_path / "config.yaml").write_text("models:\n  - reference: {snapshot: ref.json, id: train-v2}\n")
    with pytest.raises(ConfigError) as error:
        load_settings(tmp_path / "config.yaml")
    (field, message), = error.value.problems
    assert field == "models.0.reference"
    assert "'train-v2'" in message and "'train-v1'" in message


def test_a_snapshot_edited_after_it_was_written_is_refused(tmp_path):
    path = _write_csv(tmp_path / "train.csv", ["amount"], [[x] for x in _numbers(600)])
    out = tmp_path / "ref.json"
    assert main(["reference", "--input", str(path), "--id", "train-v1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    data["signals"]["feature:amount"][0] = 1e6
    out.write_text(json.dumps(data))
    with pytest.raises(SnapshotError, match="do not match its content_sha256"):
        load_snapshot(out)
    (tmp_path / "config.yaml").write_text("models:\n  - reference: {snapshot: ref.json}\n")
    with pytest.raises(ConfigError) as error:
        load_settings(tmp_path / "config.yaml")
    assert error.value.problems[0][0] == "models.0.reference.snapshot"


def test_json_lines_events_give_one_models_features_and_prediction(tmp_path):
    scenario = Scenario(models=("fraud", "churn"), n_events=700, n_numeric=2, n_categorical=1, seed=3)
    events = [item for kind, item in stream(scenario) if kind == "prediction"]
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"".join(orjson.dumps(event) + b"\n" for event in events))
    snapshot = build_snapshot(path, "t", model="fraud").snapshot
    fraud = [event for event in events if event["model"] == "fraud"]
    assert snapshot["rows"] == 700 and snapshot["model"] == "fraud"
    assert sorted(snapshot["signals"]) == ["feature:c00", "feature:f00", "feature:f01", "prediction"]
    assert snapshot["signals"]["feature:f01"] == [event["features"]["f01"] for event in fraud]
    assert sum(snapshot["signals"]["feature:c00"].values()) == 700


def test_flat_json_lines_read_booleans_as_categories_and_skip_missing_values(tmp_path):
    lines = [{"score": None if i % 10 == 0 else i / 100, "promo": i % 4 == 0} for i in range(1000)]
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines))
    signals = build_snapshot(path, "t").snapshot["signals"]
    assert signals["feature:promo"] == {"false": 750, "true": 250}
    assert len(signals["feature:score"]) == 900


def test_parquet_is_read_through_pyarrow(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")  # installed by the test extra
    import pyarrow.parquet as parquet

    table = pyarrow.table({"amount": _numbers(800), "country": ["FR", "DE"] * 400})
    parquet.write_table(table, tmp_path / "train.parquet")
    signals = build_snapshot(tmp_path / "train.parquet", "t").snapshot["signals"]
    assert signals == {"feature:amount": _numbers(800), "feature:country": {"DE": 400, "FR": 400}}


def test_parquet_without_pyarrow_says_which_extra_to_install(tmp_path, monkeypatch, capsys):
    (tmp_path / "train.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main(["reference", "--input", str(tmp_path / "train.parquet"), "--id", "t",
                 "--out", str(tmp_path / "ref.json")]) == 1
    assert "pip install 'stream-monitor[parquet]'" in capsys.readouterr().err
    assert not (tmp_path / "ref.json").exists()


def test_columns_and_categorical_codes_are_chosen_by_option(tmp_path):
    rows = [[x, i % 3, "x"] for i, x in enumerate(_numbers(700))]
    path = _write_csv(tmp_path / "train.csv", ["amount", "segment", "note"], rows)
    signals = build_snapshot(path, "t", columns=["amount", "segment"], categorical=["segment"]).snapshot["signals"]
    assert sorted(signals) == ["feature:amount", "feature:segment"]
    assert signals["feature:segment"] == {"0": 234, "1": 233, "2": 233}
    with pytest.raises(SnapshotBuildError, match="--columns: train.csv has no column.*'amout'"):
        build_snapshot(path, "t", columns=["amout"])


def test_a_long_numeric_column_is_sampled_the_same_way_every_time(tmp_path):
    path = _write_csv(tmp_path / "train.csv", ["amount"], [[i] for i in range(5000)])
    first = build_snapshot(path, "t", max_values=1000).snapshot
    again = build_snapshot(path, "t", max_values=1000).snapshot
    values = first["signals"]["feature:amount"]
    assert len(values) == 1000 and len(set(values)) == 1000 and values == sorted(values)
    assert first == again


def test_a_numeric_column_keeps_its_numbers_when_a_few_cells_are_text(tmp_path):
    rows = [["n/a" if i == 7 else x] for i, x in enumerate(_numbers(800))]
    path = _write_csv(tmp_path / "train.csv", ["amount"], rows)
    built = build_snapshot(path, "t")
    assert len(built.snapshot["signals"]["feature:amount"]) == 799
    assert built.notes == {"amount": "1 values that are not numbers left out"}


def test_columns_that_cannot_be_a_reference_are_left_out_with_the_reason(tmp_path):
    rows = [[x, f"id-{i}", x if i < 100 else ""] for i, x in enumerate(_numbers(MAX_CATEGORIES + 1))]
    path = _write_csv(tmp_path / "train.csv", ["amount", "user", "rare"], rows)
    built = build_snapshot(path, "t")
    assert sorted(built.snapshot["signals"]) == ["feature:amount"]
    assert "identifier" in built.skipped["user"] and "100 values" in built.skipped["rare"]


@pytest.mark.parametrize("content, reason", [
    ("", "no header row"),
    ("amount\n", "no rows"),
])
def test_training_data_without_rows_is_a_clear_error(tmp_path, capsys, content, reason):
    (tmp_path / "train.csv").write_text(content)
    assert main(["reference", "--input", str(tmp_path / "train.csv"), "--id", "t",
                 "--out", str(tmp_path / "ref.json")]) == 1
    assert reason in capsys.readouterr().err


def test_a_missing_input_or_output_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["reference", "--input", str(tmp_path / "none.csv"), "--id", "t",
                 "--out", str(tmp_path / "ref.json")]) == 1
    assert "file not found" in capsys.readouterr().err
    path = _write_csv(tmp_path / "train.csv", ["amount"], [[x] for x in _numbers(600)])
    assert main(["reference", "--input", str(path), "--id", "t", "--out", str(tmp_path / "no" / "ref.json")]) == 1
    assert "does not exist" in capsys.readouterr().err


# -- training-serving skew, end to end through replay ----------------------------


def test_a_feature_skewed_from_the_first_event_alerts_from_the_snapshot_naming_its_id(tmp_path, monkeypatch):
    # training and serving from one seeded stream: events 0-19,999 are the training data; serving
    # starts at 20,000 with f02 shifted +0.7 sd from its first event
    scenario = Scenario(models=("fraud",), n_events=22_000, n_numeric=4, n_categorical=1, seed=1,
                        drifts=(parse_drift("feature:f02@20000:shift=0.7"),))
    events = [item for kind, item in stream(scenario) if kind == "prediction"]
    train, serving = events[:20_000], events[20_000:]
    names = sorted(train[0]["features"])
    _write_csv(tmp_path / "train.csv", [*names, "prediction"],
               [[event["features"][name] for name in names] + [event["prediction"]] for event in train])
    (tmp_path / "events.jsonl").write_bytes(b"".join(orjson.dumps(event) + b"\n" for event in serving))
    folder = tmp_path / "deploy" / "config"
    folder.mkdir(parents=True)
    assert main(["reference", "--input", str(tmp_path / "train.csv"), "--id", "fraud-train-v1",
                 "--out", str(folder / "reference.json")]) == 0
    (folder / "config.yaml").write_text("models:\n  - model: fraud\n    reference: {snapshot: reference.json}\n")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the snapshot path is relative to the config file, not to here

    assert main(["replay", "--input", str(tmp_path / "events.jsonl"), "--config", str(folder / "config.yaml"),
                 "--alerts-out", str(tmp_path / "alerts.jsonl")]) == 0
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    found = {(alert["signal"], alert["detector"]): int(alert["event_id"].rsplit("-", 1)[1]) - 20_000
             for alert in alerts}
    # only the skewed feature; the mean chart and the shape test within 500 events (exact, seed 1)
    assert found == {("feature:f02", "page_hinkley"): 77, ("feature:f02", "quantile_chi2"): 249}
    assert {alert["reference"] for alert in alerts} == {"snapshot:fraud-train-v1"}
