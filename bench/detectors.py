"""Per-value cost of the drift detectors, beside river's in the same run.

Usage::

    .venv/bin/python bench/detectors.py [--quick]

Each of our detectors runs with its default parameters on a stationary N(0, 1)
stream (a 5-category stream for ``chi_square``, 0/1 errors for ``error_rate``)
in batches of 1,000 values, after its warm-up; the figure is the median over
repeats of nanoseconds per value. river's detectors run in their per-value
loop on the same values. The default numeric set is also timed as a whole
(every detector fed the same batches), in ns/value. The targets of issues 3
and 12 are checked and printed as PASS or FAIL; a missed target does not change the exit status (only a crash
does). Detectors that are not registered are skipped, saying so.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream_monitor.detectors import REGISTRY, DetectorSpec, build, default_specs  # noqa: E402

BATCH = 1000
#: issue 12: the whole default numeric set costs at most this many ns per value
DEFAULT_SET_BUDGET_NS = 150


def _stream(kind: str, size: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    if kind == "categorical":
        return rng.choice(np.array(list("abcde"), dtype=object), size)
    if kind == "error":
        return (rng.random(size) < 0.05).astype(np.float64)
    return rng.standard_normal(size)


def ours(name: str, size: int, repeats: int, params: dict | None = None, warmup: int = 5000) -> float:
    """ns per value of one of our detectors in batches of 1,000, after its warm-up (median of repeats)."""
    stream = _stream(REGISTRY[name].kind, warmup + size, seed=1)
    samples = []
    for _ in range(repeats):
        detector = build(DetectorSpec(name, params or {}))
        detector.update(stream[:warmup])
        start = time.perf_counter_ns()
        for position in range(warmup, warmup + size, BATCH):
            detector.update(stream[position : position + BATCH])
        samples.append((time.perf_counter_ns() - start) / size)
    return statistics.median(samples)


def river_loop(make: Callable[[], Any], size: int, repeats: int, warmup: int) -> float:
    """ns per value of a river detector's per-value ``update`` loop, after a warm-up (median of repeats)."""
    stream = _stream("numeric", warmup + size, seed=1).tolist()
    samples = []
    for _ in range(repeats):
        detector = make()
        for value in stream[:warmup]:
            detector.update(value)
        start = time.perf_counter_ns()
        for value in stream[warmup:]:
            detector.update(value)
        samples.append((time.perf_counter_ns() - start) / size)
    return statistics.median(samples)


def default_set_cost(size: int, repeats: int) -> tuple[list[str], float]:
    """ns per value of the default numeric detectors all fed the same batches of one signal.

    Each batch of 1,000 values goes through every default detector; the figure
    is the median over all batches of all repeats of the batch's time divided
    by its values (a median over batches, so a busy machine's stalls count
    less than in a total).
    """
    names = [spec.name for spec in default_specs("numeric")]
    stream = _stream("numeric", 5000 + size, seed=2)
    samples = []
    for _ in range(repeats):
        detectors = [build(spec) for spec in default_specs("numeric")]
        for detector in detectors:
            detector.update(stream[:5000])
        for position in range(5000, 5000 + size, BATCH):
            batch = stream[position : position + BATCH]
            start = time.perf_counter_ns()
            for detector in detectors:
                detector.update(batch)
            samples.append((time.perf_counter_ns() - start) / BATCH)
    return names, statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Per-value cost of the drift detectors beside river's.")
    parser.add_argument("--quick", action="store_true", help="fewer values and repeats (a smoke run)")
    args = parser.parse_args(argv)
    size, repeats = (50_000, 3) if args.quick else (200_000, 5)
    river_size = size // 4
    kswin_updates = 1000 if args.quick else 3000

    import river
    from river import drift

    print(f"python {platform.python_version()}, numpy {np.__version__}, river {river.__version__}, {platform.machine()}")
    print(f"ours: default parameters, batches of {BATCH}; river: per-value update loop; median of {repeats} runs\n")
    verdicts: list[tuple[str, bool]] = []

    def verdict(label: str, ok: bool) -> None:
        verdicts.append((label, ok))
        print(f"  -> {'PASS' if ok else 'FAIL'}: {label}")

    print(f"{'detector (ours, defaults)':32} {'ns/value':>10}")
    for name in sorted(REGISTRY):
        print(f"{name:32} {ours(name, size, repeats):10.0f}")
    print()

    if "page_hinkley" in REGISTRY:
        mine = ours("page_hinkley", size, repeats)
        theirs = river_loop(drift.PageHinkley, river_size, repeats, warmup=1000)
        print(f"page_hinkley {mine:.0f} ns/value; river PageHinkley {theirs:.0f} ns/value; ratio {theirs / mine:.1f}x")
        verdict("Page-Hinkley at least 10x faster than river.drift.PageHinkley", theirs / mine >= 10)
    else:
        print("page_hinkley: not registered, skipped")

    if "ks" in REGISTRY:
        mine = ours("ks", size, repeats, {"window": 1000})
        stride = build(DetectorSpec("ks", {"window": 1000})).spec().params["stride"]
        every = ours("ks", 20_000, 1, {"window": 1000, "stride": 1})
        theirs = river_loop(lambda: drift.KSWIN(window_size=1000, seed=1), kswin_updates, 1, warmup=1000)
        print(
            f"ks window 1000 (stride {stride}) {mine:.0f} ns/value; river KSWIN(window_size=1000) "
            f"{theirs:.0f} ns/update; ratio {theirs / mine:.1f}x"
        )
        print(f"  (ks window 1000 evaluated at every value, stride 1: {every:.0f} ns/value, ratio {theirs / every:.1f}x)")
        verdict("windowed KS (window 1000) at least 100x faster than river.drift.KSWIN per update", theirs / mine >= 100)
    else:
        print("ks: not registered, skipped")

    if "adwin" in REGISTRY:
        mine = ours("adwin", size, repeats)
        theirs = river_loop(drift.ADWIN, river_size, repeats, warmup=1000)
        print(f"adwin {mine:.0f} ns/value; river ADWIN {theirs:.0f} ns/value; ratio {theirs / mine:.1f}x")
    else:
        print("adwin: not registered, skipped")

    names, per_value = default_set_cost(size, repeats)
    if names:
        rate = 1e9 / per_value
        print(f"default numeric set {names} together on one signal: {per_value:.0f} ns/value "
              f"({rate / 1e6:.2f} million values/s)")
        verdict("all default numeric detectors together >= 2 million values/s", rate >= 2e6)
        verdict(f"all default numeric detectors together <= {DEFAULT_SET_BUDGET_NS} ns/value (issue 12)",
                per_value <= DEFAULT_SET_BUDGET_NS)
    else:
        print("default numeric set: empty (no numeric defaults registered), skipped")

    print()
    for label, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
