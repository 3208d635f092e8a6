"""Delays of the mean chart (page_hinkley) on seeded change scenarios, and its cost.

Usage::

    .venv/bin/python bench/mean_chart.py [--seeds 10] [--family-tests 44] [--params JSON ...]

Each scenario is 2,000 warm-up values, 3,000 more stationary values, then the
change; the delay is the detection index minus the change's first index (a
detection before it counts as a false alarm). Streams are N(0, 1) before the
change; ``widen`` is a prediction score ``sigmoid(b + w.x)`` whose weights are
scaled by 1.5 at the change (its mean barely moves, its spread grows).
Printed per scenario: median delay and the range over the seeds.
``--logit`` feeds ``logit(x)`` instead (for the score scenarios),
``--stationary N`` counts false alarms on stationary streams of six shapes,
``--ramp-bound`` gives the delay of an oracle on the ramp (the bound).
Environment ``BEFORE`` moves the change (default 5000: 3,000 values after
the default warm-up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream_monitor.detectors import DEFAULT_ARL, DetectorSpec, build  # noqa: E402

BEFORE = int(__import__("os").environ.get("BEFORE", 5000))
AFTER = 40_000


def _score(rng: np.random.Generator, size: int, scale: float, bias: float = -1.0, dims: int = 5) -> np.ndarray:
    weights = np.full(dims, 1.0 / np.sqrt(dims))
    logits = bias + scale * (rng.standard_normal((size, dims)) @ weights)
    return 1.0 / (1.0 + np.exp(-logits))


def scenario(kind: str, seed: int) -> np.ndarray:
    """A seeded stream: ``BEFORE`` stationary values, then the change for ``AFTER`` values."""
    rng = np.random.default_rng(seed)
    if kind.startswith("widen"):
        bias = float(kind.split(":")[1]) if ":" in kind else -1.0
        return np.concatenate([_score(rng, BEFORE, 1.0, bias), _score(rng, AFTER, 1.5, bias)])
    if kind.startswith("bias"):  # bias:<b>:<shift>: the score's logit bias moves by <shift>
        _, bias, shift = kind.split(":")
        return np.concatenate([_score(rng, BEFORE, 1.0, float(bias)), _score(rng, AFTER, 1.0, float(bias) + float(shift))])
    before = rng.standard_normal(BEFORE)
    after = rng.standard_normal(AFTER)
    if kind == "ramp":
        after += np.minimum(np.arange(1, AFTER + 1) / 20_000, 1.0)
    else:
        after += float(kind)
    return np.concatenate([before, after])


def delay(params: dict, kind: str, seed: int, family_tests: int, logit: bool = False) -> int | None:
    detector = build(DetectorSpec("page_hinkley", params), family_tests=family_tests)
    values = scenario(kind, seed)
    if logit:
        clipped = np.clip(values, 1e-6, 1 - 1e-6)
        values = np.log(clipped) - np.log1p(-clipped)
    for start in range(0, len(values), 1000):
        for detection in detector.update(values[start : start + 1000]):
            return start + detection.index - BEFORE
    return None


def cost(params: dict, size: int = 200_000, repeats: int = 5) -> float:
    stream = np.random.default_rng(1).standard_normal(5000 + size)
    samples = []
    for _ in range(repeats):
        detector = build(DetectorSpec("page_hinkley", params), family_tests=44)
        detector.update(stream[:5000])
        start = time.perf_counter_ns()
        for position in range(5000, 5000 + size, 1000):
            detector.update(stream[position : position + 1000])
        samples.append((time.perf_counter_ns() - start) / size)
    return statistics.median(samples)


SHAPES = ("gaussian", "lognormal", "student_t3", "poisson_ties", "uniform", "bimodal")


def stationary(shape: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Values of a stream that never changes, of a realistic shape."""
    if shape == "gaussian":
        return rng.normal(3.0, 2.0, size)
    if shape == "lognormal":
        return rng.lognormal(0.0, 1.0, size)
    if shape == "student_t3":
        return rng.standard_t(3, size)
    if shape == "poisson_ties":  # integer counts, about half of them zero
        return rng.poisson(0.7, size).astype(np.float64)
    if shape == "uniform":
        return rng.uniform(0.0, 1.0, size)
    if shape == "bimodal":
        return np.where(rng.random(size) < 0.3, rng.normal(-2.0, 0.5, size), rng.normal(1.0, 0.7, size))
    raise ValueError(shape)


