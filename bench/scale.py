"""The ``scale`` detector beside a Gaussian z^2 log-likelihood-ratio chart.

Usage::

    .venv/bin/python bench/scale.py [--seeds 20] [--values 2000000] [--family-tests 44]

Delays: a stream of 3,000 N(0, 1) values, then N(0, s^2) for ``s`` in 2.5, 0.4
(and 1.5, 0.67), one detector per seed; the delay is the first detection at or
after the change minus 3,000 (median and quartiles over the seeds; "missed"
when nothing is detected in 5,000 values after the change).

False alarms: stationary streams of each shape (Gaussian, lognormal,
Student t3, Poisson(2) counts with 50% zeros, uniform), ``--values`` values per
shape in batches of 1,000, at the default target (``DEFAULT_ARL *
family_tests``) and at a loose target (``arl = 10**4``, one chart family) where
the calibration itself can be seen: the count beside the expected
``values / arl`` (the thresholds are conservative, so fewer is right).

The Gaussian chart: the first 2,000 values give mean and sd; ``z = (x - mean) /
sd``; charts for ``r = 2`` and ``r = 1/2`` add ``-log r + (1 - 1/r^2) z^2 / 2``;
each threshold makes Wald's ARL for exactly Gaussian ``z`` equal to twice the
target (known parameters: no allowance for the warm-up's estimation error, so
its threshold is, if anything, too low). It re-arms like ``scale``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import numpy as np
from scipy import optimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream_monitor.detectors import DEFAULT_ARL, DetectorSpec, build  # noqa: E402

CHANGE = 3000
AFTER = 5000
BATCH = 1000


class GaussianScaleChart:
    """Two one-sided CUSUMs of the Gaussian log-likelihood ratio for a scale change by ``r``."""

    def __init__(self, arl: float, warmup: int = 2000, ratios: tuple[float, ...] = (2.0, 0.5)) -> None:
        self.warmup = warmup
        self.ratios = ratios
        chart_arl = arl * len(ratios)
        self.offsets = np.array([-math.log(r) for r in ratios])
        self.slopes = np.array([(1.0 - 1.0 / r**2) / 2.0 for r in ratios])
        self.thresholds = np.array([_gaussian_threshold(a, b, chart_arl) for a, b in zip(self.offsets, self.slopes)])
        self._buffer: list[float] = []
        self._sums = np.zeros(len(ratios))
        self.mean = self.sd = None

    def update(self, values: np.ndarray) -> list[int]:
        found = []
        for index, x in enumerate(values.tolist()):
            if self.mean is None:
                self._buffer.append(x)
                if len(self._buffer) == self.warmup:
                    self.mean = float(np.mean(self._buffer))
                    self.sd = float(np.std(self._buffer, ddof=1))
                    self._buffer = []
                continue
            z2 = ((x - self.mean) / self.sd) ** 2
            self._sums = np.maximum(0.0, self._sums + self.offsets + self.slopes * z2)
            if (self._sums > self.thresholds).any():
                found.append(index)
                self._sums[:] = 0.0
                self.mean = None
        return found


def _gaussian_threshold(offset: float, slope: float, arl: float) -> float:
    """Wald's threshold for increments ``offset + slope * z^2``, ``z`` standard normal."""
    # E exp(theta (a + b z^2)) = exp(theta a) (1 - 2 theta b)^(-1/2) = 1, theta > 0
    def log_mgf(theta: float) -> float:
        return theta * offset - 0.5 * math.log(1.0 - 2.0 * theta * slope)

    mean = offset + slope
    high = 0.5 / slope * (1 - 1e-12) if slope > 0 else 50.0
    theta = optimize.brentq(log_mgf, 1e-9, high) if slope > 0 else optimize.brentq(log_mgf, 1e-6, 1e3)

    def excess(h: float) -> float:
        x = theta * h  # log of (e^x - x - 1), without overflow
        log_numerator = x + math.log1p(-(x + 1.0) * math.exp(-x)) if x > 1.0 else math.log(math.expm1(x) - x)
        return log_numerator - math.log(-theta * mean) - math.log(arl)

    return float(optimize.brentq(excess, 1e-6, 1e4))


def _detector(kind: str, arl: float | None, family_tests: int):
    if kind == "gaussian":
        return GaussianScaleChart(arl if arl is not None else DEFAULT_ARL * family_tests)
    params = {} if arl is None else {"arl": arl}
    return build(DetectorSpec("scale", params), family_tests=family_tests)


def _detections(detector, values: np.ndarray) -> list[int]:
    found = []
    for start in range(0, len(values), BATCH):
        found_here = detector.update(values[start : start + BATCH])
        found += [start + (d if isinstance(d, int) else d.index) for d in found_here]
    return found


def delays(kind: str, ratio: float, seeds: int, family_tests: int) -> list[float]:
    result = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        values = np.concatenate([rng.normal(0.0, 1.0, CHANGE), rng.normal(0.0, ratio, AFTER)])
        after = [i - CHANGE for i in _detections(_detector(kind, None, family_tests), values) if i >= CHANGE]
        result.append(float(after[0]) if after else math.inf)
    return result


def stationary(shape: str, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if shape == "gaussian":
        return rng.normal(size=size)
    if shape == "lognormal":
        return rng.lognormal(0.0, 1.0, size)
    if shape == "student_t3":
        return rng.standard_t(3, size)
    if shape == "counts_50%_zeros":
        return np.where(rng.random(size) < 0.5, 0.0, rng.poisson(2.0, size)).astype(np.float64)
    if shape == "uniform":
        return rng.random(size)
    raise ValueError(shape)


SHAPES = ("gaussian", "lognormal", "student_t3", "counts_50%_zeros", "uniform")


def _summary(values: list[float]) -> str:
    finite = sorted(values)
    q1, median, q3 = np.quantile(finite, [0.25, 0.5, 0.75])
    missed = sum(math.isinf(v) for v in values)
    return f"median {median:6.1f}  IQR {q1:6.1f}-{q3:6.1f}" + (f"  missed {missed}" if missed else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--values", type=int, default=2_000_000, help="stationary values per shape")
    parser.add_argument("--family-tests", type=int, default=44)
    parser.add_argument("--skip-gaussian-false-alarms", action="store_true")
    args = parser.parse_args(argv)
    ft = args.family_tests
    print(f"delays (values after the change), {args.seeds} seeds, family_tests={ft}")
    for ratio in (2.5, 0.4, 1.5, 0.67):
        for kind in ("scale", "gaussian"):
            print(f"  sd x{ratio:<5} {kind:9} {_summary(delays(kind, ratio, args.seeds, ft))}")
    print(f"\nfalse alarms over {args.values:,} stationary values per shape")
    for shape in SHAPES:
        for kind in ("scale", "gaussian"):
            if kind == "gaussian" and args.skip_gaussian_false_alarms:
                continue
            values = stationary(shape, args.values, seed=hash(shape) % 1000)
            default = len(_detections(_detector(kind, None, ft), values))
            loose = len(_detections(_detector(kind, 1e4, 1), values))
            print(f"  {shape:18} {kind:9} at family_tests={ft}: {default:5d}   at arl=1e4: {loose:6d} "
                  f"(calibrated for at most {args.values / 1e4:.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
