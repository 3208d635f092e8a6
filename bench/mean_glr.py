"""Window-limited GLR for the mean against multi-chart CUSUMs, at a false-alarm rate a simulation can calibrate.

Usage::

    .venv/bin/python bench/mean_glr.py [--window 4096] [--known]

The GLR statistic at each value is ``max_m (S_n - S_{n-m})**2 / (2 m)`` over a
grid of window lengths ``m`` (every length to 16, then four per octave up to
the window) on values standardised by a 2,000-value warm-up (``--known``: by
the true mean and sd) and clipped at 4 sd. Its threshold is calibrated by
simulation: 300 stationary runs of 20,000 values, the threshold whose
exceedance probability over a run is ``1 - exp(-20000 / ARL)``, ARL 10**6.
The CUSUMs use the analytic calibration of
:mod:`stream_monitor.detectors.calibration` at the same ARL, checked by the
same simulation (the printed quantile of their largest statistic-to-threshold
ratio should be near 1; below 1, the analytic threshold is conservative).
Delays: median [min-max] over 20 seeds, the change at the first value after
the warm-up. Also printed: the GLR's cost per value over a whole array of
100,000 values and in batches of 1,000 (the statistic only, no detection
logic: a lower bound for a detector).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream_monitor.detectors.calibration import gaussian_cusum_threshold  # noqa: E402

RUN = 20_000
TARGET_ARL = 1e6
WARMUP = 2000
CHANGES: tuple[float | str, ...] = (0.25, 0.5, 1.0, 2.0, "ramp")
DRIFT_SETS = ((0.25, 0.5), (0.125, 0.25, 0.5), (0.125, 0.25, 0.5, 1.0))


def window_grid(window: int) -> list[int]:
    """Every window length to 16, then four per octave up to ``window``."""
    longer = [round(16 * 2 ** (i / 4)) for i in range(1, 200) if 16 * 2 ** (i / 4) <= window]
    return sorted(set(range(1, 17)) | set(longer))


def standardised(seed: int, change: float | str | None, known: bool, size: int = RUN) -> np.ndarray:
    """A seeded N(0, 1) run after a warm-up, with ``change`` from its first value, standardised and clipped."""
    rng = np.random.default_rng(seed)
    warm = rng.standard_normal(WARMUP)
    values = rng.standard_normal(size)
    if change == "ramp":
        values += np.minimum(np.arange(1, size + 1) / 20_000, 1.0)
    elif change is not None:
        values += float(change)
    if not known:
        values = (values - warm.mean()) / warm.std(ddof=1)
    return np.clip(values, -4.0, 4.0)


def glr_path(z: np.ndarray, grid: list[int]) -> np.ndarray:
    """The two-sided GLR statistic (nats) at each value of ``z``."""
    sums = np.concatenate([np.zeros(1), np.cumsum(z)])
    statistic = np.zeros(len(z))
    for length in grid:
        difference = sums[length:] - sums[:-length]
        np.maximum(statistic[length - 1 :], difference * difference / (2 * length), out=statistic[length - 1 :])
    return statistic


def glr_batch_cost(grid: list[int], size: int = 100_000, batch: int = 1000) -> float:
    """ns per value of the GLR fed batches of ``batch`` values, keeping the last window's cumulative sums."""
    z = standardised(0, None, True, size)
    longest = max(grid)
    history = np.zeros(longest + 1)  # cumulative sums of the last ``longest`` values, and the one before
    start = time.perf_counter_ns()
    for position in range(0, size, batch):
        sums = np.concatenate([history, history[-1] + np.cumsum(z[position : position + batch])])
        ends = sums[longest + 1 :]
        statistic = np.zeros(batch)
        for length in grid:
            difference = ends - sums[longest + 1 - length : len(sums) - length]
            np.maximum(statistic, difference * difference / (2 * length), out=statistic)
        history = sums[-(longest + 1) :]
    return (time.perf_counter_ns() - start) / size


def cusum_ratio_path(z: np.ndarray, drifts: tuple[float, ...]) -> np.ndarray:
    """The largest chart-to-threshold ratio of a two-sided multi-chart CUSUM at each value."""
    ratio = np.zeros(len(z))
    chart_arl = TARGET_ARL * 2 * len(drifts)
    for drift in drifts:
        threshold = gaussian_cusum_threshold(drift, WARMUP, chart_arl)
        for sign in (1.0, -1.0):
            walk = np.cumsum(sign * z - drift)
            chart = walk - np.minimum(np.minimum.accumulate(walk), 0.0)
            np.maximum(ratio, chart / threshold, out=ratio)
    return ratio


def calibrated_level(path: Callable[[np.ndarray], np.ndarray], known: bool, runs: int = 300) -> float:
    """The level a path exceeds within a run with probability ``1 - exp(-RUN / TARGET_ARL)``."""
    maxima = [path(standardised(1000 + run, None, known)).max() for run in range(runs)]
    return float(np.quantile(maxima, np.exp(-RUN / TARGET_ARL)))


def delays(path: Callable[[np.ndarray], np.ndarray], level: float, change: float | str, known: bool) -> list[int]:
    found = []
    for seed in range(20):
        over = np.flatnonzero(path(standardised(seed, change, known)) > level)
        found.append(int(over[0]) if over.size else RUN)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=4096, help="longest GLR window")
    parser.add_argument("--known", action="store_true", help="standardise by the true mean and sd")
    args = parser.parse_args(argv)
    grid = window_grid(args.window)

    def glr(z: np.ndarray) -> np.ndarray:
        return glr_path(z, grid)

    level = calibrated_level(glr, args.known)
    z = standardised(0, None, args.known, 100_000)
    start = time.perf_counter_ns()
    glr(z)
    cost = (time.perf_counter_ns() - start) / z.size
    print(f"GLR: {len(grid)} window lengths up to {args.window}, threshold {level:.2f} nats (simulated), "
          f"{cost:.0f} ns/value over a whole array, {glr_batch_cost(grid):.0f} in batches of 1,000")
    detectors: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {"glr": (glr, level)}
    for drifts in DRIFT_SETS:
        def cusum(z: np.ndarray, drifts: tuple[float, ...] = drifts) -> np.ndarray:
            return cusum_ratio_path(z, drifts)

        quantile = calibrated_level(cusum, args.known)
        print(f"cusum {drifts}: simulated quantile of the largest ratio {quantile:.3f} (analytic threshold = 1)")
        detectors[f"cusum{drifts}"] = (cusum, 1.0)
    for change in CHANGES:
        cells = []
        for name, (path, threshold) in detectors.items():
            found = delays(path, threshold, change, args.known)
            cells.append(f"{name}: {statistics.median(found):.0f} [{min(found)}-{max(found)}]")
        print(f"change {change}: " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
