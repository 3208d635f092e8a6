"""Training-serving skew against a reference snapshot: which default detector sees it, and when.

Usage::

    .venv/bin/python bench/reference_skew.py [--seeds 10] [--shift 0.7]

Per seed, one simulator stream (4 numeric features, 1 categorical, a score):
its first 20,000 events are the training data (written as CSV and turned into
a snapshot by ``stream-monitor reference``), the next 3,000 are served with
``f02`` shifted by ``--shift`` sd from their first event, and ``replay`` runs the
default detectors against the snapshot. Prints, per detector, the delay in
events after the first served event (median [min-max] and how many seeds
alerted), and any alert on another signal (a false skew).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import orjson

from stream_monitor.cli import main as cli
from stream_monitor.simulate import Scenario, parse_drift, stream

TRAIN, SERVE = 20_000, 3_000


def one_seed(seed: int, shift: float, folder: Path) -> list[dict]:
    scenario = Scenario(models=("fraud",), n_events=TRAIN + SERVE, n_numeric=4, n_categorical=1, seed=seed,
                        drifts=(parse_drift(f"feature:f02@{TRAIN}:shift={shift}"),))
    events = [item for kind, item in stream(scenario) if kind == "prediction"]
    names = sorted(events[0]["features"])
    with open(folder / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*names, "prediction"])
        writer.writerows([event["features"][name] for name in names] + [event["prediction"]]
                         for event in events[:TRAIN])
    (folder / "events.jsonl").write_bytes(b"".join(orjson.dumps(event) + b"\n" for event in events[TRAIN:]))
    (folder / "config.yaml").write_text("models:\n  - model: fraud\n    reference: {snapshot: ref.json}\n")
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli(["reference", "--input", str(folder / "train.csv"), "--id", "train",
                    "--out", str(folder / "ref.json")]) == 0
        assert cli(["replay", "--input", str(folder / "events.jsonl"), "--config", str(folder / "config.yaml"),
                    "--alerts-out", str(folder / "alerts.jsonl")]) == 0
    return [json.loads(line) for line in (folder / "alerts.jsonl").read_text().splitlines()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--shift", type=float, default=0.7)
    args = parser.parse_args()
    delays: dict[str, list[int]] = defaultdict(list)
    others = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(1, args.seeds + 1):
            folder = Path(tmp) / str(seed)
            folder.mkdir()
            for alert in one_seed(seed, args.shift, folder):
                delay = int(alert["event_id"].rsplit("-", 1)[1]) - TRAIN
                if alert["signal"] == "feature:f02":
                    delays[alert["detector"]].append(delay)
                else:
                    others.append((seed, alert["signal"], alert["detector"], delay))
    print(f"f02 shifted {args.shift:+g} sd from the first served event; {args.seeds} seeds, "
          f"{SERVE} served events each; delay in events")
    for detector in ("page_hinkley", "quantile_chi2", "scale", *sorted(set(delays) - {"page_hinkley",
                                                                                     "quantile_chi2", "scale"})):
        found = sorted(delays.get(detector, []))
        if found:
            print(f"  {detector:14s} median {statistics.median(found):.0f} [{found[0]}-{found[-1]}], "
                  f"alerted in {len(found)} of {args.seeds} seeds")
        else:
            print(f"  {detector:14s} no alert in {args.seeds} seeds")
    print(f"alerts on other signals (false skew): {len(others)}" + "".join(f"\n  {item}" for item in others))
    return 0


if __name__ == "__main__":
    sys.exit(main())
