"""Chi-square test of a sliding window's counts in the reference's quantile bins.

A cheap nonparametric shape test: it sees any change that moves values between
the reference's quantile bins (spread, skew, a new mode or a split into two
modes, a point mass appearing), not only changes of the mean, at a small
fraction of the cost of the windowed Kolmogorov-Smirnov test (``ks``).

Bins
----
The reference (the first ``reference_size`` values, or a snapshot) is cut at
its ``k / bins`` quantiles, ``k = 1 .. bins - 1``. Each value is coded once,
with one ``np.searchsorted`` per batch, as the bin ``[edge_{i-1}, edge_i)`` it
falls in; the reference's own counts are made by the same rule, so ties are
counted alike on both sides. Ties collapse quantiles: equal edges are merged,
and a value that fills at least a whole quantile step of the reference (an
atom: the zeros of a feature that is 50% zeros, or a small count of a Poisson
feature) gets a bin of its own, ``[v, nextafter(v))``, so a change of its share
is seen apart from its neighbours'. Finally bins holding too few reference
values for the window to expect ``MIN_EXPECTED`` of them are merged with their
smaller neighbour (the smallest first), so the chi-square law the test is
calibrated with holds out to its far tail. Values below or above every
reference value fall into the first or last bin.

Window counts
-------------
The detector keeps counts, never values: the bin counts of the last
``window / stride`` blocks of ``stride`` values, and those of the unfinished
block. The window's counts at each evaluation are a running sum of blocks: a batch is one ``searchsorted``, one
``bincount`` of (block, bin) pairs and one cumulative sum over blocks, and
every evaluation in the batch is a row of one small matrix. Memory is
``window / stride * bins`` integers whatever the window.

Statistic and calibration
-------------------------
Every ``stride`` values, once the window is full, the window's counts ``w_i``
(total ``m``) are compared with the reference's ``r_i`` (total ``n``) by
Pearson's chi-square test of homogeneity on the 2 x B table, what
``scipy.stats.chi2_contingency(table, correction=False)`` computes:

    X^2 = sum_i (r_i m - w_i n)^2 / (n m (r_i + w_i))

with ``B - 1`` degrees of freedom. It is a two-sample statistic: the
reference's sampling noise is part of its law, whatever the distribution of
the values, so a heavy tail cannot raise false alarms. The critical value is
``chi2.isf(stride / arl, B - 1)``: there are ``arl / stride`` evaluations in
``arl`` values, so by linearity of expectation the expected number of false
alarms in ``arl`` values is at most one as long as one evaluation exceeds it
with probability at most ``stride / arl``, however strongly overlapping
windows are correlated (a union bound; windows exceed in clusters, so the
measured run length under no drift is longer, see ``bench/shape.py``).

How far out the chi-square law holds was checked with the exact law of the
statistic (``tests/detectors/test_quantile_chi2.py``):

- Continuous data: the reference counts are fixed by construction (each bin
  holds ``n / B`` reference values) and the randomness is in where the
  reference's quantiles fall. A bin between two reference order statistics
  has a uniform spacing as its probability, so the window's counts are
  Dirichlet-multinomial, a law that depends on ``n``, ``m`` and the bins
  only. Its far tail is lighter than the chi-square law's: at the defaults the
  exact chance of one evaluation exceeding the critical value is 0.62 to 0.68
  times ``stride / arl`` at ``arl = 44 * 10**7`` and at ``10**10`` (0.35 to
  0.39 with a reference of 500).
- Ties (atoms, or any repeated value in the reference): the bin counts are
  random, and given the two samples' bin totals the window's counts are
  multivariate hypergeometric (the permutation law). Its far tail is heavier
  than the chi-square law's, the more so the fewer values a bin expects: 1.3
  times the target for Poisson(2) bins, up to 2.3 for a bin expecting 10
  window values, 5.8 for five such bins (``arl = 44 * 10**7``). So a reference
  with ties has bins expecting at least ``MIN_EXPECTED_TIED`` (25) window
  values and is calibrated at ``stride / arl / TIED_FACTOR`` (4), which brings
  the exact chance under the target for the patterns checked (Poisson(2)
  bins, bins expecting 25 beside large ones, up to ``arl = 10**10``).

Reference ids
-------------
Detections name their reference ``"warmup:<first>-<last>"`` (0-based
positions in the signal of the reference's first and last values, inclusive)
or ``"snapshot:<id>"`` for a snapshot given with ``reference_id``.

Re-arming
---------
After a detection the detector forgets its reference and window and collects a
new reference from the values that follow, so one change gives one detection.

Defaults
--------
``reference_size=1000, window=250, stride=25, bins=10``. On seeded streams at
``arl = 44 * 10**7`` (a model of 22 signals with two detectors each; median
over 20 seeds, ``bench/shape.py``) a split into two modes with the same mean
and variance is detected after 250 values (windowed KS: 6,000), 30% of the
values becoming 0 after 150 (KS 425), a skew change from 0 to 2 after 200
(KS 1,150), the spread x2.5 after 125 (KS 250), the mean +0.5 sd after 275
(KS 275). A batch of 1,000 values costs about 40 ns per value, an eighth of
the KS test's (``bench/detectors.py``). A longer window sees smaller changes,
later (a skew change from 0 to 1 needs ``window=1000``: about 2,800 values);
more bins see finer changes of shape, at a higher threshold (more degrees of
freedom).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
from stream_monitor.detectors._dist import chi2_isf, chi2_sf

from stream_monitor.detectors import _jit
from stream_monitor.detectors import DEFAULT_ARL, register
from stream_monitor.detectors.base import (
    Detection,
    Detector,
    SpecError,
    check_integer,
    check_known,
    check_reference_values,
    decode_values,
    encode_values,
    reference_buffer,
)

__all__ = ["QuantileChiSquare", "quantile_bins"]

#: smallest expected window count of a bin: the far tail of the statistic is
#: heavier than the chi-square law's when a bin expects few values
MIN_EXPECTED = 20
#: the same for a reference with ties, whose bin counts are random (see the module docstring)
MIN_EXPECTED_TIED = 25
#: a reference with ties is calibrated at ``stride / arl / TIED_FACTOR`` (see the module docstring)
TIED_FACTOR = 4
#: largest reference or window accepted
MAX_SAMPLE = 100_000
#: most bins
MAX_BINS = 64
#: the state's version; 1 held the reference values collected as a list of numbers
_STATE_VERSION = 2
_READABLE_VERSIONS = (1, _STATE_VERSION)
#: values coded per pass: bounds the work (and the work wasted after a detection) per pass
_CHUNK = 1 << 16


def quantile_bins(reference: np.ndarray, bins: int, min_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges from the reference's quantiles and the reference's counts in them.

    Returns ``(edges, counts)``: a value ``x`` is in bin
    ``np.searchsorted(edges, x, side="right")``; ``counts`` has ``edges.size + 1``
    entries, each at least ``min_count`` (unless the reference is too small for
    two such bins, or constant: then one bin and no edge).
    """
    ordered = np.sort(np.asarray(reference, dtype=np.float64))
    n = ordered.size
    candidates = ordered[(np.arange(1, bins) * n) // bins]
    distinct, multiplicity = np.unique(ordered, return_counts=True)
    # an atom filling a whole quantile step gets its own bin [v, nextafter(v))
    atoms = distinct[multiplicity >= max(1, n // bins)]
    with np.errstate(over="ignore"):  # above the largest float there is nothing to count
        above = np.nextafter(atoms, math.inf)
    edges = np.unique(np.concatenate([candidates, atoms, above[np.isfinite(above)]]))
    counts = np.bincount(np.searchsorted(edges, ordered, side="right"), minlength=edges.size + 1)
    return _merge_small(edges, counts, min_count)


def _merge_small(edges: np.ndarray, counts: np.ndarray, min_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge the smallest bin with its smaller neighbour until every bin holds ``min_count``."""
    edge_list, count_list = edges.tolist(), counts.tolist()
    while len(count_list) > 1:
        smallest = min(range(len(count_list)), key=count_list.__getitem__)
        if count_list[smallest] >= min_count:
            break
        if smallest == 0:
            other = 1
        elif smallest == len(count_list) - 1:
            other = smallest - 1
        else:  # the smaller neighbour; on a tie the lower one
            other = smallest - 1 if count_list[smallest - 1] <= count_list[smallest + 1] else smallest + 1
        low = min(smallest, other)
        count_list[low] += count_list.pop(low + 1)
        del edge_list[low]  # the edge between bins low and low + 1
    return np.array(edge_list, dtype=np.float64), np.array(count_list, dtype=np.int64)


@functools.lru_cache(maxsize=64)
def _critical_values(stride: int, arl: float, bins: int) -> Mapping[bool, tuple[float, ...]]:
    """Critical values by degrees of freedom (index 0: one bin, no test, never alarms), without and with ties.

    A pure function of the parameters: one table shared by the detectors that have them.
    """
    alpha = stride / arl
    return MappingProxyType({
        tied: (math.inf, *(chi2_isf(alpha / factor, df) for df in range(1, bins + 2)))
        for tied, factor in ((False, 1), (True, TIED_FACTOR))
    })


#: (stride, cells) -> ``(i // stride) * cells`` for ``i`` below the table's size, read-only
_OFFSET_TABLES: dict[tuple[int, int], np.ndarray] = {}
#: most offset tables kept (the least recently grown is dropped first)
_OFFSET_TABLES_KEPT = 64


def _block_offsets(stride: int, cells: int, length: int) -> np.ndarray:
    """``(i // stride) * cells`` for ``i < length`` at least: the (block, bin) cell of the ``i``-th value.

    One read-only table per ``(stride, cells)``, shared by every detector
    (a batch reads the slice of its alignment), grown to a power of two.
    """
    key = (stride, cells)
    table = _OFFSET_TABLES.get(key)
    if table is None or table.size < length:
        size = 1 << max(10, (length - 1).bit_length())
        table = (np.arange(size, dtype=np.intp) // stride) * cells
        table.setflags(write=False)
        _OFFSET_TABLES.pop(key, None)
        if len(_OFFSET_TABLES) >= _OFFSET_TABLES_KEPT:
            del _OFFSET_TABLES[next(iter(_OFFSET_TABLES))]
        _OFFSET_TABLES[key] = table
    return table


@register
class QuantileChiSquare(Detector):
    """Chi-square test of a sliding window's counts in the reference's quantile bins.

    Parameters
    ----------
    reference_size
        Number of values collected as the reference at the start and after each
        detection.
    window
        Number of latest values compared with the reference; a multiple of
        ``stride``.
    stride
        Evaluate every ``stride`` values once the window is full.
    bins
        Number of reference quantile bins (fewer when ties merge them).
    arl
        Target expected number of values between false alarms under no drift;
        default ``DEFAULT_ARL * family_tests``.
    reference_values
        A reference snapshot (for example from training data) to compare with
        from the start instead of the first ``reference_size`` values.
    reference_id
        The snapshot's id, reported in detections; required with
        ``reference_values``.

    Examples
    --------
    From value 3,000 on the stream splits into two modes at -0.9 and 0.9, the
    mean (0) and the variance (1) unchanged:

    >>> import numpy as np
    >>> from stream_monitor.detectors import build
    >>> rng = np.random.default_rng(7)
    >>> modes = rng.choice([-0.9, 0.9], 2000) + rng.normal(0, np.sqrt(0.19), 2000)
    >>> stream = np.concatenate([rng.normal(0, 1, 3000), modes])
    >>> detector = build({"name": "quantile_chi2"})
    >>> for detection in detector.update(stream):
    ...     print(detection.n_seen, detection.reference, round(detection.statistic, 1))
    3224 warmup:0-999 48.8
    """

    name = "quantile_chi2"
    kind = "numeric"
    reference_params = ("reference_size", "reference_values", "reference_id")

    #: defaults: see the module docstring for how they trade delay for cost
    DEFAULTS: Mapping[str, Any] = MappingProxyType({"reference_size": 1000, "window": 250, "stride": 25, "bins": 10})

    def __init__(
        self,
        *,
        reference_size: int,
        window: int,
        stride: int,
        bins: int,
        arl: float,
        reference_values: Sequence[float] | None = None,
        reference_id: str | None = None,
    ) -> None:
        self.reference_size = reference_size
        self.window = window
        self.stride = stride
        self.bins = bins
        self.arl = arl
        self.snapshot = None if reference_values is None else np.asarray(reference_values, dtype=np.float64)
        self.snapshot_id = reference_id
        self._blocks_per_window = window // stride
        # critical values by degrees of freedom, for references without and with ties (shared)
        self._critical = _critical_values(stride, arl, bins)
        self._reset()

    # --- construction -----------------------------------------------------------------

    @classmethod
    def from_spec(cls, params: Mapping[str, Any], *, family_tests: int = 1) -> QuantileChiSquare:
        name = cls.name
        check_known(name, params, ("reference_size", "window", "stride", "bins", "arl",
                                   "reference_values", "reference_id"))
        defaults = cls.DEFAULTS
        reference_size = check_integer(name, "reference_size", params.get("reference_size", defaults["reference_size"]),
                                       minimum=2, maximum=MAX_SAMPLE)
        window = check_integer(name, "window", params.get("window", defaults["window"]), minimum=1, maximum=MAX_SAMPLE)
        stride = check_integer(name, "stride", params.get("stride", defaults["stride"]), minimum=1, maximum=MAX_SAMPLE)
        if stride > window or window % stride:
            raise SpecError(name, "window", f"must be a multiple of stride ({stride}), got {window}")
        bins = check_integer(name, "bins", params.get("bins", defaults["bins"]), minimum=2, maximum=MAX_BINS)
        arl = params.get("arl", DEFAULT_ARL * family_tests)
        if isinstance(arl, bool) or not isinstance(arl, (int, float)) or not math.isfinite(arl) or arl < stride:
            raise SpecError(name, "arl", f"must be a finite number of values >= stride, got {arl!r}")
        snapshot, reference_id = check_reference_values(
            name, params.get("reference_values"), params.get("reference_id"), minimum=2, maximum=MAX_SAMPLE)
        return cls(
            reference_size=reference_size,
            window=window,
            stride=stride,
            bins=bins,
            arl=float(arl),
            reference_values=None if snapshot is None else snapshot.tolist(),
            reference_id=reference_id,
        )

    def _params(self) -> Mapping[str, Any]:
        params: dict[str, Any] = {
            "reference_size": self.reference_size,
            "window": self.window,
            "stride": self.stride,
            "bins": self.bins,
            "arl": self.arl,
        }
        if self.snapshot is not None:
            params["reference_values"] = self.snapshot.tolist()
            params["reference_id"] = self.snapshot_id
        return params

    # --- state ------------------------------------------------------------------------

    def _reset(self) -> None:
        self._n_seen = 0
        self._statistic = 0.0
        if self.snapshot is not None:
            self._set_reference(*self._bins_of(self.snapshot), f"snapshot:{self.snapshot_id}")
        else:
            self._start_warmup()

    def _bins_of(self, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """Edges, counts, and whether the reference has ties."""
        tied = bool(np.unique(reference).size < reference.size)
        expected = MIN_EXPECTED_TIED if tied else MIN_EXPECTED
        min_count = max(1, math.ceil(expected * reference.size / self.window))
        edges, counts = quantile_bins(reference, self.bins, min_count)
        return edges, counts, tied

    def _start_warmup(self) -> None:
        self._edges: np.ndarray | None = None
        self._reference_id = f"warmup:{self._n_seen}-{self._n_seen + self.reference_size - 1}"
        # the reference values collected; allocated at the first of them, dropped once it is set
        self._warmup: np.ndarray | None = None
        self._warmup_count = 0
        self._monitored = 0

    def _set_reference(self, edges: np.ndarray, counts: np.ndarray, tied: bool, reference_id: str) -> None:
        cells = counts.size
        self._edges = edges
        self._tied = tied
        self._reference_counts = counts
        self._reference_float = counts.astype(np.float64)
        self._reference_total = int(counts.sum())
        self._reference_id = reference_id
        self._threshold = self._critical[tied][cells - 1]
        self._scale = float(self._reference_total) * self.window
        self._scaled_threshold = self._threshold * self._scale
        self._reference_times_window = self._reference_float * self.window
        # the counts of the last blocks_per_window blocks, oldest first (zeros before the first)
        self._history = np.zeros((self._blocks_per_window, cells), dtype=np.int64)
        self._partial = np.zeros(cells, dtype=np.int64)  # the current, unfinished block
        self._warmup = None
        self._warmup_count = 0
        self._monitored = 0

    @property
    def n_seen(self) -> int:
        return self._n_seen

    @property
    def statistic(self) -> float:
        return self._statistic

    @property
    def threshold(self) -> float:
        """The critical value for the reference's bins (for ``bins`` bins before there is one)."""
        if self._edges is None:
            return self._critical[False][self.bins - 1]
        return self._threshold

    def state_dict(self) -> dict[str, Any]:
        reference = None
        blocks: list[list[int]] = []
        partial: list[int] = []
        if self._edges is not None:
            reference = {"edges": self._edges.tolist(), "counts": self._reference_counts.tolist(), "tied": self._tied}
            held = min(self._monitored // self.stride, self._blocks_per_window)
            blocks = self._history[self._blocks_per_window - held :].tolist()
            partial = self._partial.tolist()
        warmup = np.empty(0) if self._warmup is None else self._warmup[: self._warmup_count]
        return {
            "version": _STATE_VERSION,
            "n_seen": self._n_seen,
            "statistic": self._statistic,
            "reference_id": self._reference_id,
            "reference": reference,
            "warmup": encode_values(warmup),
            "monitored": self._monitored,
            "blocks": blocks,
            "partial": partial,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("version") not in _READABLE_VERSIONS:
            raise ValueError(f"unsupported quantile_chi2 state version {state.get('version')!r}")
        self._n_seen = int(state["n_seen"])
        reference = state["reference"]
        if reference is None:
            self._start_warmup()
            warmup = decode_values(state["warmup"])
            if warmup.size:
                self._warmup_buffer()[: warmup.size] = warmup
            self._warmup_count = int(warmup.size)
        else:
            edges = np.asarray(reference["edges"], dtype=np.float64).reshape(-1)
            counts = np.asarray(reference["counts"], dtype=np.int64)
            self._set_reference(edges, counts, bool(reference["tied"]), str(state["reference_id"]))
            self._monitored = int(state["monitored"])
            blocks = np.asarray(state["blocks"], dtype=np.int64).reshape(-1, counts.size)
            self._history[self._blocks_per_window - blocks.shape[0] :] = blocks
            self._partial = np.asarray(state["partial"], dtype=np.int64)
        self._reference_id = str(state["reference_id"])
        self._statistic = float(state["statistic"])

    # --- update -----------------------------------------------------------------------

    def update(self, values: np.ndarray | Sequence[Any]) -> list[Detection]:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if not np.isfinite(values).all():
            raise ValueError("quantile_chi2: values must be finite numbers")
        return self.update_finite(values)

    def update_finite(self, values: np.ndarray) -> list[Detection]:
        if self._edges is not None and values.size <= _CHUNK:  # the usual case: one pass
            consumed, detection = self._monitor(values, 0)
            if detection is None:
                return []
            return [detection] + self._update_rest(values, consumed)
        return self._update_rest(values, 0)

    def _update_rest(self, values: np.ndarray, position: int) -> list[Detection]:
        """Feed ``values[position:]``: collect a reference or monitor, as long as values remain."""
        detections: list[Detection] = []
        while position < values.size:
            if self._edges is None:
                position += self._collect_reference(values[position:])
            else:
                consumed, detection = self._monitor(values[position : position + _CHUNK], position)
                position += consumed
                if detection is not None:
                    detections.append(detection)
        return detections

    def _collect_reference(self, values: np.ndarray) -> int:
        taken = values[: self.reference_size - self._warmup_count]
        self._warmup_buffer()[self._warmup_count : self._warmup_count + taken.size] = taken
        self._warmup_count += taken.size
        self._n_seen += taken.size
        if self._warmup_count == self.reference_size:
            self._set_reference(*self._bins_of(self._warmup_buffer()), self._reference_id)
        return taken.size

    def _warmup_buffer(self) -> np.ndarray:
        """The buffer of reference values, allocated when the first of them arrives."""
        if self._warmup is None:
            self._warmup = reference_buffer(self.reference_size)
        return self._warmup

    def _monitor(self, values: np.ndarray, offset: int) -> tuple[int, Detection | None]:
        """Feed values until the end or the first detection; return (consumed, detection)."""
        stride, per_window = self.stride, self._blocks_per_window
        cells = self._reference_counts.size
        if _jit.ENABLED:
            return self._monitor_compiled(values, offset)
        codes = np.searchsorted(self._edges, values, side="right")
        into_block = self._monitored % stride
        finished = (into_block + values.size) // stride  # blocks this batch completes
        if not finished:
            self._partial += np.bincount(codes, minlength=cells)
            self._advance(values.size)
            return values.size, None
        # (block, bin) counts: row k is the k-th block this batch touches, the last one unfinished
        offsets = _block_offsets(stride, cells, into_block + values.size)[into_block : into_block + values.size]
        counts = np.bincount(codes + offsets, minlength=(finished + 1) * cells).reshape(finished + 1, cells)
        if into_block:
            counts[0] += self._partial
        # the window after new block j holds the per_window blocks up to it: a difference of
        # cumulative sums over the history (the last per_window blocks, zeros before the
        # first) followed by the new blocks
        timeline = np.concatenate([self._history, counts[:finished]])
        cumulative = np.cumsum(timeline, axis=0)
        window_counts = cumulative[per_window:] - cumulative[:finished]
        first_full = per_window - 1 - self._monitored // stride  # the first new block whose window is full
        hit = self._first_hit(window_counts if first_full <= 0 else window_counts[first_full:])
        if hit is None:
            # in place: views would keep this batch's whole timeline and counts alive, and
            # new arrays would be long-lived allocations among each batch's temporaries
            self._history[:] = timeline[finished:]
            self._partial[:] = counts[finished]
            self._advance(values.size)
            return values.size, None
        consumed = (max(first_full, 0) + hit + 1) * stride - into_block
        self._advance(consumed)
        detection = self._detection(offset + consumed - 1)
        self._start_warmup()
        return consumed, detection

    def _monitor_compiled(self, values: np.ndarray, offset: int) -> tuple[int, Detection | None]:
        """:meth:`_monitor` with the block counts made in one compiled loop (:mod:`._jit`): the same counts."""
        stride = self.stride
        into_block = self._monitored % stride
        finished = (into_block + values.size) // stride
        window_counts = np.empty((finished, self._reference_counts.size), dtype=np.int64)
        _jit.window_counts(values, self._edges, self._history, self._partial, into_block, stride, window_counts)
        first_full = max(self._blocks_per_window - 1 - self._monitored // stride, 0)
        if first_full >= finished:
            self._advance(values.size)
            return values.size, None
        statistic = np.empty(1)
        hit = _jit.first_chi_square_hit(window_counts[first_full:], self._reference_times_window,
                                        float(self._reference_total), self._reference_float,
                                        self._scaled_threshold, statistic)
        self._statistic = float(statistic[0]) / self._scale
        if hit < 0:
            self._advance(values.size)
            return values.size, None
        consumed = (first_full + hit + 1) * stride - into_block
        self._advance(consumed)
        detection = self._detection(offset + consumed - 1)
        self._start_warmup()
        return consumed, detection

    def _first_hit(self, window_counts: np.ndarray) -> int | None:
        """Index of the first row of window counts over the threshold (None if none); sets the gauge."""
        if not window_counts.shape[0]:
            return None
        # n * m times the homogeneity chi-square, against n * m times the threshold
        difference = self._reference_times_window - window_counts * float(self._reference_total)
        scaled = (difference * difference / (self._reference_float + window_counts)).sum(axis=1)
        over = scaled >= self._scaled_threshold
        if not over.any():
            self._statistic = float(scaled[-1]) / self._scale
            return None
        hit = int(over.argmax())
        self._statistic = float(scaled[hit]) / self._scale
        return hit

    def _advance(self, count: int) -> None:
        self._monitored += count
        self._n_seen += count

    def _detection(self, index: int) -> Detection:
        degrees = self._reference_counts.size - 1
        return Detection(
            index=index,
            n_seen=self._n_seen - 1,
            statistic=self._statistic,
            threshold=self._threshold,
            p_value=chi2_sf(self._statistic, degrees),
            window={"reference": self._reference_total, "current": self.window},
            reference=self._reference_id,
        )
