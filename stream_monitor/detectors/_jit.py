"""Compiled inner loops of the default numeric detectors (numba), with the numpy paths as fallback.

The charts of Page-Hinkley and the scale detector keep their sums in fixed
point (int64), so a loop over the values gives exactly the sums of the
vectorised numpy code: the same IEEE operations on the same floats before the
rounding, integer additions after it. A chunk of a thousand values costs the
numpy code a dozen array passes and their calls; the loop makes one pass and
stops at the first crossing (bench/throughput.py --detectors).

numba compiles each loop on its first call (about a second) and caches the
machine code next to this file, or under ``NUMBA_CACHE_DIR``; without numba,
or with ``STREAM_MONITOR_JIT=0``, the detectors run their numpy code, which the
tests hold equal to the loops (tests/detectors/test_jit.py).
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Any

import numpy as np

__all__ = ["ENABLED", "crossed_chart", "cusum_walk", "binned_cusum_walk", "coded_cusum_walk", "window_counts",
           "first_chi_square_hit", "category_windows"]


def _enabled() -> bool:
    if os.environ.get("STREAM_MONITOR_JIT", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    # numba is imported at the first call (about 0.2 s), not by every command that imports a detector
    return importlib.util.find_spec("numba") is not None


#: whether the compiled loops are in use (numba installed and not switched off)
ENABLED = _enabled()

_KERNELS: dict[str, Any] = {}
#: functions of this module that the loops call
_HELPERS = ("_row_sum", "_step")


def _kernel(name: str) -> Any:
    """The compiled loop ``_<name>`` of this module, compiled (or read from numba's cache) once."""
    kernel = _KERNELS.get(name)
    if kernel is None:
        import numba

        def compiled(function: Any) -> Any:
            return numba.njit(cache=True, nogil=True, boundscheck=False)(function)

        module = globals()
        # the helpers called from inside the loops must be compiled before the loops are
        for helper in _HELPERS:
            if not isinstance(module[helper], numba.core.registry.CPUDispatcher):
                module[helper] = compiled(module[helper])
        kernel = _KERNELS[name] = compiled(module["_" + name])
    return kernel


def crossed_chart(sums: np.ndarray, thresholds: np.ndarray) -> tuple[int, int]:
    """After a walk stopped at a crossing: the chart furthest over its threshold, and its sum.

    The chart the numpy code names: the largest ``sum / threshold`` among the
    charts over their threshold (the first of equals).
    """
    totals, limits = sums.tolist(), thresholds.tolist()
    ratios = [total / limit if total > limit else -math.inf for total, limit in zip(totals, limits)]
    chart = ratios.index(max(ratios))
    return chart, totals[chart]


def cusum_walk(*args: Any) -> int:
    """See :func:`_cusum_walk`."""
    return _kernel("cusum_walk")(*args)  # type: ignore[no-any-return]


def binned_cusum_walk(*args: Any) -> int:
    """See :func:`_binned_cusum_walk`."""
    return _kernel("binned_cusum_walk")(*args)  # type: ignore[no-any-return]


def coded_cusum_walk(*args: Any) -> int:
    """See :func:`_coded_cusum_walk`."""
    return _kernel("coded_cusum_walk")(*args)  # type: ignore[no-any-return]


def window_counts(*args: Any) -> None:
    """See :func:`_window_counts`."""
    _kernel("window_counts")(*args)


def category_windows(*args: Any) -> int:
    """See :func:`_category_windows`."""
    return _kernel("category_windows")(*args)  # type: ignore[no-any-return]


def first_chi_square_hit(*args: Any) -> int:
    """See :func:`_first_chi_square_hit`."""
    return _kernel("first_chi_square_hit")(*args)  # type: ignore[no-any-return]


def _cusum_walk(chunk: np.ndarray, scale: float, shift: float, clip: float, sums: np.ndarray,
                signs: np.ndarray, drifts: np.ndarray, thresholds: np.ndarray) -> int:
    """Page-Hinkley's charts over ``chunk``: the index of the first crossing, or -1.

    Each value is standardised in fixed point (``x * scale - shift``, clipped
    to ``+-clip``, rounded half to even) and every chart ``j`` adds
    ``signs[j] * step - drifts[j]`` to its sum, floored at 0. ``sums`` is
    updated in place up to and including the crossing value.

    The charts go two at a time over the whole chunk (two sums in registers,
    each pair's walk ending at the earliest crossing found so far), not all
    of them value by value through ``sums``; after a crossing, every chart is
    walked again up to it. The same integer steps in the same order per chart:
    the same sums.
    """
    size = chunk.shape[0]
    charts = sums.shape[0]
    steps = np.empty(size, dtype=np.int64)
    for index in range(size):
        scaled = chunk[index] * scale
        scaled -= shift
        steps[index] = np.int64(np.rint(min(max(scaled, -clip), clip)))
    hit = size
    start = sums.copy()
    for first in range(0, charts, 2):
        second = first + 1 if first + 1 < charts else first
        total_a, sign_a, drift_a, limit_a = start[first], signs[first], drifts[first], thresholds[first]
        total_b, sign_b, drift_b, limit_b = start[second], signs[second], drifts[second], thresholds[second]
        for index in range(hit):
            step = steps[index]
            total_a = max(total_a + (sign_a * step - drift_a), 0)
            total_b = max(total_b + (sign_b * step - drift_b), 0)
            if (total_a > limit_a) | (total_b > limit_b):
                hit = index
                break
        sums[first] = total_a
        sums[second] = total_b
    if hit == size:
        return -1
    for chart in range(charts):
        total, sign, drift = start[chart], signs[chart], drifts[chart]
        for index in range(hit + 1):
            total = max(total + (sign * steps[index] - drift), 0)
        sums[chart] = total
    return hit


def _step(sums: np.ndarray, thresholds: np.ndarray, chart: int, increment: int) -> bool:
    """One CUSUM step of ``chart``: add ``increment``, floor at 0; whether it is over its threshold."""
    total = sums[chart] + increment
    if total < 0:
        total = 0
    sums[chart] = total
    return total > thresholds[chart]


def _binned_cusum_walk(values: np.ndarray, centre: float, cuts: np.ndarray, table: np.ndarray,
                       sums: np.ndarray, thresholds: np.ndarray) -> int:
    """Multinomial CUSUMs over the distances ``|x - centre|``: the first crossing's index, or -1.

    A distance falls in bin ``i`` when ``i`` cut points lie strictly below it
    (one equal to a cut point falls in the lower bin: the cut points are
    sorted, so counting them is ``searchsorted``); chart ``j`` adds
    ``table[j, i]``, floored at 0. ``sums`` is updated in place up to and
    including the crossing value.
    """
    charts = sums.shape[0]
    n_cuts = cuts.shape[0]
    for index in range(values.shape[0]):
        distance = abs(values[index] - centre)
        found = 0
        for cut in range(n_cuts):  # searchsorted's bin without its branches (random data mispredicts them)
            found += cuts[cut] < distance
        crossed = False
        for chart in range(charts):
            crossed |= _step(sums, thresholds, chart, table[chart, found])
        if crossed:
            return index
    return -1


def _coded_cusum_walk(codes: np.ndarray, table: np.ndarray, sums: np.ndarray, thresholds: np.ndarray) -> int:
    """CUSUMs over category codes: the index of the first crossing, or -1.

    Chart ``j`` adds ``table[j, code]`` for each code, floored at 0; ``sums``
    is updated in place up to and including the crossing value. The charts go
    two at a time over the whole column, as in :func:`_cusum_walk`.
    """
    size = codes.shape[0]
    charts = sums.shape[0]
    hit = size
    start = sums.copy()
    for first in range(0, charts, 2):
        second = first + 1 if first + 1 < charts else first
        total_a, limit_a = start[first], thresholds[first]
        total_b, limit_b = start[second], thresholds[second]
        for index in range(hit):
            code = codes[index]
            total_a = max(total_a + table[first, code], 0)
            total_b = max(total_b + table[second, code], 0)
            if (total_a > limit_a) | (total_b > limit_b):
                hit = index
                break
        sums[first] = total_a
        sums[second] = total_b
    if hit == size:
        return -1
    for chart in range(charts):
        total = start[chart]
        for index in range(hit + 1):
            total = max(total + table[chart, codes[index]], 0)
        sums[chart] = total
    return hit


def _window_counts(values: np.ndarray, edges: np.ndarray, history: np.ndarray, partial: np.ndarray,
                   into_block: int, stride: int, windows: np.ndarray) -> None:
    """The quantile chi-square's block counts over ``values``; ``windows`` gets each new window's counts.

    A value's bin is the number of edges at or below it. ``partial`` counts
    the unfinished block (``into_block`` values in); each ``stride``-th value
    finishes it: it joins ``history`` (the last blocks, oldest first) and
    row ``k`` of ``windows`` becomes the sum of ``history`` after the ``k``-th
    block finished. ``history`` and ``partial`` are updated in place.

    Within the loop ``history`` is a ring (a finished block replaces the
    oldest, at ``oldest``), put back in order at the end.
    """
    blocks, cells = history.shape
    window = np.zeros(cells, dtype=np.int64)
    for block in range(blocks):
        for cell in range(cells):
            window[cell] += history[block, cell]
    filled, row, oldest = into_block, 0, 0
    n_edges = edges.shape[0]
    for index in range(values.shape[0]):
        value = values[index]
        code = 0
        for edge in range(n_edges):  # searchsorted(side="right") without its branches
            code += edges[edge] <= value
        partial[code] += 1
        filled += 1
        if filled == stride:
            for cell in range(cells):
                window[cell] += partial[cell] - history[oldest, cell]
                history[oldest, cell] = partial[cell]
                windows[row, cell] = window[cell]
                partial[cell] = 0
            oldest = oldest + 1 if oldest + 1 < blocks else 0
            filled, row = 0, row + 1
    if oldest:
        ring = history.copy()
        for block in range(blocks):
            taken = oldest + block if oldest + block < blocks else oldest + block - blocks
            for cell in range(cells):
                history[block, cell] = ring[taken, cell]


def _row_sum(row: np.ndarray) -> float:
    """``numpy.sum`` of a short row, bit for bit: its pairwise rule below 128 terms.

    Fewer than 8 terms are added in order; otherwise 8 running sums over
    whole groups of 8, combined as ``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))``,
    then the remaining terms in order. (numpy splits longer rows in halves
    first; the detector's rows have at most ``bins`` + its atoms, far fewer.)
    """
    n = row.shape[0]
    if n < 8:
        total = 0.0
        for index in range(n):
            total += row[index]
        return total
    r0, r1, r2, r3, r4, r5, r6, r7 = row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7]
    index = 8
    whole = n - n % 8
    while index < whole:
        r0 += row[index]
        r1 += row[index + 1]
        r2 += row[index + 2]
        r3 += row[index + 3]
        r4 += row[index + 4]
        r5 += row[index + 5]
        r6 += row[index + 6]
        r7 += row[index + 7]
        index += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while index < n:
        total += row[index]
        index += 1
    return total


