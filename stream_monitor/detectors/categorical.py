"""Chi-square test of a sliding window's category frequencies against a reference.

The detector compares the category counts of the latest ``window`` values with
those of a reference sample (the first ``reference_size`` values, or counts
the caller supplies), every ``stride`` values, with Pearson's chi-square test
of homogeneity on the 2 x C table (reference row, window row). For reference
counts ``r_c`` (total ``n``) and window counts ``w_c`` (total ``m``) the
statistic is

    X^2 = sum over columns with r_c + w_c > 0 of (r_c m - w_c n)^2 / (n m (r_c + w_c))

with ``C - 1`` degrees of freedom, ``C`` the number of non-empty columns. It
is what ``scipy.stats.chi2_contingency(table, correction=False)`` computes.

Columns
-------
The reference fixes the columns. A category becomes a column of its own when
the reference holds enough of it for the window to expect at least
``MIN_EXPECTED`` (10) of it, twice the usual condition for the chi-square
approximation, because the far tail matters here, and when it is among the ``max_categories`` most frequent
(ties broken by name, so the choice is deterministic). Every other value,
including categories the reference never saw, falls into one pooled "other"
column. So a new category shows up as growth of "other", memory is bounded by
``max_categories`` whatever the stream holds, and rare categories do not make
the statistic's tail much heavier than the chi-square law it is calibrated
with (sparse columns have a Poisson tail, heavier than the chi-square's far
out; with at least 10 expected per column a Zipf stream of 30 categories gave
no false alarm in 6 million values at ``arl = 10**7``).

Hashed buckets
--------------
Categories too rare for a column of their own are not thrown together into a
single "other" column when there are many of them: a feature of hundreds of
values, none frequent, would otherwise have one column, no degree of freedom
and no test at all, and a collapse onto one value would go unseen. Instead the
pooled categories (and unseen ones) are spread over ``B`` buckets by a fixed
hash of the category (CRC-32 of its UTF-8 bytes, so the same in every process
and after a restart), with ``B`` chosen so that the window expects about
``2 * MIN_EXPECTED`` values per bucket on average, and at most
``max_categories`` columns in all; ``B`` is lowered until every bucket holds
at least as many reference values as an own column must. The bucket a category falls in does not
depend on the data, so the reference counts of a bucket are an unbiased
sample of its share and the test keeps its calibration. When the pooled
categories are too few for two buckets, ``B = 1``: the single "other" column
described above.

Reference ids
-------------
Detections name their reference ``"warmup:<first>-<last>"`` (0-based
positions in the signal of the reference's first and last values, inclusive)
or ``"snapshot:<id>"`` for a snapshot given with ``reference_id``.

Calibration
-----------
Under no drift the statistic is asymptotically chi-square with ``C - 1``
degrees of freedom, whatever the category probabilities, and the reference's
sampling noise is part of that law (it is a two-sample test). The critical
value for ``d`` degrees of freedom is ``chi2.isf(stride / arl, d)``. There are
``arl / stride`` evaluations in ``arl`` values, so by linearity of expectation
the expected number of false alarms in ``arl`` values is at most one, however
strongly the overlapping windows are correlated (a union bound; overlapping
windows exceed in clusters, so the measured run length is longer, see
``tests/detectors/test_categorical.py``).

Re-arming
---------
After a detection the detector collects a new reference from the values that
follow, so one change gives one detection.

Defaults
--------
``reference_size=1000, window=500, stride=25, max_categories=50``. One of five
equally likely categories growing from 20% to 50% of the stream is detected
after a median of about 200 values at ``arl = 10**7``.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from stream_monitor.detectors._dist import chi2_isf, chi2_sf

from stream_monitor.detectors import _jit
from stream_monitor.detectors import DEFAULT_ARL, register
from stream_monitor.detectors.base import Detection, Detector, SpecError, check_integer, check_known

__all__ = ["ChiSquare"]

#: smallest expected window count for a category to get its own column
MIN_EXPECTED = 10
#: largest reference or window accepted
MAX_SAMPLE = 1_000_000
#: evaluation matrices are built in chunks of about this many cells
_CHUNK_CELLS = 1 << 18
#: pooled categories whose column is remembered rather than recomputed
_REMEMBERED = 1024


@register
class ChiSquare(Detector):
    """Chi-square homogeneity test of a sliding window against a reference.

    Parameters
    ----------
    reference_size
        Number of values collected as the reference at the start and after each
        detection.
    window
        Number of latest values compared with the reference.
    stride
        Evaluate every ``stride`` values once the window is full.
    arl
        Target expected number of values between false alarms under no drift;
        default ``DEFAULT_ARL * family_tests``.
    max_categories
        Most categories given a column of their own; the rest are pooled.
    reference_counts
        A reference snapshot: category -> count, compared with from the start.
    reference_id
        The snapshot's id, reported in detections; required with
        ``reference_counts``.

    Examples
    --------
    Five categories; from value 3,000 on, ``"a"`` makes up half the stream
    instead of a fifth:

    >>> import numpy as np
    >>> from stream_monitor.detectors import build
    >>> rng = np.random.default_rng(7)
    >>> before = rng.choice(list("abcde"), 3000)
    >>> after = rng.choice(list("abcde"), 2000, p=[0.5, 0.125, 0.125, 0.125, 0.125])
    >>> detector = build({"name": "chi_square"})
    >>> for detection in detector.update(np.concatenate([before, after]).astype(object)):
    ...     print(detection.n_seen, detection.reference, round(detection.statistic, 1))
    3174 warmup:0-999 33.8
    """

    name = "chi_square"
    kind = "categorical"
    reference_params = ("reference_size", "reference_counts", "reference_id")

    DEFAULTS: Mapping[str, Any] = MappingProxyType(
        {"reference_size": 1000, "window": 500, "stride": 25, "max_categories": 50}
    )

    def __init__(
        self,
        *,
        reference_size: int,
        window: int,
        stride: int,
        arl: float,
        max_categories: int,
        reference_counts: Mapping[str, int] | None = None,
        reference_id: str | None = None,
    ) -> None:
        self.reference_size = reference_size
        self.window = window
        self.stride = stride
        self.arl = arl
        self.max_categories = max_categories
        self.snapshot = None if reference_counts is None else dict(reference_counts)
        self.snapshot_id = reference_id
        # critical values by degrees of freedom (index 0 unused: one column never alarms)
        alpha = stride / arl
        self._critical = np.array([math.inf] + [chi2_isf(alpha, df) for df in range(1, max_categories + 1)])
        self._reset()

    @classmethod
    def from_spec(cls, params: Mapping[str, Any], *, family_tests: int = 1) -> ChiSquare:
        name = cls.name
        check_known(name, params, ("reference_size", "window", "stride", "arl", "max_categories",
                                   "reference_counts", "reference_id"))
        defaults = cls.DEFAULTS
        reference_size = check_integer(name, "reference_size", params.get("reference_size", defaults["reference_size"]),
                                       minimum=2, maximum=MAX_SAMPLE)
        window = check_integer(name, "window", params.get("window", defaults["window"]), minimum=2, maximum=MAX_SAMPLE)
        stride = check_integer(name, "stride", params.get("stride", defaults["stride"]), minimum=1, maximum=window)
        max_categories = check_integer(name, "max_categories", params.get("max_categories", defaults["max_categories"]),
                                       minimum=1, maximum=10_000)
        arl = params.get("arl", DEFAULT_ARL * family_tests)
        if isinstance(arl, bool) or not isinstance(arl, (int, float)) or not math.isfinite(arl) or arl < stride:
            raise SpecError(name, "arl", f"must be a finite number of values >= stride, got {arl!r}")
        reference_counts = params.get("reference_counts")
        reference_id = params.get("reference_id")
        if reference_counts is not None:
            if not isinstance(reference_counts, Mapping):
                raise SpecError(name, "reference_counts", "must be a mapping of category to count")
            for category, count in reference_counts.items():
                if not isinstance(category, str):
                    raise SpecError(name, "reference_counts", f"category {category!r} is not a string")
                if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
                    raise SpecError(name, "reference_counts", f"count of {category!r} must be an integer >= 0")
            if not 2 <= sum(reference_counts.values()) <= MAX_SAMPLE:
                raise SpecError(name, "reference_counts", f"counts must add up to between 2 and {MAX_SAMPLE}")
            if not isinstance(reference_id, str) or not reference_id:
                raise SpecError(name, "reference_id", "a non-empty string is required with reference_counts")
            reference_counts = {category: int(count) for category, count in reference_counts.items()}
        elif reference_id is not None:
            raise SpecError(name, "reference_id", "only allowed with reference_counts")
        return cls(
            reference_size=reference_size,
            window=window,
            stride=stride,
            arl=float(arl),
            max_categories=max_categories,
            reference_counts=reference_counts,
            reference_id=reference_id,
        )

    def _params(self) -> Mapping[str, Any]:
        params: dict[str, Any] = {
            "reference_size": self.reference_size,
            "window": self.window,
            "stride": self.stride,
            "arl": self.arl,
            "max_categories": self.max_categories,
        }
        if self.snapshot is not None:
            params["reference_counts"] = dict(self.snapshot)
            params["reference_id"] = self.snapshot_id
        return params

    # --- state ------------------------------------------------------------------------

    def _reset(self) -> None:
        self._n_seen = 0
        self._statistic = 0.0
        self._degrees = 0
        self._window_codes = np.zeros(self.window, dtype=np.intp)
        if self.snapshot is not None:
            self._set_reference(self.snapshot, f"snapshot:{self.snapshot_id}")
        else:
            self._start_warmup()

    def _start_warmup(self) -> None:
        self._columns: list[str] | None = None
        self._reference_id = f"warmup:{self._n_seen}-{self._n_seen + self.reference_size - 1}"
        self._warmup: Counter[str] = Counter()
        self._warmup_count = 0
        self._monitored = 0

    def _set_reference(self, counts: Mapping[str, int], reference_id: str) -> None:
        n = sum(counts.values())
        smallest = math.ceil(MIN_EXPECTED * n / self.window)
        ranked = sorted(((-count, category) for category, count in counts.items() if count >= smallest))
        columns = [category for _, category in ranked[: self.max_categories - 1]]
        kept = sum(counts[category] for category in columns)
        own = set(columns)
        pooled = [(category, count) for category, count in counts.items() if category not in own]
        hashes = np.array([_bucket_hash(category) for category, _ in pooled], dtype=np.int64)
        weights = np.array([count for _, count in pooled], dtype=np.float64)
        # the pooled rest: as many hashed buckets as the window can fill (at least one), each
        # expected to hold at least MIN_EXPECTED window values by the reference
        buckets = max(1, min(self.max_categories - len(columns), int((n - kept) * self.window / n)
                             // (2 * MIN_EXPECTED)))
        while buckets > 1:
            bucket_counts = np.bincount(hashes % buckets, weights=weights, minlength=buckets)
            if bucket_counts.min() >= smallest:
                break
            buckets -= 1
        if buckets == 1:
            bucket_counts = np.array([float(n - kept)])
        self._set_columns(columns, buckets)
        self._reference_counts = np.concatenate(
            [np.array([counts[category] for category in columns], dtype=np.float64), bucket_counts])
        self._reference_total = n
        self._reference_id = reference_id
        self._warmup = Counter()
        self._warmup_count = 0
        self._monitored = 0

    def _set_columns(self, columns: list[str], buckets: int) -> None:
        """Own columns ``0 .. k-1``, then ``buckets`` hashed buckets of every other category."""
        self._columns = columns
        self._buckets = buckets
        self._index = _ColumnIndex(columns, buckets)

    def _codes(self, values: Iterable[Any]) -> np.ndarray:
        return np.fromiter(map(self._index.__getitem__, values), dtype=np.intp)

    @property
    def n_seen(self) -> int:
        return self._n_seen

    @property
    def statistic(self) -> float:
        return self._statistic

    @property
    def threshold(self) -> float:
        """Critical value for the last evaluation's degrees of freedom (the reference's before it)."""
        degrees = self._degrees
        if degrees == 0 and self._columns is not None:
            degrees = int(np.count_nonzero(self._reference_counts)) - 1
        return float(self._critical[max(degrees, 1)])

    def state_dict(self) -> dict[str, Any]:
        reference = None
        if self._columns is not None:
            reference = {"columns": list(self._columns), "counts": [int(c) for c in self._reference_counts],
                         "buckets": self._buckets}
        filled = min(self._monitored, self.window)
        order = np.arange(self._monitored - filled, self._monitored) % self.window
        return {
            "version": 1,
            "n_seen": self._n_seen,
            "statistic": self._statistic,
            "degrees": self._degrees,
            "reference_id": self._reference_id,
            "reference": reference,
            "warmup": dict(self._warmup),
            "window": self._window_codes[order].tolist(),
            "monitored": self._monitored,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != 1:
            raise ValueError(f"unsupported chi_square state version {state.get('version')!r}")
        self._n_seen = int(state["n_seen"])
        reference = state["reference"]
        if reference is None:
            self._start_warmup()
            self._warmup = Counter({str(k): int(v) for k, v in state["warmup"].items()})
            self._warmup_count = sum(self._warmup.values())
        else:
            columns = [str(c) for c in reference["columns"]]
            counts = [int(c) for c in reference["counts"]]
            self._set_columns(columns, int(reference.get("buckets", 1)))
            self._reference_counts = np.array(counts, dtype=np.float64)
            self._reference_total = sum(counts)
            self._warmup = Counter()
            self._warmup_count = 0
        self._reference_id = str(state["reference_id"])
        self._statistic = float(state["statistic"])
        self._degrees = int(state["degrees"])
        self._monitored = int(state["monitored"])
        window = np.asarray(state["window"], dtype=np.intp)
        self._window_codes[np.arange(self._monitored - window.size, self._monitored) % self.window] = window

    # --- update -----------------------------------------------------------------------

    def update(self, values: np.ndarray | Sequence[Any]) -> list[Detection]:
        if isinstance(values, np.ndarray):
            values = values.reshape(-1).tolist()
        elif not isinstance(values, list):
            values = list(values)
        detections: list[Detection] = []
        position = 0
        while position < len(values):
            if self._columns is None:
                position += self._collect_reference(values, position)
            else:
                consumed, detection = self._monitor(values, position)
                position += consumed
                if detection is not None:
                    detections.append(detection)
        return detections

    def _collect_reference(self, values: list[Any], position: int) -> int:
        taken = values[position : position + self.reference_size - self._warmup_count]
        self._warmup.update(value if value.__class__ is str else str(value) for value in taken)
        self._warmup_count += len(taken)
        self._n_seen += len(taken)
        if self._warmup_count == self.reference_size:
            self._set_reference(self._warmup, self._reference_id)
        return len(taken)

    def _monitor(self, values: list[Any], position: int) -> tuple[int, Detection | None]:
        """Feed values from ``position`` until the end or a detection; return (consumed, detection)."""
        m, stride = self.window, self.stride
        if _jit.ENABLED:
            return self._monitor_compiled(values, position)
        cells = self._reference_counts.size
        chunk = max(1, _CHUNK_CELLS // (cells + m))
        codes = self._codes(values[position : position + chunk * stride + m])
        filled = min(self._monitored, m)
        order = np.arange(self._monitored - filled, self._monitored) % m
        timeline = np.concatenate([self._window_codes[order], codes])
        first_value = self._monitored - filled
        t_first = max(m, self._monitored + 1)
        t_first += (-(t_first - m)) % stride
        ends = np.arange(t_first, self._monitored + codes.size + 1, stride) - first_value
        hit = np.empty(0, dtype=np.intp)
        if ends.size:
            statistic, degrees = self._evaluate(timeline, ends, cells)
            hit = np.flatnonzero(statistic >= self._critical[degrees])
            last = hit[0] if hit.size else -1
            self._statistic = float(statistic[last])
            self._degrees = int(degrees[last])
        if not hit.size:
            self._append_window(codes)
            return codes.size, None
        consumed = int(ends[hit[0]]) - filled
        self._append_window(codes[:consumed])
        return consumed, self._detected(position + consumed - 1)

    def _monitor_compiled(self, values: list[Any], position: int) -> tuple[int, Detection | None]:
        """:meth:`_monitor` as one compiled loop over the values (:mod:`._jit`): the same windows and statistics."""
        codes = self._codes(values[position:])
        found = np.array([self._statistic, float(self._degrees)])
        hit = _jit.category_windows(codes, self._window_codes, self._monitored, self.stride,
                                    self._reference_counts, self._reference_total, self._critical, found)
        self._statistic, self._degrees = float(found[0]), int(found[1])
        consumed = codes.size if hit < 0 else hit + 1
        self._monitored += consumed
        self._n_seen += consumed
        if hit < 0:
            return consumed, None
        return consumed, self._detected(position + consumed - 1)

    def _detected(self, index: int) -> Detection:
        """The detection of the window that ended at ``index``; the next values start a new reference."""
        detection = Detection(
            index=index,
            n_seen=self._n_seen - 1,
            statistic=self._statistic,
            threshold=float(self._critical[self._degrees]),
            p_value=chi2_sf(self._statistic, self._degrees),
            window={"reference": self._reference_total, "current": self.window},
            reference=self._reference_id,
        )
        self._start_warmup()
        return detection

    def _evaluate(self, timeline: np.ndarray, ends: np.ndarray, cells: int) -> tuple[np.ndarray, np.ndarray]:
        """Chi-square statistics and degrees of freedom for the windows ``timeline[end - m:end]``."""
        m, n = self.window, self._reference_total
        rows = ends.size
        windows = sliding_window_view(timeline, m)[ends - m] + (np.arange(rows) * cells)[:, None]
        counts = np.bincount(windows.reshape(-1), minlength=rows * cells).reshape(rows, cells).astype(np.float64)
        reference = self._reference_counts
        totals = counts + reference
        occupied = totals > 0
        # empty columns contribute 0/0; they are dropped from the sum and the degrees of freedom
        terms = np.divide((reference * m - counts * n) ** 2, totals, out=np.zeros_like(totals), where=occupied)
        statistic = terms.sum(axis=1) / (n * m)
        degrees = occupied.sum(axis=1) - 1
        return statistic, degrees

    def _append_window(self, codes: np.ndarray) -> None:
        m = self.window
        keep = min(codes.size, m)
        self._window_codes[(self._monitored + codes.size - keep + np.arange(keep)) % m] = codes[codes.size - keep :]
        self._monitored += codes.size
        self._n_seen += codes.size


class _ColumnIndex(dict):
    """category -> column: own columns by name, every other category by a fixed hash.

    The bucket of a pooled category is computed and remembered for the first
    ``_REMEMBERED`` such categories only, so memory stays bounded whatever the
    stream holds.
    """

    def __init__(self, columns: list[str], buckets: int) -> None:
        super().__init__((category, code) for code, category in enumerate(columns))
        self._first_bucket = len(columns)
        self._buckets = buckets

    def __missing__(self, category: Any) -> int:
        if category.__class__ is not str:
            # a value that is not a string counts as its text, and is not remembered: True, 1
            # and 1.0 are one dict key but three categories
            return self[str(category)]
        code = self._first_bucket
        if self._buckets > 1:
            code += _bucket_hash(category) % self._buckets
        if len(self) < _REMEMBERED:
            self[category] = code
        return code


def _bucket_hash(category: str) -> int:
    """A hash of the category that is the same in every process (unlike ``hash``)."""
    return zlib.crc32(category.encode("utf-8", "surrogatepass"))