def false_alarms(params: dict, shape: str, seeds: int, size: int, family_tests: int) -> int:
    """Detections over ``seeds`` stationary streams of ``size`` values each (all false alarms)."""
    total = 0
    for seed in range(seeds):
        rng = np.random.default_rng([seed, SHAPES.index(shape)])
        detector = build(DetectorSpec("page_hinkley", params), family_tests=family_tests)
        for _ in range(0, size, 1_000_000):
            total += len(detector.update(stationary(shape, rng, 1_000_000)))
    return total


def ramp_bound(family_tests: int, seeds: int = 200) -> tuple[float, float, float]:
    """Delay of an oracle that knows the ramp's onset and slope: its log-likelihood ratio reaching log(ARL).

    The median and the 10th and 90th percentiles over ``seeds`` seeds; no
    detector that does not know them can beat it at the same false-alarm rate.
    """
    threshold = np.log(DEFAULT_ARL * family_tests)
    delays = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        mean = np.arange(1, 20_001) / 20_000
        ratio = np.cumsum(mean * (rng.standard_normal(mean.size) + mean) - mean * mean / 2)
        delays.append(int(np.argmax(ratio > threshold)))
    return float(np.median(delays)), float(np.percentile(delays, 10)), float(np.percentile(delays, 90))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--family-tests", type=int, default=44)
    parser.add_argument("--kinds", default="1,0.5,0.25,2,ramp,widen:-1,widen:0")
    parser.add_argument("--params", action="append", default=None, help="JSON page_hinkley params (repeatable)")
    parser.add_argument("--logit", action="store_true", help="feed logit(x) (a stand-in for the transform)")
    parser.add_argument("--stationary", type=int, default=0, metavar="N",
                        help="instead: false alarms over --seeds streams of N values of each shape")
    parser.add_argument("--ramp-bound", action="store_true", help="instead: the ramp delay of an oracle")
    args = parser.parse_args(argv)
    if args.ramp_bound:
        median, low, high = ramp_bound(args.family_tests)
        print(f"ramp 0 -> 1 sd over 20,000 values, oracle (onset and slope known), threshold "
              f"log({DEFAULT_ARL * args.family_tests:.2g}): median {median:.0f}, 10-90% {low:.0f}-{high:.0f}")
        return 0
    if args.stationary:
        for params in [json.loads(p) for p in args.params] if args.params else [{}]:
            for shape in SHAPES:
                found = false_alarms(params, shape, args.seeds, args.stationary, args.family_tests)
                print(f"{json.dumps(params)} {shape}: {found} false alarms in {args.seeds} x {args.stationary:,} values",
                      flush=True)
        return 0
    configs = [json.loads(p) for p in args.params] if args.params else [{}]
    kinds = args.kinds.split(",")
    print(f"seeds 0..{args.seeds - 1}, family_tests {args.family_tests}; delay median [min-max], false alarms")
    for params in configs:
        print(f"\nparams {json.dumps(params)}: {cost(params):.0f} ns/value (batches of 1000)")
        for kind in kinds:
            found = [delay(params, kind, seed, args.family_tests, args.logit) for seed in range(args.seeds)]
            early = sum(1 for d in found if d is not None and d < 0)
            late = [d for d in found if d is not None and d >= 0]
            missed = sum(1 for d in found if d is None)
            if late:
                print(f"  {kind:>8}: {statistics.median(late):7.0f} [{min(late)}-{max(late)}]"
                      f"  false alarms {early}, missed {missed}")
            else:
                print(f"  {kind:>8}: none detected, false alarms {early}, missed {missed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
