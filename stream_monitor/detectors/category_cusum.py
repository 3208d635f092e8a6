"""Category CUSUM: per-category charts for a change in a categorical signal's frequencies.

Method
------
The first ``reference_size`` values form the reference, split into two
random parts (a seeded hypergeometric split of its counts: for an i.i.d.
sample, two independent samples). The most frequent categories of the first
part (``CHOOSING_SHARE``, a quarter of the reference; at least ``MIN_COUNT``
values each, at most ``max_categories - 1`` of them, ties broken by name) get
a column of their own, and the rest gives the columns' counts: chosen and counted
on the same values, the columns would be the categories that were frequent
by luck, whose shares then seem to fall (with hundreds of equally rare
categories, a false alarm). Every other value,
including categories the reference never saw, falls into one pooled "other"
column, so memory is bounded whatever the stream holds (the columns and the
mapping of values to columns are those of the chi-square detector,
:mod:`stream_monitor.detectors.categorical`, with a single "other" column).

For every column ``c`` two one-sided CUSUMs run on the indicator "the value
is in ``c``": one for a rise of the column's share, one for a fall. A chart
for a rise from the design share ``p`` to ``q`` (the share whose odds are
``odds_ratio`` times those of ``p``; the other columns shrink in proportion)
adds the log-likelihood ratio of the multinomial alternative, which depends
on the value only through the indicator::

    S = max(0, S + log(q / p))                   for a value in c
    S = max(0, S + log((1 - q) / (1 - p)))       for any other value

and a chart for a fall is the same chart on the complement (the share of
every other column rising by ``odds_ratio``). The design share is a
credible bound of the column's share given the reference (Jeffreys prior):
an upper bound for a rise, a lower bound for a fall, at the quantile (50% to
99.9%) whose chart detects the change by ``odds_ratio`` from the estimated
share fastest (a bound above the estimate lowers the threshold, since an
unlucky reference then rarely leaves the chart drifting upwards, but slows
the chart down). A new category
shows up as a rise of "other"; a category that disappears as a fall of its
column. The default ``odds_ratio=4`` is the chart for one of five equally
frequent categories growing from 20% to 50%.

Calibration
-----------
Each chart's increments take two values, the multinomial CUSUM with two bins
(:mod:`stream_monitor.detectors.calibration`): the false-alarm rate is
Wald's exponential-tilt approximation averaged over the posterior
``Beta(c + 1/2, n - c + 1/2)`` of the column's true share (``c`` of ``n``
in the counting part) (the two-bin
aggregate of the ``Dirichlet(counts + 1/2)`` posterior of all shares). The
target ``arl`` (default ``DEFAULT_ARL * family_tests``) is split equally
between the charts. Thresholds depend only on the reference counts and the
parameters, and are cached.

Increments are kept in fixed point (integers in units of ``2**-20``), so a
batch gives exactly the result of feeding its values one at a time.

Measured
--------
``bench/categories.py`` (20 seeds, ``family_tests=44``, five equally
frequent categories): one share growing from 20% to 50% is detected after a
median of 100 values (quartiles 85-134; the bound is about 90, the
chi-square test needs 249), falling from 20% to 5% after 244 (chi-square
437). Changes spread over several shares with no large single move
(30/25/20/15/10%) are the chi-square's (474 against 1,326), so both run by
default. No false alarm in a million values of five equal categories, Zipf
over 30 categories, a category at 0.5% or 400 equally rare categories; at
``arl = 10**4``, 11 to 50 false alarms per million values against 100
allowed.

Re-arming and references
------------------------
After a detection the charts restart and the next ``reference_size`` values
form a new reference, so one change gives one alert. The reference can also
be a snapshot (``reference_counts`` with ``reference_id``), used from the
first value on. Detections name their reference ``"warmup:<first>-<last>"``
(0-based positions in the signal, inclusive) or ``"snapshot:<id>"``.

Examples
--------
Five categories; from value 3,000 on, ``"a"`` makes up half the stream
instead of a fifth:

>>> import numpy as np
>>> from stream_monitor.detectors import build
>>> rng = np.random.default_rng(7)
>>> before = rng.choice(list("abcde"), 3000)
>>> after = rng.choice(list("abcde"), 2000, p=[0.5, 0.125, 0.125, 0.125, 0.125])
>>> detector = build({"name": "category_cusum"}, family_tests=44)
>>> for detection in detector.update(np.concatenate([before, after]).astype(object)):
...     print(f"change detected at index {detection.index}")
change detected at index 3075

References
----------
E. S. Page (1954). Continuous inspection schemes. Biometrika 41, 100-115.
A. Wald (1947). Sequential Analysis. Wiley (the exponential-tilt ARL).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from stream_monitor.detectors._dist import beta_ppf

from stream_monitor.detectors import DEFAULT_ARL, _jit, register
from stream_monitor.detectors.base import (
    Detection,
    Detector,
    SpecError,
    check_integer,
    check_known,
    check_number,
)
from stream_monitor.detectors.calibration import bernoulli_cusum_threshold
from stream_monitor.detectors.categorical import MAX_SAMPLE, _ColumnIndex

__all__ = ["CategoryCusum", "MIN_COUNT"]

#: fewest reference values for a category to get a column of its own
MIN_COUNT = 5
#: share of the reference that chooses the columns (the rest gives their counts)
CHOOSING_SHARE = 0.25
# Fixed-point unit of the chart sums.
_SCALE = float(2**20)
# Values per vectorised step: bounds the work wasted past a detection.
_CHUNK = 4096
_STATE_VERSION = 1
# Candidate design shares: these posterior quantiles of the share (upper bounds for a rise).
_DESIGN_QUANTILES = (0.5, 0.75, 0.9, 0.99, 0.999)


@register
class CategoryCusum(Detector):
    """Two-sided CUSUM per category column against the reference frequencies.

    Parameters
    ----------
    reference_size
        Values collected as the reference at the start and after each detection.
    odds_ratio
        The design change: a column's odds rising (or falling) by this factor.
    arl
        Target average number of values between false alarms.
    max_categories
        Most columns, "other" included.
    reference_counts, reference_id
        A reference snapshot (category -> count) and its id (both or neither).
    """

    name = "category_cusum"
    kind = "categorical"
    reference_params = ("reference_size", "reference_counts", "reference_id")

    def __init__(
        self,
        *,
        reference_size: int = 1000,
        odds_ratio: float = 4.0,
        arl: float = DEFAULT_ARL,
        max_categories: int = 50,
        reference_counts: Mapping[str, int] | None = None,
        reference_id: str | None = None,
    ) -> None:
        name = self.name
        self.reference_size = check_integer(name, "reference_size", reference_size, minimum=100, maximum=MAX_SAMPLE)
        self.odds_ratio = check_number(name, "odds_ratio", odds_ratio, low=1.0, high=1e4, open_low=True)
        if self.odds_ratio < 1.01:
            raise SpecError(name, "odds_ratio", "must be at least 1.01")
        self.arl = check_number(name, "arl", arl, low=10.0, high=1e18)
        self.max_categories = check_integer(name, "max_categories", max_categories, minimum=2, maximum=1000)
        self.snapshot, self.snapshot_id = _check_snapshot(reference_counts, reference_id)
        self._reset()

    @classmethod
    def from_spec(cls, params: Mapping[str, Any], *, family_tests: int = 1) -> CategoryCusum:
        """Build from spec parameters; a default ``arl`` is multiplied by ``family_tests``."""
        params = dict(params)
        check_known(cls.name, params, ("reference_size", "odds_ratio", "arl", "max_categories",
                                       "reference_counts", "reference_id"))
        params.setdefault("arl", DEFAULT_ARL * family_tests)
        return cls(**params)

    def _params(self) -> Mapping[str, Any]:
        params: dict[str, Any] = {
            "reference_size": self.reference_size,
            "odds_ratio": self.odds_ratio,
            "arl": self.arl,
            "max_categories": self.max_categories,
        }
        if self.snapshot is not None:
            params["reference_counts"] = dict(self.snapshot)
            params["reference_id"] = self.snapshot_id
        return params

    def _reset(self) -> None:
        """Build all mutable state: a fresh detector that has seen nothing."""
        self._n_seen = 0
        self._reference_start = 0
        self._from_snapshot = False
        self._warmup: Counter[str] = Counter()
        self._warmup_count = 0
        self._columns: list[str] | None = None
        self._sums = np.zeros(0, dtype=np.int64)
        if self.snapshot is not None:
            self._set_reference(self.snapshot, from_snapshot=True)

    # -- the design -------------------------------------------------------------

    def _set_reference(self, counts: Mapping[str, int], *, from_snapshot: bool) -> None:
        """Columns and charts for reference ``counts``.

        The reference is split into two random parts (a seeded hypergeometric
        split of the counts, which for an i.i.d. sample gives two independent
        samples): the first chooses the columns, the second gives their counts.
        Chosen on the counts that design the charts, the columns would be the
        categories that happened to be frequent in the reference, whose shares
        then seem to fall: with hundreds of equally rare categories, a false
        alarm.
        """
        names = sorted(counts)
        totals = np.array([counts[name] for name in names], dtype=np.int64)
        n = int(totals.sum())
        choosing = (np.random.default_rng(0).multivariate_hypergeometric(totals, int(n * CHOOSING_SHARE))
                    if names else totals)
        estimating = totals - choosing
        ranked = sorted((-int(c), name) for name, c in zip(names, choosing) if c >= MIN_COUNT)
        columns = [name for _, name in ranked[: self.max_categories - 1]]
        own = {name: int(c) for name, c in zip(names, estimating)}
        column_counts = [own[name] for name in columns]
        column_counts.append(int(estimating.sum()) - sum(column_counts))  # "other"
        self._set_columns(columns)
        self._column_counts = column_counts
        self._reference_total = n
        self._from_snapshot = from_snapshot
        self._design_charts()

    def _set_columns(self, columns: list[str]) -> None:
        self._columns = columns
        self._index = _ColumnIndex(columns, 1)

    def _design_charts(self) -> None:
        """One chart per column and direction that can reach the target; table and thresholds."""
        n, cells = sum(self._column_counts), len(self._column_counts)
        candidates = [(column, rising) for column in range(cells) for rising in (True, False)]
        chart_arl = self.arl * len(candidates)
        rows, thresholds, charts = [], [], []
        for column, rising in candidates:
            count = self._column_counts[column]
            design = _share_chart(count if rising else n - count, n, self.odds_ratio, chart_arl)
            if design is None:  # e.g. the share of the only category cannot rise
                continue
            hit, miss, threshold = design
            if not rising:
                hit, miss = miss, hit  # the complement's rise: a value in the column is the "miss"
            row = np.full(cells + 1, miss)
            row[column] = hit
            row[cells] = 0  # the leading entry of each chunk's walk
            rows.append(row)
            thresholds.append(threshold)
            charts.append((column, rising))
        self._charts = charts
        self._table = np.array(rows, dtype=np.int64).reshape(len(rows), cells + 1)
        self._fixed_thresholds = np.array(thresholds, dtype=np.int64)
        self._threshold_rows = np.repeat(self._fixed_thresholds[:, None], _CHUNK + 1, axis=1)
        self._sums = np.zeros(len(rows), dtype=np.int64)

    def _codes(self, values: list[Any]) -> np.ndarray:
        return np.fromiter(map(self._index.__getitem__, values), dtype=np.intp, count=len(values))

    # -- gauges -------------------------------------------------------------

    @property
    def n_seen(self) -> int:
        return self._n_seen

    def _closest_chart(self) -> int:
        return int(np.argmax(self._sums / self._fixed_thresholds))

    @property
    def statistic(self) -> float:
        if self._columns is None or not self._sums.size:
            return 0.0
        return float(self._sums[self._closest_chart()]) / _SCALE

    @property
    def threshold(self) -> float:
        """The closest chart's threshold; infinite while the reference is collected."""
        if self._columns is None or not self._sums.size:
            return math.inf
        return float(self._fixed_thresholds[self._closest_chart()]) / _SCALE

    # -- updates ------------------------------------------------------------

    def update(self, values: np.ndarray | Sequence[Any]) -> list[Detection]:
        """Feed categories in order; return the detections, indexed within ``values``."""
        if isinstance(values, np.ndarray):
            values = values.reshape(-1).tolist()
        elif not isinstance(values, list):
            values = list(values)
        detections: list[Detection] = []
        start_seen = self._n_seen
        position, size = 0, len(values)
        while position < size:
            if self._columns is None:
                taken = values[position : position + self.reference_size - self._warmup_count]
                self._warmup.update(value if value.__class__ is str else str(value) for value in taken)
                self._warmup_count += len(taken)
                position += len(taken)
                if self._warmup_count == self.reference_size:
                    self._set_reference(self._warmup, from_snapshot=False)
                    self._warmup, self._warmup_count = Counter(), 0
                continue
            chunk = values[position : position + _CHUNK]
            hit = self._run_charts(self._codes(chunk)) if self._sums.size else None
            if hit is None:
                position += len(chunk)
                continue
            index, chart, statistic = hit
            detections.append(
                Detection(
                    index=position + index,
                    n_seen=start_seen + position + index,
                    statistic=statistic,
                    threshold=float(self._fixed_thresholds[chart]) / _SCALE,
                    window={"reference": self._reference_total},
                    reference=self._reference_id(),
                )
            )
            # Re-arm: the next ``reference_size`` values, all after the change, are the new reference.
            self._columns = None
            self._from_snapshot = False
            self._reference_start = start_seen + position + index + 1
            self._sums = np.zeros(0, dtype=np.int64)
            position += index + 1
        self._n_seen = start_seen + size
        return detections

    def _run_charts(self, codes: np.ndarray) -> tuple[int, int, float] | None:
        """Advance every chart over the column ``codes``; stop at the first crossing.

        As in :mod:`stream_monitor.detectors.scale`: each chart's walk starts
        with its sum before the chunk and a leading 0, and the chart is
        ``walk[t] - min(walk[:t + 1])``.
        """
        if _jit.ENABLED:
            index = _jit.coded_cusum_walk(codes, self._table, self._sums, self._fixed_thresholds)
            if index < 0:
                return None
            chart, total = _jit.crossed_chart(self._sums, self._fixed_thresholds)
            return index, chart, total / _SCALE
        size = len(codes)
        columns = np.empty(size + 1, dtype=np.intp)
        columns[0] = self._table.shape[1] - 1
        columns[1:] = codes
        walk = np.take(self._table, columns, axis=1)
        walk[:, 1] += self._sums
        np.cumsum(walk, axis=1, out=walk)
        walk -= np.minimum.accumulate(walk, axis=1)
        over = np.greater(walk, self._threshold_rows[:, : size + 1])
        if not over.any():
            self._sums = walk[:, -1].copy()
            return None
        end = int(np.argmax(over.any(axis=0)))
        ratios = walk[:, end] / self._fixed_thresholds
        chart = int(np.argmax(np.where(over[:, end], ratios, -np.inf)))
        return end - 1, chart, float(walk[chart, end]) / _SCALE

    def _reference_id(self) -> str:
        if self._from_snapshot:
            return f"snapshot:{self.snapshot_id}"
        return f"warmup:{self._reference_start}-{self._reference_start + self.reference_size - 1}"

    # -- checkpoints --------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The mutable state as plain JSON-serialisable data."""
        reference = None
        if self._columns is not None:
            reference = {"columns": list(self._columns), "counts": list(self._column_counts),
                         "total": self._reference_total}
        return {
            "version": _STATE_VERSION,
            "n_seen": self._n_seen,
            "reference_start": self._reference_start,
            "from_snapshot": self._from_snapshot,
            "warmup": dict(self._warmup),
            "reference": reference,
            "sums": self._sums.tolist(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` of a detector with the same spec."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError("state was saved by a different category_cusum version")
        self._reset()
        self._n_seen = int(state["n_seen"])
        self._reference_start = int(state["reference_start"])
        reference = state["reference"]
        if reference is None:
            self._columns = None
            self._from_snapshot = False
            self._warmup = Counter({str(k): int(v) for k, v in state["warmup"].items()})
            self._warmup_count = sum(self._warmup.values())
            self._sums = np.zeros(0, dtype=np.int64)
        else:
            self._set_columns([str(c) for c in reference["columns"]])
            self._column_counts = [int(c) for c in reference["counts"]]
            self._reference_total = int(reference["total"])
            self._from_snapshot = bool(state["from_snapshot"]) and self.snapshot is not None
            self._design_charts()
            self._warmup, self._warmup_count = Counter(), 0
            sums = np.asarray(state["sums"], dtype=np.int64)
            if sums.shape != self._sums.shape:
                raise ValueError("category_cusum state: saved with other charts")
            self._sums = sums


@functools.lru_cache(maxsize=4096)
def _share_chart(count: int, n: int, odds_ratio: float, arl: float) -> tuple[int, int, int] | None:
    """The chart for a rise of a share seen ``count`` times in ``n``: fixed-point ``(hit, miss, threshold)``.

    Of the candidate design shares (credible bounds of the share), the one
    that detects fastest (threshold over drift) the rise by ``odds_ratio``
    from the share's estimate wins. When none drifts upwards under that rise
    (a rare share, whose credible bounds lie far above the estimate), the one
    that detects its own design alternative fastest wins. ``None`` when no
    candidate reaches ``arl``.
    """
    estimate = (count + 0.5) / (n + 1.0)
    rise = _raised(estimate, odds_ratio)
    best: tuple[float, float, int, int, int] | None = None
    for quantile in _DESIGN_QUANTILES:
        p0 = float(beta_ppf(quantile, count + 0.5, n - count + 0.5))
        p1 = _raised(p0, odds_ratio)
        if not 0.0 < p0 < p1 < 1.0:
            continue
        hit = int(np.rint(math.log(p1 / p0) * _SCALE))
        miss = int(np.rint(math.log((1.0 - p1) / (1.0 - p0)) * _SCALE))
        if hit <= 0 or miss >= 0:
            continue
        try:
            threshold = bernoulli_cusum_threshold(count, n, hit / _SCALE, -miss / _SCALE, arl)
        except ValueError:  # this design cannot reach the target
            continue
        drift = (rise * hit + (1.0 - rise) * miss) / _SCALE
        own_drift = (p1 * hit + (1.0 - p1) * miss) / _SCALE
        score = (threshold / drift if drift > 0 else math.inf, threshold / own_drift)
        if best is not None and math.isfinite(best[0]) and score[0] > best[0]:
            break  # the delay is unimodal in the quantile: past the best
        if best is None or score < best[:2]:
            best = (*score, hit, miss, math.floor(threshold * _SCALE))
    return None if best is None else best[2:]


def _raised(share: float, odds_ratio: float) -> float:
    """The share whose odds are ``odds_ratio`` times those of ``share``."""
    odds = odds_ratio * share / (1.0 - share)
    return odds / (1.0 + odds)


def _check_snapshot(counts: Any, reference_id: Any) -> tuple[dict[str, int] | None, str | None]:
    """A reference snapshot as category -> count and its id, or :class:`SpecError`."""
    name = CategoryCusum.name
    if counts is None:
        if reference_id is not None:
            raise SpecError(name, "reference_id", "only allowed with reference_counts")
        return None, None
    if not isinstance(counts, Mapping):
        raise SpecError(name, "reference_counts", "must be a mapping of category to count")
    for category, count in counts.items():
        if not isinstance(category, str):
            raise SpecError(name, "reference_counts", f"category {category!r} is not a string")
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            raise SpecError(name, "reference_counts", f"count of {category!r} must be an integer >= 0")
    # as few as the chi-square accepts: charts that so small a reference cannot calibrate are left out
    if not 2 <= sum(counts.values()) <= MAX_SAMPLE:
        raise SpecError(name, "reference_counts", f"counts must add up to between 2 and {MAX_SAMPLE}")
    if not isinstance(reference_id, str) or not reference_id:
        raise SpecError(name, "reference_id", "a non-empty string is required with reference_counts")
    return {category: int(count) for category, count in counts.items()}, reference_id
