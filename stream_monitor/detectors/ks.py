"""Windowed two-sample Kolmogorov-Smirnov test: a reference sample against a sliding window.

The detector compares a fixed reference sample (the first ``reference_size``
values of the signal, or a snapshot the caller supplies) with the latest
``window`` values, every ``stride`` values. The statistic is exactly
``scipy.stats.ks_2samp(reference, window).statistic``, so it sees any change of
distribution (location, spread, shape), not only of the mean.

Fast path
---------
The two-sample statistic depends only on how the window's values interleave
with the reference's. Each arriving value is therefore coded once, by binary
search, as the reference "cell" it falls in: ``2k`` for the open gap below the
k-th distinct reference value, ``2k + 1`` for a tie with it. The detector keeps
the window's codes in a ring buffer; an evaluation needs only the histogram of
the window over the ``2K + 1`` cells, and

    D = max_c | R(c) / n - W(c) / m |

where ``R`` and ``W`` are the cumulative reference and window counts up to cell
``c``. In integer lattice units (multiply by ``lcm(n, m)``) the difference is
``R(c) * m/g - W(c) * n/g`` with ``g = gcd(n, m)``, so the statistic and the
threshold are compared exactly, with no floating-point ties. A batch is
evaluated at all its evaluation points at once: the window histograms of
successive evaluations differ by ``stride`` additions and removals, so they are
one cumulative sum over a matrix of histogram deltas.

Calibration
-----------
Under no drift, with continuous data, the two-sample statistic of a reference
of ``n`` values and a disjoint window of ``m`` values of the same distribution
has a known distribution that depends on ``n`` and ``m`` only (it is
distribution-free), including the randomness of the reference. The critical
value is the smallest lattice value ``d`` with

    P(D_{n,m} >= d) <= stride / arl

computed with scipy's exact two-sample null distribution (the Hodges lattice
path count ``ks_2samp`` uses for its exact p-value; Smirnov's asymptotic
``kstwo`` for sample sizes it cannot handle). There are ``arl / stride``
evaluations in ``arl`` values, so by linearity of expectation the expected
number of evaluations above the threshold, and hence of false alarms, in
``arl`` values is at most one, however strongly overlapping windows are
correlated (a union bound). The bound is conservative: overlapping windows
exceed in clusters, so the measured run length under no drift is longer than
``arl`` (see ``tests/detectors/test_ks.py``). With ties in the data the
statistic is stochastically smaller and the bound still holds. Critical values
are cached in-process per ``(n, m, stride, arl)``; computing one takes about
20 ms.

Reference ids
-------------
Detections name their reference ``"warmup:<first>-<last>"`` (0-based
positions in the signal of the reference's first and last values, inclusive)
or ``"snapshot:<id>"`` for a snapshot given with ``reference_id``.

Re-arming
---------
After a detection the detector forgets its reference and window and collects a
new reference from the values that follow (``reference_size`` of them), so one
change gives one detection and later detections compare against post-change
data.

Defaults
--------
``reference_size=1000, window=300, stride=25``. On seeded streams
(``tests/detectors/test_ks.py``) a change of spread from 1 to 2.5 with the mean
unchanged is detected after a median of about 200 values at ``arl = 10**7``
and about 250 at ``5 * 10**8`` (a model with 50 detectors); no drift gives a
measured run length 3 to 5 times ``arl``. An evaluation costs
``O(window + distinct reference values)``, about 270 ns per value with the
defaults in batches of 1,000 (``bench/detectors.py``). A longer window sees
smaller changes but later; ``stride`` trades cost for up to ``stride`` values
of extra delay. The gauge ``statistic`` is the last evaluation's; detections
carry the statistic exactly as ``ks_2samp`` reports it and its p-value.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from stream_monitor.detectors import DEFAULT_ARL, register
from stream_monitor.detectors.base import (
    Detection,
    Detector,
    SpecError,
    check_integer,
    check_known,
    check_reference_values,
)

__all__ = ["WindowedKS", "critical_lattice_statistic"]


#: largest reference or window accepted (bounds memory and evaluation cost)
MAX_SAMPLE = 100_000
#: ks_2samp computes exact p-values (and rounds the statistic to the lattice) up to this size
_SCIPY_MAX_EXACT = 10_000
#: evaluation matrices are built in chunks of about this many cells
_CHUNK_CELLS = 1 << 18


@functools.cache
def _scipy_stats() -> tuple[Any, Any]:
    """``scipy.stats`` and its exact two-sample null distribution (None if scipy moved it).

    A large import (bench/memory.py): made by this detector only, not by the defaults.
    """
    from scipy import stats

    try:  # scipy's exact two-sample null distribution, as used by ks_2samp itself
        from scipy.stats._stats_py import _attempt_exact_2kssamp
    except ImportError:  # pragma: no cover - scipy moved it; the asymptotic form stays valid
        _attempt_exact_2kssamp = None
    return stats, _attempt_exact_2kssamp


def _null_sf(n: int, m: int, h: int) -> float:
    """P(D_{n,m} >= h / lcm(n, m)) under no drift, two-sided."""
    g = math.gcd(n, m)
    lcm = n // g * m
    if h <= 0:
        return 1.0
    d = h / lcm
    stats, _attempt_exact_2kssamp = _scipy_stats()
    if _attempt_exact_2kssamp is not None and max(n, m) <= _SCIPY_MAX_EXACT:
        success, _, prob = _attempt_exact_2kssamp(n, m, g, d, "two-sided")
        if success:
            return float(prob)
    effective = n * m / (n + m)
    return float(stats.kstwo.sf(d, round(effective)))


@functools.lru_cache(maxsize=256)
def critical_lattice_statistic(n: int, m: int, alpha: float) -> int:
    """Smallest ``h`` with ``P(D_{n,m} >= h / lcm(n, m)) <= alpha``.

    Returns ``lcm(n, m) + 1`` (never reached) when even ``D = 1`` is more
    likely than ``alpha``.
    """
    lcm = n // math.gcd(n, m) * m
    low, high = 0, lcm + 1  # sf(low) > alpha, sf(high) = 0 <= alpha
    if _null_sf(n, m, lcm) > alpha:
        return lcm + 1
    high = lcm
    while high - low > 1:
        middle = (low + high) // 2
        if _null_sf(n, m, middle) <= alpha:
            high = middle
        else:
            low = middle
    return high


@register
class WindowedKS(Detector):
    """Two-sample KS test of a sliding window against a reference sample.

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
        default ``DEFAULT_ARL * family_tests``. Ignored when ``threshold`` is set.
    threshold
        Explicit critical value of the statistic in ``(0, 1]`` instead of the
        calibrated one.
    reference_values
        A reference snapshot (for example from training data) to compare with
        from the start instead of the first ``reference_size`` values.
    reference_id
        The snapshot's id, reported in detections; required with
        ``reference_values``.

    Examples
    --------
    The spread of the stream grows from 1 to 2.5 at value 3,000, the mean stays
    at 0:

    >>> import numpy as np
    >>> from stream_monitor.detectors import build
    >>> rng = np.random.default_rng(7)
    >>> stream = np.concatenate([rng.normal(0, 1, 3000), rng.normal(0, 2.5, 2000)])
    >>> detector = build({"name": "ks"})
    >>> for detection in detector.update(stream):
    ...     print(detection.n_seen, detection.reference, round(detection.statistic, 3))
    3199 warmup:0-999 0.183
    """

    name = "ks"
    kind = "numeric"
    reference_params = ("reference_size", "reference_values", "reference_id")

    #: defaults: see the module docstring for how they trade delay for cost
    DEFAULTS: Mapping[str, Any] = MappingProxyType({"reference_size": 1000, "window": 300, "stride": 25})

    def __init__(
        self,
        *,
        reference_size: int,
        window: int,
        stride: int,
        arl: float,
        threshold: float | None = None,
        reference_values: Sequence[float] | None = None,
        reference_id: str | None = None,
    ) -> None:
        self.reference_size = reference_size
        self.window = window
        self.stride = stride
        self.arl = arl
        self.explicit_threshold = threshold
        self.snapshot = None if reference_values is None else np.asarray(reference_values, dtype=np.float64)
        self.snapshot_id = reference_id
        self._reset()

    # --- construction -----------------------------------------------------------------

    @classmethod
    def from_spec(cls, params: Mapping[str, Any], *, family_tests: int = 1) -> WindowedKS:
        name = cls.name
        check_known(name, params, ("reference_size", "window", "stride", "arl", "threshold",
                                   "reference_values", "reference_id"))
        defaults = cls.DEFAULTS
        reference_size = check_integer(name, "reference_size", params.get("reference_size", defaults["reference_size"]),
                                       minimum=2, maximum=MAX_SAMPLE)
        window = check_integer(name, "window", params.get("window", defaults["window"]), minimum=2, maximum=MAX_SAMPLE)
        stride = check_integer(name, "stride", params.get("stride", defaults["stride"]), minimum=1, maximum=MAX_SAMPLE)
        if stride > window:
            raise SpecError(name, "stride", f"must not exceed window ({window}), got {stride}")
        arl = params.get("arl", DEFAULT_ARL * family_tests)
        if isinstance(arl, bool) or not isinstance(arl, (int, float)) or not math.isfinite(arl) or arl < stride:
            raise SpecError(name, "arl", f"must be a finite number of values >= stride, got {arl!r}")
        threshold = params.get("threshold")
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1
        ):
            raise SpecError(name, "threshold", f"must be a number in (0, 1], got {threshold!r}")
        reference_values = params.get("reference_values")
        reference_id = params.get("reference_id")
        snapshot, reference_id = check_reference_values(
            name, reference_values, reference_id, minimum=2, maximum=MAX_SAMPLE)
        if snapshot is not None:
            reference_values = snapshot.tolist()
        detector = cls(
            reference_size=reference_size,
            window=window,
            stride=stride,
            arl=float(arl),
            threshold=None if threshold is None else float(threshold),
            reference_values=reference_values,
            reference_id=reference_id,
        )
        for size in {reference_size, len(reference_values or ())} - {0}:
            if threshold is None and detector._critical(size) > size // math.gcd(size, window) * window:
                raise SpecError(name, "window", f"reference {size} and window {window} cannot reach arl {arl:g}")
        return detector

    def _params(self) -> Mapping[str, Any]:
        params: dict[str, Any] = {
            "reference_size": self.reference_size,
            "window": self.window,
            "stride": self.stride,
            "arl": self.arl,
        }
        if self.explicit_threshold is not None:
            params["threshold"] = self.explicit_threshold
        if self.snapshot is not None:
            params["reference_values"] = self.snapshot.tolist()
            params["reference_id"] = self.snapshot_id
        return params

    def _critical(self, n: int) -> int:
        """Critical statistic in lattice units ``1 / lcm(n, window)``."""
        lcm = n // math.gcd(n, self.window) * self.window
        if self.explicit_threshold is not None:
            # the smallest lattice value at or above the threshold (integer, so exact)
            return max(1, math.ceil(self.explicit_threshold * lcm - 1e-9))
        return critical_lattice_statistic(n, self.window, self.stride / self.arl)

    # --- state ------------------------------------------------------------------------

    def _reset(self) -> None:
        self._n_seen = 0
        self._statistic = 0.0
        self._window_values = np.zeros(self.window, dtype=np.float64)
        self._window_codes = np.zeros(self.window, dtype=np.int64)
        self._monitored = 0  # values added to the window since the reference was set
        if self.snapshot is not None:
            self._set_reference(self.snapshot, f"snapshot:{self.snapshot_id}")
        else:
            self._start_warmup()

    def _start_warmup(self) -> None:
        self._reference: np.ndarray | None = None
        self._reference_id = f"warmup:{self._n_seen}-{self._n_seen + self.reference_size - 1}"
        self._warmup: list[np.ndarray] = []
        self._warmup_count = 0
        self._monitored = 0

    def _set_reference(self, values: np.ndarray, reference_id: str) -> None:
        reference = np.sort(np.asarray(values, dtype=np.float64))
        n, m = reference.size, self.window
        g = math.gcd(n, m)
        distinct, counts = np.unique(reference, return_counts=True)
        cells = 2 * distinct.size + 1
        # cumulative reference count at each cell: gaps carry the count below, ties include the tie
        cumulative = np.zeros(cells, dtype=np.int64)
        cumulative[1::2] = np.cumsum(counts)
        cumulative[2::2] = cumulative[1::2]
        self._reference = reference
        self._reference_id = reference_id
        self._distinct = distinct
        self._lcm = n // g * m
        self._reference_step = m // g
        self._window_step = n // g
        self._dtype = np.int32 if self._lcm < 2**31 - 1 else np.int64
        self._reference_lattice = (cumulative * self._reference_step).astype(self._dtype)
        self._critical_lattice = self._critical(n)
        self._warmup = []
        self._warmup_count = 0
        self._monitored = 0

    def _codes(self, values: np.ndarray) -> np.ndarray:
        distinct = self._distinct
        below = np.searchsorted(distinct, values, side="left")
        tie = distinct[np.minimum(below, distinct.size - 1)] == values
        return 2 * below + tie

    @property
    def n_seen(self) -> int:
        return self._n_seen

    @property
    def statistic(self) -> float:
        return self._statistic

    @property
    def threshold(self) -> float:
        n = self.reference_size if self._reference is None else self._reference.size
        lcm = n // math.gcd(n, self.window) * self.window
        return self._critical(n) / lcm

    def state_dict(self) -> dict[str, Any]:
        warmup = np.concatenate(self._warmup) if self._warmup else np.empty(0)
        return {
            "version": 1,
            "n_seen": self._n_seen,
            "statistic": self._statistic,
            "reference_id": self._reference_id,
            "reference": None if self._reference is None else self._reference.tolist(),
            "warmup": warmup.tolist(),
            "window": self._window_in_order().tolist(),
            "monitored": self._monitored,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != 1:
            raise ValueError(f"unsupported ks state version {state.get('version')!r}")
        self._n_seen = int(state["n_seen"])
        self._statistic = float(state["statistic"])
        if state["reference"] is None:
            self._start_warmup()
            warmup = np.asarray(state["warmup"], dtype=np.float64)
            self._warmup = [warmup] if warmup.size else []
            self._warmup_count = int(warmup.size)
        else:
            self._set_reference(np.asarray(state["reference"], dtype=np.float64), str(state["reference_id"]))
        self._reference_id = str(state["reference_id"])
        self._monitored = int(state["monitored"])
        window = np.asarray(state["window"], dtype=np.float64)
        slots = (np.arange(self._monitored - window.size, self._monitored)) % self.window
        self._window_values[slots] = window
        if self._reference is not None and window.size:
            self._window_codes[slots] = self._codes(window)

    # --- update -----------------------------------------------------------------------

    def update(self, values: np.ndarray | Sequence[Any]) -> list[Detection]:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if not np.isfinite(values).all():
            raise ValueError("ks: values must be finite numbers")
        detections: list[Detection] = []
        position = 0
        while position < values.size:
            if self._reference is None:
                position += self._collect_reference(values[position:])
            else:
                consumed, detection = self._monitor(values[position:], position)
                position += consumed
                if detection is not None:
                    detections.append(detection)
        return detections

    def _collect_reference(self, values: np.ndarray) -> int:
        taken = values[: self.reference_size - self._warmup_count]
        self._warmup.append(taken.copy())
        self._warmup_count += taken.size
        self._n_seen += taken.size
        if self._warmup_count == self.reference_size:
            self._set_reference(np.concatenate(self._warmup), self._reference_id)
        return taken.size

    def _monitor(self, values: np.ndarray, offset: int) -> tuple[int, Detection | None]:
        """Feed values until the end or the first detection; return (consumed, detection)."""
        m, stride = self.window, self.stride
        cells = self._reference_lattice.size
        # bound the work per call (and the work wasted after a detection) to one chunk
        chunk = max(1, _CHUNK_CELLS // (cells + m))
        values = values[: chunk * stride + m]
        codes = self._codes(values)
        filled = min(self._monitored, m)
        start = self._monitored % m
        order = np.arange(start - filled, start) % m
        # timeline[k] is the code of the (monitored - filled + k)-th monitored value
        timeline = np.concatenate([self._window_codes[order], codes])
        first_value = self._monitored - filled  # monitored-count of timeline[0]
        # evaluation after monitored-count t (1-based) when t >= m and (t - m) % stride == 0
        t_first = max(m, self._monitored + 1)
        t_first += (-(t_first - m)) % stride
        t_last = self._monitored + values.size
        ends = np.arange(t_first, t_last + 1, stride) - first_value  # exclusive timeline ends
        hit = np.empty(0, dtype=np.intp)
        if ends.size:
            lattice = self._evaluate(timeline, ends, cells)
            hit = np.flatnonzero(lattice >= self._critical_lattice)
            # the gauge; within float rounding of ks_2samp for large samples, exact otherwise
            self._statistic = int(lattice[hit[0] if hit.size else -1]) / self._lcm
        if not hit.size:
            self._append_window(values, codes)
            return values.size, None
        consumed = int(ends[hit[0]]) - filled
        self._append_window(values[:consumed], codes[:consumed])
        detection = self._detection(offset + consumed - 1, int(lattice[hit[0]]))
        self._start_warmup()
        return consumed, detection

    def _evaluate(self, timeline: np.ndarray, ends: np.ndarray, cells: int) -> np.ndarray:
        """Statistic in lattice units for the windows ``timeline[end - m:end]``."""
        m = self.window
        span = timeline[ends[0] - m : ends[-1]]
        # Continuous data never ties the reference; then the tie cells can be folded into
        # the gaps, which halves the work (a tie cell's value is the gap below's, plus the
        # reference jump).
        tied = bool((span & 1).any())
        if not tied:
            timeline = timeline >> 1
            cells = cells // 2 + 1
        rows = ends.size
        # one histogram per evaluation, all in one bincount over row-offset cell numbers
        windows = sliding_window_view(timeline, m)[ends - m]
        windows = windows + (np.arange(rows) * cells)[:, None]
        counts = np.bincount(windows.reshape(-1), minlength=rows * cells).reshape(rows, cells)
        window_lattice = np.cumsum(counts, axis=1, dtype=self._dtype)
        window_lattice *= self._window_step
        if tied:
            difference = self._reference_lattice - window_lattice
            return np.maximum(difference.max(axis=1), -difference.min(axis=1))
        gaps = self._reference_lattice[0::2]
        at_gap_ends = gaps - window_lattice
        at_ties = gaps[1:] - window_lattice[:, :-1]
        return np.maximum(
            np.maximum(at_gap_ends.max(axis=1), -at_gap_ends.min(axis=1)),
            np.maximum(at_ties.max(axis=1), -at_ties.min(axis=1)),
        )

    def _append_window(self, values: np.ndarray, codes: np.ndarray) -> None:
        m = self.window
        keep = min(values.size, m)
        slots = (self._monitored + values.size - keep + np.arange(keep)) % m
        self._window_values[slots] = values[values.size - keep :]
        self._window_codes[slots] = codes[values.size - keep :]
        self._monitored += values.size
        self._n_seen += values.size

    def _float_statistic(self, lattice: int) -> float:
        """The statistic as ``ks_2samp`` reports it, from its exact lattice value."""
        assert self._reference is not None
        n, m = self._reference.size, self.window
        if max(n, m) <= _SCIPY_MAX_EXACT:
            return lattice / self._lcm  # ks_2samp rounds to the lattice in its exact mode
        # ks_2samp's asymptotic mode reports the float difference of the two ECDFs as it
        # computed them; recompute it the same way (rare: only for large snapshots)
        window = np.sort(self._window_in_order())
        both = np.concatenate([self._reference, window])
        difference = np.searchsorted(self._reference, both, "right") / n - np.searchsorted(window, both, "right") / m
        return float(max(min(max(-difference.min(), 0.0), 1.0), difference.max()))

    def _window_in_order(self) -> np.ndarray:
        filled = min(self._monitored, self.window)
        return self._window_values[np.arange(self._monitored - filled, self._monitored) % self.window]

    def _detection(self, index: int, lattice: int) -> Detection:
        assert self._reference is not None
        self._statistic = self._float_statistic(lattice)
        # the exact (or, for large samples, asymptotic) p-value, only when there is a detection
        stats, _ = _scipy_stats()
        p_value = float(stats.ks_2samp(self._reference, self._window_in_order()).pvalue)
        return Detection(
            index=index,
            n_seen=self._n_seen - 1,
            statistic=self._statistic,
            threshold=self._critical_lattice / self._lcm,
            p_value=p_value,
            window={"reference": int(self._reference.size), "current": self.window},
            reference=self._reference_id,
        )
