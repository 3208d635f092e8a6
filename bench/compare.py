"""Version comparison (canary): detection delays and false alarms, seeded.

Usage::

    .venv/bin/python bench/compare.py [--seeds N] [--null-seeds N]

A model with 20 numeric features, one categorical feature and a score
prediction (the simulator's default shape) runs through the pipeline (label
join and monitor, batches of 1,000, labels 500 events after their
predictions, default settings) with a candidate version getting 20% of the
traffic from event 5,000 on:

- ``error``: the candidate's error rate is 12% where the baseline's is 5%;
- ``prediction``: the candidate's score logit is shifted by 0.25 sd on the same inputs.

A delay is the number of the model's events from the candidate's start to
the comparison alert (the alert's event included), and, in brackets, the
candidate's values on that signal up to it. Printed: median [min-max] over
seeds, misses (no alert within 60,000 events), and the comparison alerts on
other signals (false alarms: with a random split, features never differ).

``identical``: the candidate is the baseline's twin over 60,000 events; every
comparison alert is a false alarm. Then the statistic alone
(:class:`~stream_monitor.compare.SourceTest`) over ``--null-seeds`` stationary
and drifting (both versions alike) streams of 20,000 values at alpha 0.01:
the share of streams with an alarm must stay below alpha.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np

from stream_monitor.compare import SourceTest
from stream_monitor.config import Settings
from stream_monitor.events import LabelEvent, PredictionEvent
from stream_monitor.monitor import Record
from stream_monitor.pipeline import LabelRecord, Pipeline
from stream_monitor.simulate import Scenario, stream

START = 5_000


def comparison_alerts(scenario: Scenario, batch: int = 1000) -> list:
    """The comparison alerts of one simulated stream through the pipeline."""
    pipeline = Pipeline(Settings())
    items: list[Record | LabelRecord] = []
    for kind, item in stream(scenario):
        if kind == "prediction":
            items.append(Record(PredictionEvent(item["event_id"], item["model"], item["model_version"],
                                                item["ts"], item["features"], item["prediction"])))
        else:
            items.append(LabelRecord(LabelEvent(item["event_id"], item["model"], item["label"], item["ts"])))
    alerts = []
    for start in range(0, len(items), batch):
        alerts += [a for a in pipeline.process(items[start:start + batch]) if a.detector == "version_compare"]
    return alerts


def _cell(delays: list[tuple[int, int]], misses: int) -> str:
    if not delays:
        return f"all {misses} missed"
    events = [d for d, _ in delays]
    values = [v for _, v in delays]
    return (f"{statistics.median(events):.0f} events [{min(events)}-{max(events)}] "
            f"({statistics.median(values):.0f} candidate values [{min(values)}-{max(values)}]), "
            f"{misses} missed")


def delays(case: str, seeds: int) -> None:
    signal = "performance:error_rate" if case == "error" else "prediction"
    found: list[tuple[int, int]] = []
    misses = others = 0
    for seed in range(seeds):
        scenario = Scenario(n_events=60_000, seed=seed, candidate_version="2", candidate_from=START,
                            candidate_error_rate=0.12 if case == "error" else None,
                            candidate_score_shift=0.25 if case == "prediction" else 0.0)
        alerts = comparison_alerts(scenario)
        hits = [a for a in alerts if a.signal == signal]
        others += len(alerts) - len(hits)
        if not hits:
            misses += 1
            continue
        number = int(hits[0].event_id.rsplit("-", 1)[1])
        found.append((number - START + 1, hits[0].window["candidate"]))
    print(f"{case:10s} {signal:24s} delay {_cell(found, misses)}; alerts on other signals: {others}")


def identical(seeds: int) -> None:
    alerts = 0
    for seed in range(seeds):
        scenario = Scenario(n_events=60_000, seed=seed, candidate_version="2", candidate_from=START)
        alerts += len(comparison_alerts(scenario))
    print(f"identical  {seeds} seeds x 60,000 events x 22 signals: {alerts} comparison alerts")


def null_statistic(seeds: int, alpha: float = 0.01, size: int = 20_000) -> None:
    for drifting in (False, True):
        alarms = 0
        for seed in range(seeds):
            rng = np.random.default_rng([seed, 14])
            sources = (rng.random(size) < 0.2).astype(np.int8)
            values = rng.normal(0, 1, size)
            if drifting:  # both versions drift alike: a ramp of 2 sd and a doubled spread
                ramp = np.linspace(0, 1, size)
                values = values * (1 + ramp) + 2 * ramp
            alarms += bool(SourceTest("numeric", math.log(1 / alpha)).update(values, sources))
        print(f"null       SourceTest alpha={alpha}, {seeds} streams of {size} values"
              f"{' (common drift)' if drifting else ''}: {alarms} with an alarm "
              f"({alarms / seeds:.4f}; bound {alpha})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--null-seeds", type=int, default=1000)
    args = parser.parse_args()
    started = time.process_time()
    delays("error", args.seeds)
    delays("prediction", args.seeds)
    identical(args.seeds)
    null_statistic(args.null_seeds)
    print(f"({time.process_time() - started:.0f} CPU-s)")


if __name__ == "__main__":
    main()
