"""The ``category_cusum`` detector beside the windowed ``chi_square`` test.

Usage::

    .venv/bin/python bench/categories.py [--seeds 20] [--values 1000000] [--family-tests 44]

Delays: 3,000 values of five equally frequent categories, then the changed
shares below, one detector per seed; the delay is the first detection at or
after the change minus 3,000 (median and quartiles over the seeds; "missed"
when nothing is detected in the 6,000 values after the change).

False alarms: stationary streams (five equal categories, Zipf over 30
categories, four common categories and one at 0.5%, 400 equally rare
categories), ``--values`` values each, at the default target (``DEFAULT_ARL *
family_tests``) and at a loose target (``arl = 10**4``) where the calibration
shows: the count beside the expected ``values / arl``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream_monitor.detectors import DetectorSpec, build  # noqa: E402

CHANGE = 3000
AFTER = 6000
BATCH = 1000
FIVE = np.array(list("abcde"), dtype=object)
CHANGES = {
    "one share 20% -> 50%": [0.5, 0.125, 0.125, 0.125, 0.125],
    "one share 20% -> 5%": [0.05, 0.2375, 0.2375, 0.2375, 0.2375],
    "two shares 20% -> 35% and 5%": [0.35, 0.05, 0.2, 0.2, 0.2],
    "diffuse .3/.25/.2/.15/.1": [0.3, 0.25, 0.2, 0.15, 0.1],
    "one share 20% -> 30%": [0.3, 0.175, 0.175, 0.175, 0.175],
}
DETECTORS = ("category_cusum", "chi_square")


def _detections(detector, values: np.ndarray) -> list[int]:
    found = []
    for start in range(0, len(values), BATCH):
        found += [start + d.index for d in detector.update(values[start : start + BATCH])]
    return found


def delays(name: str, shares: list[float], seeds: int, family_tests: int) -> list[float]:
    result = []
    for seed in range(seeds):
        rng = np.random.default_rng(100 + seed)
        values = np.concatenate([rng.choice(FIVE, CHANGE), rng.choice(FIVE, AFTER, p=shares)])
        after = [i - CHANGE for i in _detections(build(DetectorSpec(name), family_tests=family_tests), values)
                 if i >= CHANGE]
        result.append(float(after[0]) if after else math.inf)
    return result


def stationary(shape: str, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if shape == "uniform_5":
        return rng.choice(FIVE, size)
    if shape == "zipf_30":
        weights = 1.0 / np.arange(1, 31)
        return rng.choice(np.array([f"c{i}" for i in range(30)], dtype=object), size, p=weights / weights.sum())
    if shape == "rare_0.5%":
        names = np.array(["w", "x", "y", "z", "rare"], dtype=object)
        return rng.choice(names, size, p=[0.3, 0.3, 0.2, 0.195, 0.005])
    if shape == "400_rare":
        return np.array([f"v{code}" for code in rng.integers(0, 400, size)], dtype=object)
    raise ValueError(shape)


def _summary(values: list[float]) -> str:
    q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75])
    missed = sum(math.isinf(v) for v in values)
    return f"median {median:7.1f}  IQR {q1:7.1f}-{q3:7.1f}" + (f"  missed {missed}" if missed else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--values", type=int, default=1_000_000, help="stationary values per shape")
    parser.add_argument("--family-tests", type=int, default=44)
    args = parser.parse_args(argv)
    ft = args.family_tests
    print(f"delays (values after the change), {args.seeds} seeds, family_tests={ft}")
    for label, shares in CHANGES.items():
        for name in DETECTORS:
            print(f"  {label:30} {name:15} {_summary(delays(name, shares, args.seeds, ft))}")
    print(f"\nfalse alarms over {args.values:,} stationary values per shape")
    for shape in ("uniform_5", "zipf_30", "rare_0.5%", "400_rare"):
        values = stationary(shape, args.values, seed=len(shape))
        for name in DETECTORS:
            default = len(_detections(build(DetectorSpec(name), family_tests=ft), values))
            loose = len(_detections(build(DetectorSpec(name, {"arl": 1e4})), values))
            print(f"  {shape:10} {name:15} at family_tests={ft}: {default:4d}   at arl=1e4: {loose:5d} "
                  f"(calibrated for at most {args.values / 1e4:.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
