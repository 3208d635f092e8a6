"""Scale: two-sided detection of a change in the spread of a numeric signal.

Method
------
The first ``warmup`` values form the reference. Its median ``m`` centres
every value, and the distances ``d = |x - m|`` are cut into bins at
quantiles of the reference distances (``LEVELS``, from 2% to 99.8%, fine in
both tails; a level is dropped when fewer than ``MIN_TAIL`` reference values
would lie on its far side, and equal cut points merge, so integer data with
ties gets one bin per tied value). A value falls in bin ``i`` when exactly
``i`` cut points lie below its distance (a distance equal to a cut point
falls in the lower bin); the reference's bin counts ``c_i`` are counted with
the same rule, so ties are handled consistently.

For each design ratio ``r`` in ``ratios`` (by default 2 for a wider and 1/2
for a narrower stream) the detector runs a multinomial CUSUM

    S = max(0, S + log(q_i / p_i))        for a value in bin i

where ``p_i`` is the reference's share of bin ``i`` and ``q_i`` its share
under the reference *stretched* by ``r`` about its median (the empirical
distribution of ``r d``): the optimal chart for "the spread changed by the
factor ``r``" that assumes nothing about the shape of the distribution
(both shares smoothed by half a count; the outermost bin for ``r > 1``, the
innermost for ``r < 1``, gets at least ``SPILL`` = 5% of ``q``, so a
constant reference, which no stretch changes, still has a chart for a wider
stream). A wider stream pushes values into
the outer bins, a narrower one into the inner bins; a shift of the mean
moves values outwards too, so this chart also sees large mean shifts.

Scores
------
With ``transform="auto"`` (the default) a reference whose values all lie in
``[0, 1]`` (a model's scores, a rate) is compared on the logit scale,
``log(x / (1 - x))`` with ``x`` clipped to ``[1e-6, 1 - 1e-6]``, and so is
every value after it: a score whose spread grows piles up near 0 and 1,
where the raw distance to the median can barely grow, while its logit
spreads out. On ``bench/quality.py``'s model, a prediction whose weights grow
1.5-fold is seen after a median of 151 values on the logit scale and 4,076
on the raw one (10 seeds). ``"none"`` keeps the raw scale, ``"logit"``
forces the logit. The calibration is the same on either scale (it assumes
no shape).

Calibration
-----------
The increments take finitely many values, so the false-alarm rate of each
chart is Wald's exponential-tilt approximation averaged over the posterior
``Dirichlet(c + 1/2)`` of the true bin probabilities
(:func:`~stream_monitor.detectors.calibration.multinomial_cusum_threshold`).
The bins are cut at the reference's own order statistics, so the true bin
probabilities follow that posterior for any continuous distribution (and the
usual multinomial posterior for atoms): the false-alarm rate does not depend
on the shape of the stream, heavy tails and ties included. The target
``arl`` (default ``DEFAULT_ARL * family_tests``) is split equally between the
charts. Thresholds are computed when a reference completes (about 0.1 s per
chart) and are a pure function of the reference.

Increments are kept in fixed point (integers in units of ``2**-20``) and
the thresholds are calibrated for the rounded increments, so a batch gives
exactly the result of feeding its values one at a time.

Measured
--------
``bench/scale.py`` (20 seeds, ``family_tests=44``): the standard deviation
growing 2.5-fold is detected after a median of 16.5 values (quartiles
15-20; the information bound at this threshold is about 12), shrinking to
0.4 after 45.5 (bound about 41). A Gaussian chart of ``z**2`` (the
log-likelihood ratio for Gaussian values, calibrated for them) is faster on
Gaussian values (10 and 44) but raises about 900 false alarms in 2 million
lognormal or Student-t3 values where this chart raises none; at
``arl = 10**4`` this chart raises 40 to 100 false alarms per 2 million
values on Gaussian, lognormal, Student-t3, uniform and zero-inflated
Poisson streams, against 200 allowed. About 45 ns per value in batches of
1,000 (Page-Hinkley: 35 in the same run).

Re-arming and references
------------------------
After a detection the charts restart and the next ``warmup`` values (all
after the detection) form a new reference, so one change gives one alert.
The reference can also be a snapshot (``reference_values`` with
``reference_id``), used from the first value on. Detections name their
reference ``"warmup:<first>-<last>"`` (0-based positions in the signal,
inclusive) or ``"snapshot:<id>"``.

Examples
--------
>>> import numpy as np
>>> from stream_monitor.detectors import DetectorSpec, build
>>> rng = np.random.default_rng(42)
>>> stream = np.concatenate([rng.normal(0.0, 1.0, 3000), rng.normal(0.0, 2.5, 1000)])
>>> detector = build(DetectorSpec("scale"), family_tests=44)
>>> for detection in detector.update(stream):
...     print(f"change detected at index {detection.index}")
change detected at index 3010

References
----------
E. S. Page (1954). Continuous inspection schemes. Biometrika 41, 100-115.
A. Wald (1947). Sequential Analysis. Wiley (the exponential-tilt ARL).
H. A. David, H. N. Nagaraja (2003). Order Statistics, 3rd ed. Wiley
(spacings of uniform order statistics are Dirichlet).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stream_monitor.detectors import _jit
from stream_monitor.detectors import DEFAULT_ARL, register
from stream_monitor.detectors.base import (
    Detection,
    Detector,
    SpecError,
    check_choice,
    check_integer,
    check_known,
    check_number,
    check_reference_values,
    decode_values,
    encode_values,
    reference_buffer,
)
from stream_monitor.detectors.calibration import multinomial_cusum_threshold

__all__ = ["LEVELS", "MIN_TAIL", "SPILL", "Scale", "design_bins"]

#: quantile levels of the reference distances at which the bins are cut
LEVELS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998)
#: fewest reference values on the far side of a cut point (rarer bins are too uncertain)
MIN_TAIL = 4
#: least share of a design alternative in its outermost (wider) or innermost (narrower) bin
SPILL = 0.05
#: most values a reference snapshot may hold
MAX_SNAPSHOT = 1_000_000
# Fixed-point unit of the chart sums: exact integer arithmetic makes batch and
# one-at-a-time updates agree bit for bit.
_SCALE = float(2**20)
# Values per vectorised step: bounds the work wasted past a detection.
_CHUNK = 4096
_STATE_VERSION = 3
#: state versions :meth:`Scale.load_state_dict` reads (2: warm-up values as a list of numbers)
_READABLE_VERSIONS = (2, _STATE_VERSION)
_TRANSFORMS = ("auto", "none", "logit")
#: scores are clipped this far inside [0, 1] before their logit
LOGIT_EPSILON = 1e-6
# The threshold of a chart that is off: no sum of non-positive increments reaches it.
_NEVER = 2**62


@register
class Scale(Detector):
    """Two-sided multinomial CUSUM on reference quantile bins of ``|x - median|``.

    Parameters
    ----------
    warmup
        Values in each reference sample (at least 200).
    ratios
        Design scale ratios, one chart each (positive, not 1, at most 6):
        above 1 for a wider stream, below 1 for a narrower one.
    arl
        Target average number of values between false alarms.
    transform
        ``"auto"`` (logit when every reference value lies in [0, 1]),
        ``"none"`` or ``"logit"``.
    reference_values, reference_id
        A reference snapshot and its id (both or neither).
    """

    name = "scale"
    kind = "numeric"
    reference_params = ("warmup", "reference_values", "reference_id")

    def __init__(
        self,
        *,
        warmup: int = 2000,
        ratios: Sequence[float] = (2.0, 0.5),
        arl: float = DEFAULT_ARL,
        transform: str = "auto",
        reference_values: Sequence[float] | None = None,
        reference_id: str | None = None,
    ) -> None:
        name = self.name
        self.transform = check_choice(name, "transform", transform, _TRANSFORMS)
        self.warmup = check_integer(name, "warmup", warmup, minimum=200, maximum=10**6)
        if isinstance(ratios, (str, bytes)) or not isinstance(ratios, Sequence):
            raise SpecError(name, "ratios", "must be a list of positive numbers other than 1")
        if not 1 <= len(ratios) <= 6:
            raise SpecError(name, "ratios", "must hold between 1 and 6 values")
        self.ratios = tuple(check_number(name, "ratios", r, low=0.0, high=100.0, open_low=True) for r in ratios)
        if any(r == 1.0 for r in self.ratios) or min(self.ratios) < 0.01:
            raise SpecError(name, "ratios", "each must lie in [0.01, 100] and differ from 1")
        if len(set(self.ratios)) != len(self.ratios):
            raise SpecError(name, "ratios", "values must be distinct")
        self.arl = check_number(name, "arl", arl, low=10.0, high=1e18)
        self.snapshot, self.snapshot_id = check_reference_values(
            name, reference_values, reference_id, minimum=200, maximum=MAX_SNAPSHOT
        )
        self._reset()

    @classmethod
    def from_spec(cls, params: Mapping[str, Any], *, family_tests: int = 1) -> Scale:
        """Build from spec parameters; a default ``arl`` is multiplied by ``family_tests``."""
        params = dict(params)
        check_known(cls.name, params, ("warmup", "ratios", "arl", "transform", "reference_values",
                                       "reference_id"))
        params.setdefault("arl", DEFAULT_ARL * family_tests)
        return cls(**params)

    def _params(self) -> Mapping[str, Any]:
        params: dict[str, Any] = {"warmup": self.warmup, "ratios": self.ratios, "arl": self.arl,
                                  "transform": self.transform}
        if self.snapshot is not None:
            params["reference_values"] = self.snapshot.tolist()
            params["reference_id"] = self.snapshot_id
        return params

    def _reset(self) -> None:
        """Build all mutable state: a fresh detector that has seen nothing."""
        self._n_seen = 0
        # the warm-up values; allocated while a reference is collected, dropped once it is set
        self._buffer: np.ndarray | None = None
        self._filled = 0
        self._reference_start = 0
        self._from_snapshot = False
        self._sums = np.zeros(len(self.ratios), dtype=np.int64)
        self._design: dict[str, Any] | None = None
        if self.snapshot is not None:
            self._use_design(self._designed(self.snapshot, "reference_values"), from_snapshot=True)

    # -- the design -------------------------------------------------------------

    def _designed(self, values: np.ndarray, field: str) -> dict[str, Any]:
        """Bins, fixed-point increments and thresholds for a reference.

        A snapshot (``field="reference_values"``) no threshold can calibrate is
        a :class:`SpecError`; for a warm-up that chart is off instead, so an
        update never raises.
        """
        logit = self.transform == "logit" or (
            self.transform == "auto" and float(values.min()) >= 0.0 and float(values.max()) <= 1.0)
        median, cuts, counts, increments = design_bins(_logit(values) if logit else values, self.ratios)
        fixed = np.rint(increments * _SCALE).astype(np.int64)
        chart_arl = self.arl * len(self.ratios)
        thresholds = []
        for row in fixed:
            if row.max() <= 0:
                # a chart that cannot rise (a narrower stream than a constant reference): off
                thresholds.append(_NEVER)
                continue
            try:
                threshold = multinomial_cusum_threshold(
                    tuple(counts.tolist()), tuple((row / _SCALE).tolist()), chart_arl
                )
            except ValueError:
                if field == "reference_values":  # a snapshot: the config is at fault, say so when it loads
                    raise SpecError(self.name, field, f"a reference of {values.size} values cannot reach arl "
                                    f"{self.arl:g} with ratios {self.ratios}") from None
                # a warm-up that no threshold calibrates (too uncertain): that chart stays off
                thresholds.append(_NEVER)
                continue
            thresholds.append(math.floor(threshold * _SCALE))
        return {
            "logit": logit,
            "median": median,
            "cuts": cuts.tolist(),
            "counts": counts.tolist(),
            "increments": fixed.tolist(),
            "thresholds": thresholds,
        }

    def _use_design(self, design: dict[str, Any], *, from_snapshot: bool) -> None:
        # kept as arrays (the design's lists of Python numbers took about 2.5 KiB);
        # :meth:`_design_state` gives the lists back for a checkpoint
        self._design = {"logit": bool(design["logit"]), "median": float(design["median"])}
        self._logit = bool(design["logit"])
        self._median = float(design["median"])
        self._cuts = np.asarray(design["cuts"], dtype=np.float64)
        self._counts = np.asarray(design["counts"], dtype=np.int64)
        increments = np.asarray(design["increments"], dtype=np.int64)
        # one more bin, adding 0: the leading entry of each chunk's walk
        self._table = np.concatenate([increments, np.zeros((len(increments), 1), dtype=np.int64)], axis=1)
        self._fixed_thresholds = np.asarray(design["thresholds"], dtype=np.int64)
        self._threshold_list = self._fixed_thresholds.tolist()
        self._from_snapshot = from_snapshot
        self._sums[:] = 0

    # -- gauges -------------------------------------------------------------

    @property
    def n_seen(self) -> int:
        return self._n_seen

    def _closest_chart(self) -> int:
        return int(np.argmax(self._sums / self._fixed_thresholds))

    @property
    def statistic(self) -> float:
        if self._design is None:
            return 0.0
        return float(self._sums[self._closest_chart()]) / _SCALE

    @property
    def threshold(self) -> float:
        """The closest chart's threshold; infinite while the reference is collected."""
        if self._design is None:
            return math.inf
        return float(self._fixed_thresholds[self._closest_chart()]) / _SCALE

    # -- updates ------------------------------------------------------------

    def update(self, values: np.ndarray | Sequence[Any]) -> list[Detection]:
        """Feed values in order; return the detections, indexed within ``values``."""
        batch = np.ascontiguousarray(values, dtype=np.float64).ravel()
        if not np.isfinite(batch).all():
            raise ValueError("scale: values must be finite (NaN and infinities are filtered upstream)")
        return self.update_finite(batch)

    def update_finite(self, values: np.ndarray) -> list[Detection]:
        batch = values
        detections: list[Detection] = []
        start_seen = self._n_seen
        position, size = 0, len(batch)
        while position < size:
            if self._design is None:
                take = min(self.warmup - self._filled, size - position)
                self._warmup_buffer()[self._filled : self._filled + take] = batch[position : position + take]
                self._filled += take
                position += take
                if self._filled == self.warmup:
                    self._use_design(self._designed(self._warmup_buffer(), "warmup"), from_snapshot=False)
                    self._buffer = None  # never read again until the next re-arm
                continue
            chunk = batch[position : position + _CHUNK]
            hit = self._run_charts(chunk)
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
                    window={"reference": self._reference_size()},
                    reference=self._reference_id(),
                )
            )
            # Re-arm: the next ``warmup`` values, all after the change, are the new reference.
            self._design = None
            self._filled = 0
            self._from_snapshot = False
            self._reference_start = start_seen + position + index + 1
            self._sums[:] = 0
            position += index + 1
        self._n_seen = start_seen + size
        return detections

    def _warmup_buffer(self) -> np.ndarray:
        """The buffer of warm-up values, allocated when a reference starts to be collected."""
        if self._buffer is None:
            self._buffer = reference_buffer(self.warmup)
        return self._buffer

    def _run_charts(self, chunk: np.ndarray) -> tuple[int, int, float] | None:
        """Advance every chart over ``chunk``; stop at the first crossing.

        With ``walk`` a chart's sum before the chunk plus its cumulative
        increments in it, preceded by a 0, the chart is
        ``walk[t] - min(walk[:t + 1])``. The leading 0 is an extra bin whose
        increment is 0, so no operation broadcasts (broadcasting ufuncs cost
        several times more at a thousand values); each chart's peak is
        compared with its threshold, and only a chunk with a crossing
        compares every point.
        """
        if _jit.ENABLED:
            return self._run_charts_compiled(chunk)
        size = len(chunk)
        bins = np.empty(size + 1, dtype=np.intp)
        bins[0] = self._cuts.size + 1
        if self._logit:
            chunk = _logit(chunk)
        bins[1:] = np.searchsorted(self._cuts, np.abs(chunk - self._median), side="left")
        walk = np.take(self._table, bins, axis=1)
        walk[:, 1] += self._sums
        np.cumsum(walk, axis=1, out=walk)
        walk -= np.minimum.accumulate(walk, axis=1)
        # each chart's peak against its threshold: no array of thresholds as long as the chunk
        if all(peak <= limit for peak, limit in zip(walk.max(axis=1).tolist(), self._threshold_list)):
            self._sums[:] = walk[:, -1]  # in place: no new long-lived allocation per batch
            return None
        over = walk > self._fixed_thresholds[:, None]
        end = int(np.argmax(over.any(axis=0)))
        ratios = walk[:, end] / self._fixed_thresholds
        chart = int(np.argmax(np.where(over[:, end], ratios, -np.inf)))
        return end - 1, chart, float(walk[chart, end]) / _SCALE

    def _run_charts_compiled(self, chunk: np.ndarray) -> tuple[int, int, float] | None:
        """:meth:`_run_charts` as one compiled loop (:mod:`._jit`): the same bins and integer sums."""
        index = _jit.binned_cusum_walk(_logit(chunk) if self._logit else chunk, self._median, self._cuts,
                                       self._table, self._sums, self._fixed_thresholds)
        if index < 0:
            return None
        chart, total = _jit.crossed_chart(self._sums, self._fixed_thresholds)
        return index, chart, total / _SCALE

    def _reference_size(self) -> int:
        return self.snapshot.size if self._from_snapshot and self.snapshot is not None else self.warmup

    def _reference_id(self) -> str:
        if self._from_snapshot:
            return f"snapshot:{self.snapshot_id}"
        return f"warmup:{self._reference_start}-{self._reference_start + self.warmup - 1}"

    # -- checkpoints --------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The mutable state as plain JSON-serialisable data."""
        filling = self._design is None
        return {
            "version": _STATE_VERSION,
            "n_seen": self._n_seen,
            "filled": self._filled,
            "warmup_values": encode_values(self._warmup_buffer()[: self._filled] if filling and self._filled
                                           else np.empty(0)),
            "reference_start": self._reference_start,
            "from_snapshot": self._from_snapshot,
            "design": None if filling else self._design_state(),
            "sums": self._sums.tolist(),
        }

    def _design_state(self) -> dict[str, Any]:
        """The design as :meth:`_designed` made it: plain data, every number exact."""
        return {
            "logit": self._logit,
            "median": self._median,
            "cuts": self._cuts.tolist(),
            "counts": self._counts.tolist(),
            "increments": self._table[:, :-1].tolist(),
            "thresholds": self._fixed_thresholds.tolist(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` of a detector with the same spec."""
        if state.get("version") not in _READABLE_VERSIONS:
            raise ValueError("state was saved by a different scale version")
        self._reset()
        self._n_seen = int(state["n_seen"])
        self._reference_start = int(state["reference_start"])
        design = state["design"]
        if design is None:
            warmup_values = decode_values(state["warmup_values"])
            self._filled = int(state["filled"])
            if self._filled != len(warmup_values):
                raise ValueError("scale state: warm-up values and count disagree")
            if self._filled:
                self._warmup_buffer()[: self._filled] = warmup_values
            self._design = None
            self._from_snapshot = False
        else:
            if len(design["increments"]) != len(self.ratios):
                raise ValueError("scale state: saved with other ratios")
            self._filled = int(state["filled"])
            self._use_design(dict(design), from_snapshot=bool(state["from_snapshot"]) and self.snapshot is not None)
        self._sums = np.asarray(state["sums"], dtype=np.int64)


def _logit(values: np.ndarray) -> np.ndarray:
    """``log(x / (1 - x))`` of ``x`` clipped to ``[LOGIT_EPSILON, 1 - LOGIT_EPSILON]``."""
    clipped = np.clip(values, LOGIT_EPSILON, 1.0 - LOGIT_EPSILON)
    return np.log(clipped) - np.log1p(-clipped)


def design_bins(
    values: np.ndarray, ratios: Sequence[float]
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """The bins and chart increments for a reference sample.

    Returns ``(median, cuts, counts, increments)``: the cut points of the
    distances ``|x - median|``, the reference count of each bin, and one row
    of increments ``log(q_i / p_i)`` per ratio, where ``q`` is the share of
    each bin under the reference stretched by the ratio about its median.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    median = float(np.median(values))
    distances = np.sort(np.abs(values - median))
    levels = [level for level in LEVELS if min(level, 1.0 - level) * n >= MIN_TAIL]
    cuts = np.unique(np.quantile(distances, levels, method="inverted_cdf")) if levels else np.empty(0)
    if cuts.size == 0 or cuts[-1] >= distances[-1]:
        # A top bin the reference never reached (a constant reference, or ties at the top):
        # a wider stream shows there.
        cuts = np.unique(np.append(cuts, distances[-1]))
    bins = cuts.size + 1
    counts = np.bincount(np.searchsorted(cuts, distances, side="left"), minlength=bins)
    reference_share = (counts + 0.5) / (n + 0.5 * bins)
    rows = []
    for ratio in ratios:
        # share of the stretched reference r * d at or below each cut: reference share at or below cut / r
        below = np.searchsorted(distances, cuts / ratio, side="right")
        stretched = (np.diff(np.concatenate([[0], below, [n]])) + 0.5) / (n + 0.5 * bins)
        # the outermost (innermost) bin holds at least SPILL of the alternative, so even a
        # constant reference, which no stretch changes, has a chart for a wider stream
        edge = -1 if ratio > 1 else 0
        if stretched[edge] < SPILL:
            stretched *= (1.0 - SPILL) / (1.0 - stretched[edge])
            stretched[edge] = SPILL
        rows.append(np.log(stretched / reference_share))
    return median, cuts, counts, np.array(rows)