def _first_chi_square_hit(windows: np.ndarray, reference_times_window: np.ndarray, reference_total: float,
                          reference: np.ndarray, threshold: float, statistic: np.ndarray) -> int:
    """The first row of ``windows`` whose scaled homogeneity chi-square reaches ``threshold``, or -1.

    Row ``k``'s statistic is ``sum_i (R_i - w_i n)^2 / (r_i + w_i)`` with the
    operations of the numpy code in the same order; ``statistic[0]`` gets the
    hit's, or the last row's when none reaches it.
    """
    cells = windows.shape[1]
    terms = np.empty(cells, dtype=np.float64)
    for row in range(windows.shape[0]):
        for cell in range(cells):
            count = windows[row, cell]
            difference = reference_times_window[cell] - count * reference_total
            terms[cell] = difference * difference / (reference[cell] + count)
        value = _row_sum(terms)
        statistic[0] = value
        if value >= threshold:
            return row
    return -1



def _category_windows(codes: np.ndarray, ring: np.ndarray, monitored: int, stride: int,
                      reference: np.ndarray, n: int, critical: np.ndarray, found: np.ndarray) -> int:
    """The categorical chi-square over ``codes``: the index of the value ending the first window
    that reaches its critical value, or -1.

    ``ring`` holds the window's last codes (value ``t`` at ``t % len(ring)``),
    ``monitored`` values in so far; the values up to the hit (or all) are
    written into it. A window of ``m = len(ring)`` values ending at value
    ``t >= m`` with ``(t - m) % stride == 0`` is compared with the reference's
    counts ``r_i`` (total ``n``): ``sum (r_i m - w_i n)^2 / (r_i + w_i) / (n m)``
    over the occupied columns, with as many degrees of freedom less one,
    the numpy code's operations in its order. ``found`` gets the last
    evaluated window's statistic and degrees (unchanged if none).
    """
    m = ring.shape[0]
    cells = reference.shape[0]
    counts = np.zeros(cells, dtype=np.int64)
    for t in range(max(monitored - m, 0), monitored):
        counts[ring[t % m]] += 1
    terms = np.empty(cells, dtype=np.float64)
    scale = float(n * m)
    for index in range(codes.shape[0]):
        t = monitored + index  # this value's number
        slot = t % m
        if t >= m:
            counts[ring[slot]] -= 1
        code = codes[index]
        ring[slot] = code
        counts[code] += 1
        seen = t + 1
        if seen >= m and (seen - m) % stride == 0:
            degrees = -1
            for cell in range(cells):
                total = float(counts[cell]) + reference[cell]
                if total > 0:
                    difference = reference[cell] * m - float(counts[cell]) * n
                    terms[cell] = difference * difference / total
                    degrees += 1
                else:
                    terms[cell] = 0.0
            statistic = _row_sum(terms) / scale
            found[0] = statistic
            found[1] = degrees
            if statistic >= critical[degrees]:
                return index
    return -1
