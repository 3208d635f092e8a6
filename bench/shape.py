"""Shape tests side by side: detection delay, false alarms and cost of ``quantile_chi2`` and ``ks``.

Usage::

    .venv/bin/python bench/shape.py [--seeds 10] [--family-tests 44] [--stationary 20000000]
                                    [--detector ks --detector quantile_chi2:window=500,bins=10 ...]

Delays: each seed draws 5,000 N(0, 1) values (the first 1,000 are the
detectors' warm-up reference) then 20,000 values after a change; the delay is
the number of post-change values up to and including the one at which the
detector fires (censored at 20,000, shown with ``>``). Changes: a split into
two modes at -0.9 and 0.9 with the same mean and variance; a skew change (a
standardised Gamma(4), skewness 1) and a stronger one (a standardised
exponential, skewness 2); 30% of the values becoming 0 (a point mass at the
mean); the spread x2.5; the mean +0.5 sd. Each detector runs with
``family_tests`` (default 44: a 22-signal model with two detectors per signal)
in batches of 1,000. Printed: the median delay and its spread (min-max) over
the seeds.

False alarms: each detector is fed ``--stationary`` values of each stationary
shape (Gaussian, lognormal, Student t3, Poisson(2), 50% zeros and 50%
exponential, uniform) in streams of 1,000,000 (a fresh detector, so a fresh
reference, for each) in batches of 1,000, at its default ``arl`` for
``family_tests`` and, to test the calibration where alarms are frequent enough
to count, at ``arl = 10**6``; the bound column is the union-bound expectation
``values / arl``. ns/value: the median over batches of 1,000 on a stationary
Gaussian stream after warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream_monitor.detectors import DEFAULT_ARL, build  # noqa: E402

BATCH = 1000
BEFORE = 5000
AFTER = 20_000
#: values per stationary stream (each with a fresh detector, so a fresh reference)
STREAM = 1_000_000
#: a looser false-alarm target, at which alarms are frequent enough to count
LOOSE_ARL = 10**6


def _bimodal(rng: np.random.Generator, size: int) -> np.ndarray:
    return rng.choice([-0.9, 0.9], size) + rng.normal(0.0, np.sqrt(1 - 0.81), size)


def _skewed(rng: np.random.Generator, size: int) -> np.ndarray:
    return (rng.gamma(4.0, 1.0, size) - 4.0) / 2.0


def _point_mass(rng: np.random.Generator, size: int) -> np.ndarray:
    values = rng.normal(0.0, 1.0, size)
    values[rng.random(size) < 0.3] = 0.0
    return values


CHANGES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "bimodal split": _bimodal,
    "skew 0 -> 1": _skewed,
    "skew 0 -> 2": lambda rng, size: rng.exponential(1.0, size) - 1.0,
    "30% become 0": _point_mass,
    "sd x2.5": lambda rng, size: rng.normal(0.0, 2.5, size),
    "mean +0.5 sd": lambda rng, size: rng.normal(0.5, 1.0, size),
}

STATIONARY: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "gaussian": lambda rng, size: rng.normal(0.0, 1.0, size),
    "lognormal": lambda rng, size: rng.lognormal(0.0, 1.0, size),
    "student t3": lambda rng, size: rng.standard_t(3, size),
    "poisson(2)": lambda rng, size: rng.poisson(2.0, size).astype(np.float64),
    "50% zeros": lambda rng, size: np.where(rng.random(size) < 0.5, 0.0, rng.exponential(1.0, size)),
    "uniform": lambda rng, size: rng.random(size),
}


def parse_detector(text: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name:key=value,key=value`` (integer values)."""
    name, _, rest = text.partition(":")
    params = {key: int(value) for key, value in (item.split("=") for item in rest.split(",") if item)}
    return name, params


