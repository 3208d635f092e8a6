"""Delays of the error-rate detector over rises of several sizes, beside the bound, and its false alarms.

Usage::

    .venv/bin/python bench/error_rate.py [--seeds 60] [--family-tests 22] [--params JSON ...]
                                         [--stationary N]

Each stream is 10,000 values at 5% errors, then 20,000 at the rate after the
rise; the detector is built as the monitor builds it for a model of
``--family-tests`` signals (22: the quality harness's model). The delay is
the number of values from the rise to the detection, the detecting value
included; a seed without a detection is a miss (``inf``; a median that is a
miss prints ``inf``). Printed per ``--params`` (JSON detector parameters; the
default set when none) and rise: median [min-max] over seeds, and the bound
``h / KL`` with ``h = log(DEFAULT_ARL * family_tests)``.
``--stationary N``: false alarms over N stationary values of each of
several rates (0.2% to 98%), in runs of 10^6 values.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream_monitor.detectors import DEFAULT_ARL, DetectorSpec, build  # noqa: E402

BEFORE, AFTER, RATE = 10_000, 20_000, 0.05
RISES = (0.065, 0.08, 0.1, 0.15, 0.25, 0.5)
STATIONARY_RATES = (0.002, 0.02, 0.05, 0.15, 0.4, 0.7, 0.98)
RUN = 1_000_000


def bernoulli_kl(p: float, q: float) -> float:
    """KL(Bernoulli(p) || Bernoulli(q)) in nats."""
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def delay(params: dict, after: float, seed: int, family_tests: int) -> float:
    rng = np.random.default_rng([seed, round(after * 1000)])
    values = np.concatenate([rng.random(BEFORE) < RATE, rng.random(AFTER) < after]).astype(float)
    detector = build(DetectorSpec("error_rate", params), family_tests=family_tests)
    for start in range(0, values.size, 1000):
        for detection in detector.update(values[start : start + 1000]):
            position = start + detection.index
            if position < BEFORE:
                raise SystemExit(f"false alarm at {position} (seed {seed}, params {params})")
            return position - BEFORE + 1
    return math.inf


def summary(delays: list[float]) -> str:
    found = [d for d in delays if d != math.inf]
    median = statistics.median(sorted(delays))
    text = "inf" if median == math.inf else f"{median:g}"
    if found:
        text += f" [{int(min(found))}-{int(max(found))}]"
    missed = len(delays) - len(found)
    return text + (f" ({missed} missed)" if missed else "")


def stationary(params: dict, values: int, family_tests: int) -> tuple[int, int]:
    """(alarms, values) over ``values`` stationary values of each of :data:`STATIONARY_RATES`."""
    alarms = seen = 0
    for index, rate in enumerate(STATIONARY_RATES):
        rng = np.random.default_rng([99, index])
        for _ in range(max(1, values // RUN)):
            detector = build(DetectorSpec("error_rate", params), family_tests=family_tests)
            for _ in range(RUN // 100_000):
                alarms += len(detector.update((rng.random(100_000) < rate).astype(float)))
            seen += RUN
    return alarms, seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=60)
    parser.add_argument("--family-tests", type=int, default=22)
    parser.add_argument("--params", action="append", help="JSON detector parameters (repeatable)")
    parser.add_argument("--stationary", type=float, default=0, help="stationary values per rate (0: skip)")
    args = parser.parse_args()
    h = math.log(DEFAULT_ARL * args.family_tests)
    configs = [json.loads(text) for text in args.params or ["{}"]]
    print(f"5% -> rise at value {BEFORE:,}; {args.seeds} seeds; family_tests {args.family_tests}, h = {h:.1f} nats")
    print("bound (h / KL): " + ", ".join(f"{after:g}: {h / bernoulli_kl(after, RATE):.0f}" for after in RISES))
    for params in configs:
        started = time.process_time()
        cells = [f"{after:g}: {summary([delay(params, after, s, args.family_tests) for s in range(1, args.seeds + 1)])}"
                 for after in RISES]
        print(f"{json.dumps(params)}  " + " | ".join(cells) + f"  ({time.process_time() - started:.0f} CPU-s)")
        if args.stationary:
            alarms, seen = stationary(params, int(args.stationary), args.family_tests)
            print(f"  stationary: {alarms} alarm(s) over {seen:,} values "
                  f"(budget {seen / (DEFAULT_ARL * args.family_tests):.2g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