def delay(name: str, params: dict[str, Any], stream: np.ndarray, family_tests: int) -> tuple[int | None, int]:
    """(delay after the change at BEFORE or None, false alarms before it)."""
    detector = build({"name": name, "params": params}, family_tests=family_tests)
    early = 0
    for start in range(0, stream.size, BATCH):
        for detection in detector.update(stream[start : start + BATCH]):
            if detection.n_seen < BEFORE:
                early += 1
            else:
                return detection.n_seen - BEFORE + 1, early
    return None, early


def false_alarms(name: str, params: dict[str, Any], shape: str, values: int, seed: int, **build_args: Any) -> int:
    """False alarms in ``values`` stationary values: streams of 1,000,000, each with a fresh detector.

    Fresh detectors draw fresh references: one long stream would keep one
    reference (until its first alarm), and the false-alarm rate given one
    reference is a single draw of a random quantity whose mean the calibration
    bounds.
    """
    generate = STATIONARY[shape]
    alarms = 0
    for stream in range(max(1, values // STREAM)):
        detector = build({"name": name, "params": params}, **build_args)
        chunk = generate(np.random.default_rng([seed, stream]), STREAM)
        for start in range(0, chunk.size, BATCH):
            alarms += len(detector.update(chunk[start : start + BATCH]))
    return alarms


def cost(name: str, params: dict[str, Any], size: int = 200_000) -> float:
    stream = np.random.default_rng(1).normal(0.0, 1.0, 5000 + size)
    detector = build({"name": name, "params": params})
    detector.update(stream[:5000])
    samples = []
    for start in range(5000, 5000 + size, BATCH):
        began = time.perf_counter_ns()
        detector.update(stream[start : start + BATCH])
        samples.append((time.perf_counter_ns() - began) / BATCH)
    return statistics.median(samples)


def _summary(delays: list[int | None]) -> str:
    known = sorted(AFTER + 1 if d is None else d for d in delays)
    median = statistics.median(known)
    text = f"{median:>6.0f}" if median <= AFTER else f">{AFTER}"
    high = known[-1]
    return f"{text} ({known[0]}-{high if high <= AFTER else '>' + str(AFTER)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--family-tests", type=int, default=44)
    parser.add_argument("--stationary", type=int, default=0, help="values per stationary shape (0: skip)")
    parser.add_argument("--detector", action="append", default=None)
    parser.add_argument("--changes", default=",".join(CHANGES))
    args = parser.parse_args(argv)
    detectors = [parse_detector(text) for text in (args.detector or ["ks", "quantile_chi2"])]
    changes = [change for change in CHANGES if change in args.changes.split(",")]
    print(f"median delay (min-max) over {args.seeds} seeds, family_tests={args.family_tests} "
          f"(arl {DEFAULT_ARL * args.family_tests:.2g}); early = false alarms before the change")
    for name, params in detectors:
        label = name + (":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else "")
        cells, early = [], 0
        for change in changes:
            delays = []
            for seed in range(args.seeds):
                rng = np.random.default_rng(1000 + seed)
                stream = np.concatenate([rng.normal(0.0, 1.0, BEFORE), CHANGES[change](rng, AFTER)])
                found, before = delay(name, params, stream, args.family_tests)
                delays.append(found)
                early += before
            cells.append(f"{change}: {_summary(delays)}")
        print(f"{label:40} {cost(name, params):5.0f} ns/value  early {early}  " + "  ".join(cells), flush=True)
    if args.stationary:
        print(f"\nfalse alarms in {args.stationary:,} stationary values per shape "
              f"(bound: values / arl)")
        for name, params in detectors:
            for shape in STATIONARY:
                strict = false_alarms(name, params, shape, args.stationary, seed=7,
                                      family_tests=args.family_tests)
                loose = false_alarms(name, {**params, "arl": LOOSE_ARL}, shape, args.stationary, seed=8)
                print(f"{name:16} {shape:12} at family_tests={args.family_tests}: {strict} "
                      f"(bound {args.stationary / (DEFAULT_ARL * args.family_tests):.2f}); "
                      f"at arl {LOOSE_ARL:g}: {loose} (bound {args.stationary / LOOSE_ARL:.0f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
