"""Page-Hinkley / CUSUM: two-sided detection of shifts in the mean of a numeric signal.

Two variants share the registry name ``page_hinkley``:

``variant="calibrated"`` (the default)
    The first ``warmup`` values form the reference: their mean and standard
    deviation standardise every later value, ``z = (x - mean) / sd``, clipped
    to ``[-clip, clip]`` so one outlier cannot raise an alarm on its own. On
    ``z`` run one-sided CUSUM charts for each reference drift ``k`` in
    ``drifts`` (in standard deviations) and each direction in ``mode``::

        S_up   = max(0, S_up   + z - k)        S_down = max(0, S_down - z - k)

    A chart with reference ``k`` is the fastest detector of a shift of ``2 k``
    standard deviations, and close to it for shifts within a factor of about
    two, so the default ``drifts=(0.125, 0.25, 0.5)`` covers shifts of a
    quarter of a standard deviation and up, and slow ramps, in one detector
    (a multi-chart CUSUM). Smaller drifts pay twice: the warm-up's estimation
    error raises their thresholds steeply (with 2,000 warm-up values a chart
    of ``k = 0.0625`` cannot reach the default target at all, one of
    ``k = 0.1`` is slower than ``k = 0.125`` on every change measured), and a
    window-limited GLR over the same shifts was no faster on steps, a few
    percent faster on ramps, and five times dearer (``bench/mean_glr.py``;
    delays at the default budget: ``bench/mean_chart.py``). Each chart's
    threshold ``h`` is set so that
    the detector as a whole raises a false alarm once per ``arl`` values on
    average (default ``DEFAULT_ARL * family_tests``): the rate is split
    equally between the charts, and each chart's rate is averaged over the
    error of estimating the mean and standard deviation from ``warmup``
    values (Siegmund's ARL approximation with quadrature over the sampling
    distribution of the estimates; see
    :mod:`stream_monitor.detectors.calibration`). That calibration assumes
    Gaussian values, whose far tail decides the false alarms; so when the
    reference is set, each chart's threshold is raised for the reference's
    own tail on its side (skewed counts, lognormal values): by ``2 k /
    theta`` when the exponential-tilt root ``theta`` of the reference's
    standardised, clipped values falls below the Gaussian ``2 k``, never
    lowered (:meth:`PageHinkley._reference_tail_factors`). The clip keeps
    heavy tails from dominating. After a detection every chart restarts and the next ``warmup`` values
    (all after the detection) form a new reference, so one change gives one
    alert.

    Prediction scores in ``[0, 1]`` are charted as they are, not on the
    logit scale: when a model's weights grow, ``logit(p)`` keeps its mean
    (only its spread grows, a change for a scale chart), while ``p``'s mean
    moves towards 0.5, which this chart sees; on a shift of the score's
    bias the two scales detect equally fast (``bench/mean_chart.py
    --logit``).

    The reference can also be a snapshot (``reference_values``, e.g. from
    training data, with ``reference_id``): its mean and standard deviation
    standardise from the first value on, and the thresholds are calibrated
    for a reference of its size; after a detection the detector learns a
    warm-up reference from the values that follow. Detections name their
    reference ``"warmup:<first>-<last>"`` (0-based positions in the signal,
    inclusive) or ``"snapshot:<id>"``.

    Any finite value is accepted. No single value may carry more than a third
    of the reference's variance: the most extreme values (at most 1% of the
    reference) are left out of the mean and standard deviation while one of
    them would (its squared deviation from the mean of the others above
    ``OUTLIER_SHARE`` times their sum of squared deviations). So an absurd
    value (a ``1.7e308`` sentinel, a unit mistake) cannot inflate the
    standard deviation and blind the charts, while skewed or heavy-tailed
    references (lognormal, Student t) keep their tails; sums and squares are
    taken in a scale where they cannot overflow. After the reference, a
    value is standardised then clipped, so a huge value adds at most
    ``clip`` to a chart.

    The charts add increments in fixed point (integers in units of
    ``2**-20`` standard deviations), so their sums are exact and a batch
    gives bit-for-bit the result of feeding its values one at a time,
    whatever the batch boundaries. A batch is evaluated with numpy: cumulative
    sums, a running minimum for the chart of the smallest drift in each
    direction (which bounds the others, so they need only a minimum), and a
    cut at the first crossing; batches of a few values take an equivalent
    pure-Python path.

``variant="river"``
    River's Page-Hinkley with its parameters ``min_instances``, ``delta``,
    ``threshold``, ``alpha`` and ``mode``: the same detection indices as
    ``river.drift.PageHinkley`` (tested against river), for users migrating
    from river. It is not calibrated (river's defaults raise a false alarm
    every few thousand values on stationary data) and it runs a plain
    per-value loop.

Examples
--------
>>> import numpy as np
>>> from stream_monitor.detectors import DetectorSpec, build
>>> rng = np.random.default_rng(42)
>>> stream = np.concatenate([rng.normal(0.0, 1.0, 3000), rng.normal(1.0, 1.0, 1000)])
>>> detector = build(DetectorSpec("page_hinkley"), family_tests=2)
>>> for detection in detector.update(stream):
...     print(f"change detected at index {detection.index}")
change detected at index 3022

References
----------
E. S. Page (1954). Continuous inspection schemes. Biometrika 41, 100-115.
D. Siegmund (1985). Sequential Analysis. Springer (ARL approximation).
"""

from __future__ import annotations

import functools
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
    check_number,
    check_reference_values,
    decode_values,
    encode_values,
    reference_buffer,
)
from stream_monitor.detectors.calibration import gaussian_cusum_threshold

__all__ = ["PageHinkley"]

_VARIANTS = ("calibrated", "river")
_MODES = ("both", "up", "down")
_RIVER_ONLY = ("min_instances", "delta", "threshold", "alpha")
_CALIBRATED_ONLY = ("warmup", "drifts", "arl", "clip", "reference_values", "reference_id")
#: a reference value is left out when its squared deviation from the mean of the
#: others exceeds this share of their summed squared deviations (a third of the total)
OUTLIER_SHARE = 0.5
#: at most this share of a reference is left out as outliers
OUTLIER_MOST = 0.01
#: drifts of the charts when the spec gives none (those the reference can calibrate)
DEFAULT_DRIFTS = (0.125, 0.25, 0.5)
#: most values a reference snapshot may hold
MAX_SNAPSHOT = 1_000_000
# Fixed-point unit of the chart sums: exact integer arithmetic makes batch and
# one-at-a-time updates agree bit for bit.
_SCALE = float(2**20)
# Shorter chunks take the pure-Python path: numpy's per-call overhead dominates there.
_SCALAR_BELOW = 24
# Values per vectorised step: bounds the work wasted past a detection.
_CHUNK = 4096
_STATE_VERSION = 4
#: state versions :meth:`PageHinkley.load_state_dict` reads (3: warm-up values as a list of numbers)
_READABLE_VERSIONS = (3, _STATE_VERSION)
# Most reference values the tail correction reads (a larger snapshot: evenly spaced ranks of it).
_TILT_SAMPLE = 20_000
_TILT_STEPS = 12
_TILT_DOUBLINGS = 16


@register
class PageHinkley(Detector):
    """Two-sided Page-Hinkley / CUSUM detector of mean shifts.

    Parameters
    ----------
    variant
        ``"calibrated"`` (default): standardised multi-chart CUSUM with
        thresholds from ``arl``. ``"river"``: ``river.drift.PageHinkley``.
    mode
        ``"both"``, ``"up"`` or ``"down"``: which direction of shift to detect.
    warmup
        Calibrated only. Values in each reference sample (at least 30).
    drifts
        Calibrated only. Reference drifts ``k`` of the CUSUM charts, in
        standard deviations (each > 0, at most 8 of them). By default
        :data:`DEFAULT_DRIFTS`, less the smallest ones a reference of this
        size cannot calibrate for ``arl`` (with the default target and 44
        tests per model, the 0.125 chart needs about 1,500 warm-up values).
    arl
        Calibrated only. Target average number of values between false alarms.
    clip
        Calibrated only. Standardised values are clipped to ``[-clip, clip]``.
    reference_values, reference_id
        Calibrated only. A reference snapshot and its id (both or neither).
    min_instances, delta, threshold, alpha
        River only: as in ``river.drift.PageHinkley``.
    """

    name = "page_hinkley"
    kind = "numeric"
    reference_params = ("warmup", "reference_values", "reference_id")

    def __init__(
        self,
        *,
        variant: str = "calibrated",
        mode: str = "both",
        warmup: int = 2000,
        drifts: Sequence[float] | None = None,
        arl: float = DEFAULT_ARL,
        clip: float = 4.0,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        reference_values: Sequence[float] | None = None,
        reference_id: str | None = None,
    ) -> None:
        name = self.name
        self.variant = check_choice(name, "variant", variant, _VARIANTS)
        self.mode = check_choice(name, "mode", mode, _MODES)
        if variant == "calibrated":
            self.warmup = check_integer(name, "warmup", warmup, minimum=30, maximum=10**6)
            self.arl = check_number(name, "arl", arl, low=10.0, high=1e18)
            self.clip = check_number(name, "clip", clip, low=0.0, high=1e6, open_low=True)
            self.snapshot, self.snapshot_id = _check_snapshot(reference_values, reference_id)
            if drifts is None:
                self._default_charts()
            else:
                self._lay_out_charts(_check_drifts(drifts))
            self._use_thresholds(self._warmup_thresholds)
            self._fixed_drifts = np.rint(self._chart_drifts * _SCALE).astype(np.int64)
            self._scaled_clip = self.clip * _SCALE
            # the drift ramps depend on the parameters only: one read-only pair shared by every
            # detector of the same charts (they would be 320 KiB per detector at the defaults)
            self._ramp, self._ramp_gap = _shared_ramps(tuple(self._fixed_drifts.tolist()), self._directions)
            # rows of ``_ramp_gap`` for the charts of a direction from a given chart on
            self._gap_rows = {
                rows[i]: slice(rows[i] - self._directions, None, self._directions)
                for rows in self._direction_rows for i in range(len(rows))
            }
            self._signs_column = self._signs.astype(np.int64)[:, None]
            self._signs_vector = np.ascontiguousarray(self._signs_column[:, 0])
        else:
            self.min_instances = check_integer(
                name, "min_instances", min_instances, minimum=1, maximum=10**12
            )
            self.delta = check_number(name, "delta", delta, low=0.0, high=1e12)
            self._river_threshold = check_number(name, "threshold", threshold, low=0.0, high=1e300)
            self.alpha = check_number(name, "alpha", alpha, low=0.0, high=1.0, open_low=True)
        self._reset()

    def _default_charts(self) -> None:
        """Lay out :data:`DEFAULT_DRIFTS`, less the smallest drifts the reference cannot calibrate.

        A small warm-up (or snapshot) estimates the mean too roughly for a
        chart of small drift to reach the false-alarm target: such charts are
        left out, smallest first, and the error is raised only when even the
        largest drift cannot be calibrated.
        """
        for first in range(len(DEFAULT_DRIFTS)):
            try:
                self._lay_out_charts(DEFAULT_DRIFTS[first:])
                return
            except SpecError:
                if first == len(DEFAULT_DRIFTS) - 1:
                    raise

    def _lay_out_charts(self, drifts: tuple[float, ...]) -> None:
        """The charts of ``drifts`` in each direction of ``mode`` and their thresholds, or :class:`SpecError`."""
        if self.clip <= max(drifts):
            raise SpecError(self.name, "clip", "must exceed every drift, or no chart could ever rise")
        self.drifts = drifts
        signs = {"both": (1.0, -1.0), "up": (1.0,), "down": (-1.0,)}[self.mode]
        # Charts in rows, by increasing drift, then by direction: the first
        # row of each direction has the smallest drift and bounds the others.
        ordered = sorted(drifts)
        self._directions = len(signs)
        self._signs = np.array([s for _ in ordered for s in signs])
        self._chart_drifts = np.array([k for k in ordered for _ in signs])
        # per direction, its charts after the lead, by increasing drift
        self._direction_rows = [
            list(range(d + self._directions, len(self._signs), self._directions)) for d in range(self._directions)
        ]
        # Equal split of the false-alarm rate between the charts (Bonferroni).
        chart_arl = self.arl * len(self._signs)
        self._warmup_thresholds = self._chart_thresholds(self.warmup, chart_arl)
        self._snapshot_thresholds = (
            None if self.snapshot is None else self._chart_thresholds(self.snapshot.size, chart_arl)
        )
        self._snapshot_factors: list[float] | None = None  # the snapshot's tail factors, once computed

    def _chart_thresholds(self, size: int, chart_arl: float) -> np.ndarray:
        """Each chart's threshold for a reference of ``size`` values, or :class:`SpecError`."""
        try:
            return np.array([gaussian_cusum_threshold(float(k), size, chart_arl) for k in self._chart_drifts])
        except ValueError:
            field = "warmup" if size == self.warmup else "reference_values"
            raise SpecError(self.name, field, f"a reference of {size} values is too uncertain to reach arl "
                            f"{self.arl:g}: use more values or a lower arl") from None

    def _use_thresholds(self, thresholds: np.ndarray) -> None:
        """Set the charts' thresholds (they depend on the reference's size).

        Also sets ``_tail_bounds``: for each direction and each of its
        charts after the lead, the lowest threshold of that chart and the
        charts of larger drift, what the chart before it must stay under.
        """
        self._thresholds = thresholds
        self._fixed_thresholds = np.floor(thresholds * _SCALE).astype(np.int64)
        self._fixed_thresholds_list = self._fixed_thresholds.tolist()
        # per direction, for each chart after the lead: the lowest threshold of it and the charts after it
        self._tail_bounds = [
            [min(self._fixed_thresholds_list[r] for r in rows[i:]) for i in range(len(rows))]
            for rows in self._direction_rows
        ]

    @classmethod
    def from_spec(cls, params: Mapping[str, Any], *, family_tests: int = 1) -> PageHinkley:
        """Build from spec parameters; a default ``arl`` is multiplied by ``family_tests``."""
        params = dict(params)
        variant = params.get("variant", "calibrated")
        if variant == "calibrated":
            wrong = [p for p in _RIVER_ONLY if p in params]
        else:
            wrong = [p for p in _CALIBRATED_ONLY if p in params]
        if wrong:
            raise SpecError(cls.name, wrong[0], f"does not apply to variant {variant!r}")
        unknown = sorted(set(params) - set(_RIVER_ONLY + _CALIBRATED_ONLY + ("variant", "mode")))
        if unknown:
            raise SpecError(cls.name, unknown[0], "unknown parameter")
        if variant == "calibrated" and "arl" not in params:
            params["arl"] = DEFAULT_ARL * family_tests
        return cls(**params)

    def _params(self) -> Mapping[str, Any]:
        if self.variant == "calibrated":
            params: dict[str, Any] = {
                "variant": self.variant,
                "mode": self.mode,
                "warmup": self.warmup,
                "drifts": self.drifts,
                "arl": self.arl,
                "clip": self.clip,
            }
            if self.snapshot is not None:
                params["reference_values"] = self.snapshot.tolist()
                params["reference_id"] = self.snapshot_id
            return params
        return {
            "variant": self.variant,
            "mode": self.mode,
            "min_instances": self.min_instances,
            "delta": self.delta,
            "threshold": self._river_threshold,
            "alpha": self.alpha,
        }

    def _reset(self) -> None:
        """Build all mutable state: a fresh detector that has seen nothing."""
        self._n_seen = 0
        if self.variant == "calibrated":
            # the warm-up values; allocated while a reference is collected, dropped once it is set
            self._buffer: np.ndarray | None = None
            self._filled = 0
            self._reference_start = 0
            self._mean = 0.0
            self._inverse_sd = 1.0
            self._scaled_mean = 0.0
            self._scaled_inverse_sd = _SCALE
            self._sums = np.zeros(len(self._signs), dtype=np.int64)
            self._from_snapshot = False
            self._tail_factors = [1.0] * len(self._signs)
            if self.snapshot is not None:
                self._set_reference(self.snapshot, from_snapshot=True)
                self._filled = self.warmup
            else:
                self._use_thresholds(self._warmup_thresholds)
        else:
            self._river_reset()
            self._detected = False

    def _river_reset(self) -> None:
        self._count = 0.0
        self._running_mean = 0.0
        self._sum_increase = 0.0
        self._sum_decrease = 0.0
        self._min_increase = math.inf
        self._max_decrease = -1.0

    # -- gauges -------------------------------------------------------------

    @property
    def n_seen(self) -> int:
        return self._n_seen

    def _closest_chart(self) -> int:
        return int(np.argmax(self._sums / self._fixed_thresholds))

    @property
    def statistic(self) -> float:
        if self.variant == "river":
            return self._river_statistic()
        return float(self._sums[self._closest_chart()]) / _SCALE

    @property
    def threshold(self) -> float:
        if self.variant == "river":
            return self._river_threshold
        return float(self._thresholds[self._closest_chart()])

    def _river_statistic(self) -> float:
        if self._count < self.min_instances:
            return 0.0
        increase = self._sum_increase - self._min_increase
        decrease = self._max_decrease - self._sum_decrease
        return {"up": increase, "down": decrease, "both": max(increase, decrease)}[self.mode]

    # -- updates ------------------------------------------------------------

    def update(self, values: np.ndarray | Sequence[Any]) -> list[Detection]:
        """Feed values in order; return the detections, indexed within ``values``."""
        batch = np.ascontiguousarray(values, dtype=np.float64).ravel()
        if not np.isfinite(batch).all():
            raise ValueError("page_hinkley: values must be finite (NaN and infinities are filtered upstream)")
        return self.update_finite(batch)

    def update_finite(self, values: np.ndarray) -> list[Detection]:
        if self.variant == "river":
            return self._update_river(values)
        return self._update_calibrated(values)

    def _update_calibrated(self, batch: np.ndarray) -> list[Detection]:
        detections: list[Detection] = []
        start_seen = self._n_seen
        position, size = 0, len(batch)
        while position < size:
            if self._filled < self.warmup:
                take = min(self.warmup - self._filled, size - position)
                self._warmup_buffer()[self._filled : self._filled + take] = batch[position : position + take]
                self._filled += take
                position += take
                if self._filled == self.warmup:
                    self._set_reference()
                    self._buffer = None  # never read again until the next re-arm
                continue
            chunk = batch[position : position + _CHUNK]
            if _jit.ENABLED:
                hit = self._run_charts_compiled(chunk)
            else:
                hit = self._run_charts(chunk) if len(chunk) > _SCALAR_BELOW else self._run_charts_scalar(chunk)
            if hit is None:
                position += len(chunk)
                continue
            index, chart, statistic = hit
            detections.append(
                Detection(
                    index=position + index,
                    n_seen=start_seen + position + index,
                    statistic=statistic,
                    threshold=float(self._thresholds[chart]),
                    window={"reference": self._reference_size()},
                    reference=self._reference_id(),
                )
            )
            # Re-arm: the next ``warmup`` values, all after the change, are the new reference.
            self._filled = 0
            self._from_snapshot = False
            self._use_thresholds(self._warmup_thresholds)
            self._reference_start = start_seen + position + index + 1
            self._tail_factors = [1.0] * len(self._signs)
            self._sums[:] = 0
            position += index + 1
        self._n_seen = start_seen + size
        return detections

    def _warmup_buffer(self) -> np.ndarray:
        """The buffer of warm-up values, allocated when a reference starts to be collected."""
        if self._buffer is None:
            self._buffer = reference_buffer(self.warmup)
        return self._buffer

    def _set_reference(self, values: np.ndarray | None = None, *, from_snapshot: bool = False) -> None:
        """Standardise by ``values`` (the warm-up buffer by default) and correct the thresholds for its tails."""
        values = self._warmup_buffer() if values is None else values
        self._mean, sd = robust_mean_sd(values)
        # A constant reference still standardises: any later change saturates the clip.
        self._inverse_sd = 1.0 / max(sd, 1e-9 * max(1.0, abs(self._mean)))
        self._set_scaling()
        self._sums[:] = 0
        self._from_snapshot = from_snapshot
        if from_snapshot and self._snapshot_factors is not None:
            self._tail_factors = self._snapshot_factors
        else:
            self._tail_factors = self._reference_tail_factors(values)
            if from_snapshot:
                self._snapshot_factors = self._tail_factors
        self._use_reference_thresholds()

    def _use_reference_thresholds(self) -> None:
        """The thresholds for the current reference: calibrated for its size, raised for its tails."""
        base = self._snapshot_thresholds if self._from_snapshot else self._warmup_thresholds
        assert base is not None
        self._use_thresholds(base * np.asarray(self._tail_factors))

    def _reference_tail_factors(self, values: np.ndarray) -> list[float]:
        """Per chart, the factor (at least 1) that corrects its Gaussian threshold for the reference's tails.

        A chart's false alarms come from the far tail of its random walk,
        whose rate is set by the root ``theta > 0`` of
        ``E[exp(theta (s z - k))] = 1``: ``2 k`` for Gaussian ``z``, less for
        a skewed or heavy tail on the chart's side (counts, lognormal
        values). The root is solved on the reference's own standardised,
        clipped and centred values (their first two moments are exact by
        construction, so the root's sampling error is small), and the
        threshold is raised by ``2 k / theta``, never lowered: the ARL, about
        ``exp(theta h)``, then stays at what the calibration assumed.
        """
        with np.errstate(over="ignore", invalid="ignore"):
            z = (values - self._mean) * self._inverse_sd
        z = np.clip(np.nan_to_num(z), -self.clip, self.clip)
        if z.size > _TILT_SAMPLE:
            z = np.sort(z)[np.linspace(0, z.size - 1, _TILT_SAMPLE).round().astype(np.intp)]
        z = z - z.mean()
        roots = _tilt_roots(self._signs[:, None] * z[None, :] - self._chart_drifts[:, None], self._chart_drifts)
        return np.maximum(1.0, 2.0 * self._chart_drifts / roots).tolist()

    def _reference_size(self) -> int:
        return self.snapshot.size if self._from_snapshot and self.snapshot is not None else self.warmup

    def _set_scaling(self) -> None:
        self._scaled_inverse_sd = self._inverse_sd * _SCALE
        self._scaled_mean = self._mean * self._scaled_inverse_sd

    def _reference_id(self) -> str:
        if self._from_snapshot:
            return f"snapshot:{self.snapshot_id}"
        return f"warmup:{self._reference_start}-{self._reference_start + self.warmup - 1}"

    def _run_charts(self, chunk: np.ndarray) -> tuple[int, int, float] | None:
        """Advance every chart over ``chunk``; stop at the first crossing.

        Sums are integers (int64), so the order of additions cannot change a
        result. With ``walk`` a chart's cumulative increments in this chunk
        and ``s`` its sum before it, the chart is
        ``walk[t] - min(-s, min(walk[:t + 1]))``.

        Shortcuts, all exact:

        - a chart with a larger drift ``k`` has smaller increments, so it
          never exceeds the chart of the next smaller ``k`` in its direction
          (both started at zero together). Each direction's charts are
          followed by increasing ``k`` (a running minimum each) only while the
          last one followed peaked above the threshold of a later chart;
          the rest cannot cross in this chunk and need only their end values;
        - a chart's end value needs the minimum of its walk, which is its
          lead's walk minus a ramp of positive slope: that minimum falls on a
          point where the lead's walk is below every later point (a suffix
          minimum), and there are few of those.
        """
        size = len(chunk)
        with np.errstate(over="ignore"):  # a huge value becomes +-inf here, then the clip
            scaled = chunk * self._scaled_inverse_sd
        scaled -= self._scaled_mean
        # two ufuncs: np.clip's Python wrapper costs more than both at 1,000 values
        np.maximum(scaled, -self._scaled_clip, out=scaled)
        np.minimum(scaled, self._scaled_clip, out=scaled)
        np.rint(scaled, out=scaled)
        steps = np.cumsum(scaled.astype(np.int64))
        leads = self._directions
        ramp = self._drift_ramp(size)
        lead_walk = self._signs_column[:leads] * steps
        lead_walk -= ramp[:leads]
        floor = np.minimum(lead_walk, -self._sums[:leads, None])
        np.minimum.accumulate(floor, axis=1, out=floor)
        lead_sums = lead_walk - floor
        lead_peaks = lead_sums.max(axis=1).tolist()
        thresholds = self._fixed_thresholds_list
        sums = self._sums.tolist()
        ends = lead_sums[:, -1].tolist() + [0] * (len(sums) - leads)
        for direction in range(leads):
            peak = lead_peaks[direction]
            if peak > thresholds[direction]:
                return self._run_all_charts(steps, ramp)
            walk = lead_walk[direction]
            rows = self._direction_rows[direction]
            for order, row in enumerate(rows):
                if peak <= self._tail_bounds[direction][order]:
                    self._chart_ends(walk, rows[order:], sums, ends, size)
                    break
                chart_walk = walk - self._ramp_gap[row - leads, :size]
                chart_floor = np.minimum(chart_walk, -sums[row])
                np.minimum.accumulate(chart_floor, out=chart_floor)
                chart_walk -= chart_floor
                peak = int(chart_walk.max())
                if peak > thresholds[row]:
                    return self._run_all_charts(steps, ramp)
                ends[row] = int(chart_walk[-1])
        self._sums[:] = ends  # in place: no new long-lived allocation per batch
        return None

    def _chart_ends(self, walk: np.ndarray, rows: Sequence[int], sums: list[int], ends: list[int], size: int) -> None:
        """End values of the charts ``rows`` (all led by ``walk``) that cannot cross in this chunk."""
        gaps = self._ramp_gap[self._gap_rows[rows[0]], :size]
        walks = walk - gaps
        lowest = walks.min(axis=1).tolist()
        for row, last, low in zip(rows, walks[:, -1].tolist(), lowest):
            ends[row] = last - min(-sums[row], low)

    def _run_all_charts(self, steps: np.ndarray, ramp: np.ndarray) -> tuple[int, int, float] | None:
        """Every chart with a running minimum: the exact first crossing in the chunk."""
        walk = self._signs_column * steps
        walk -= ramp
        floor = np.minimum(walk, -self._sums[:, None])
        np.minimum.accumulate(floor, axis=1, out=floor)
        sums = walk
        sums -= floor
        over = sums > self._fixed_thresholds[:, None]
        crossed = over.any(axis=0)
        if not crossed.any():
            self._sums[:] = sums[:, -1]
            return None
        end = int(np.argmax(crossed))
        ratios = sums[:, end] / self._fixed_thresholds
        chart = int(np.argmax(np.where(over[:, end], ratios, -np.inf)))
        return end, chart, float(sums[chart, end]) / _SCALE

    def _run_charts_compiled(self, chunk: np.ndarray) -> tuple[int, int, float] | None:
        """:meth:`_run_charts` as one compiled loop (:mod:`._jit`): the same integer sums."""
        index = _jit.cusum_walk(chunk, self._scaled_inverse_sd, self._scaled_mean, self._scaled_clip,
                                self._sums, self._signs_vector, self._fixed_drifts, self._fixed_thresholds)
        if index < 0:
            return None
        chart, total = _jit.crossed_chart(self._sums, self._fixed_thresholds)
        return index, chart, total / _SCALE

    def _run_charts_scalar(self, chunk: np.ndarray) -> tuple[int, int, float] | None:
        """:meth:`_run_charts` for a few values: the same integer arithmetic, in Python.

        ``round`` rounds half to even like ``np.rint``, and the float
        operations before it are the same IEEE operations, so both paths give
        identical sums.
        """
        scale, shift, clip = self._scaled_inverse_sd, self._scaled_mean, self._scaled_clip
        sums = self._sums.tolist()
        signs = self._signs_column[:, 0].tolist()
        drifts = self._fixed_drifts.tolist()
        thresholds = self._fixed_thresholds.tolist()
        charts = range(len(sums))
        for index, value in enumerate(chunk.tolist()):
            scaled = value * scale
            scaled -= shift
            step = round(min(max(scaled, -clip), clip))
            crossed = False
            for chart in charts:
                total = sums[chart] + signs[chart] * step - drifts[chart]
                sums[chart] = total if total > 0 else 0
                crossed = crossed or total > thresholds[chart]
            if crossed:
                self._sums[:] = sums
                ratios = [
                    sums[chart] / thresholds[chart] if sums[chart] > thresholds[chart] else -math.inf
                    for chart in charts
                ]
                chart = ratios.index(max(ratios))
                return index, chart, sums[chart] / _SCALE
        self._sums[:] = sums
        return None

    def _drift_ramp(self, size: int) -> np.ndarray:
        """``k_j * (t + 1)`` in fixed point for each chart ``j``, ``t < size`` (at most ``_CHUNK``)."""
        return self._ramp[:, :size]

    def _update_river(self, batch: np.ndarray) -> list[Detection]:
        # River's algorithm line for line; a detection resets at the next value.
        detections: list[Detection] = []
        alpha, delta, threshold = self.alpha, self.delta, self._river_threshold
        check_up = self.mode in ("up", "both")
        check_down = self.mode in ("down", "both")
        start_seen = self._n_seen
        for index, x in enumerate(batch.tolist()):
            if self._detected:
                self._river_reset()
                self._detected = False
            self._count += 1.0
            self._running_mean += (1.0 / self._count) * (x - self._running_mean)
            deviation = x - self._running_mean
            self._sum_increase = alpha * self._sum_increase + deviation - delta
            self._sum_decrease = alpha * self._sum_decrease + deviation + delta
            if self._sum_increase < self._min_increase:
                self._min_increase = self._sum_increase
            if self._sum_decrease > self._max_decrease:
                self._max_decrease = self._sum_decrease
            if self._count >= self.min_instances:
                increase = self._sum_increase - self._min_increase
                decrease = self._max_decrease - self._sum_decrease
                if (check_up and increase > threshold) or (check_down and decrease > threshold):
                    self._detected = True
                    detections.append(
                        Detection(
                            index=index,
                            n_seen=start_seen + index,
                            statistic=self._river_statistic(),
                            threshold=threshold,
                            window={"reference": int(self._count)},
                        )
                    )
        self._n_seen = start_seen + len(batch)
        return detections

    # -- checkpoints --------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The mutable state as plain JSON-serialisable data."""
        state: dict[str, Any] = {"version": _STATE_VERSION, "variant": self.variant, "n_seen": self._n_seen}
        if self.variant == "calibrated":
            # once the reference is set the buffer is never read again: not kept
            filling = self._filled < self.warmup
            state.update(
                filled=self._filled,
                warmup_values=encode_values(self._warmup_buffer()[: self._filled] if filling and self._filled
                                            else np.empty(0)),
                reference_start=self._reference_start,
                from_snapshot=self._from_snapshot,
                mean=self._mean,
                inverse_sd=self._inverse_sd,
                tail_factors=list(self._tail_factors),
                sums=self._sums.tolist(),
            )
        else:
            state.update(
                count=self._count,
                running_mean=self._running_mean,
                sum_increase=self._sum_increase,
                sum_decrease=self._sum_decrease,
                min_increase=self._min_increase if math.isfinite(self._min_increase) else None,
                max_decrease=self._max_decrease,
                detected=self._detected,
            )
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` of a detector with the same spec."""
        if state.get("version") not in _READABLE_VERSIONS or state.get("variant") != self.variant:
            raise ValueError("state was saved by a different page_hinkley version or variant")
        self._reset()
        self._n_seen = int(state["n_seen"])
        if self.variant == "calibrated":
            warmup_values = decode_values(state["warmup_values"])
            if warmup_values.size:
                self._warmup_buffer()[: len(warmup_values)] = warmup_values
            self._filled = int(state["filled"])
            if self._filled != len(warmup_values) and self._filled != self.warmup:
                raise ValueError("page_hinkley state: warm-up values and count disagree")
            self._reference_start = int(state["reference_start"])
            self._mean = float(state["mean"])
            self._inverse_sd = float(state["inverse_sd"])
            self._set_scaling()
            self._from_snapshot = bool(state.get("from_snapshot", False)) and self.snapshot is not None
            self._tail_factors = [float(f) for f in state["tail_factors"]]
            self._sums = np.asarray(state["sums"], dtype=np.int64)
            if len(self._tail_factors) != len(self._signs) or self._sums.shape != (len(self._signs),):
                raise ValueError("page_hinkley state: saved for another set of charts")
            self._use_reference_thresholds()
        else:
            self._count = float(state["count"])
            self._running_mean = float(state["running_mean"])
            self._sum_increase = float(state["sum_increase"])
            self._sum_decrease = float(state["sum_decrease"])
            minimum = state["min_increase"]
            self._min_increase = math.inf if minimum is None else float(minimum)
            self._max_decrease = float(state["max_decrease"])
            self._detected = bool(state["detected"])



@functools.lru_cache(maxsize=64)
def _shared_ramps(fixed_drifts: tuple[int, ...], directions: int) -> tuple[np.ndarray, np.ndarray]:
    """The drift ramps of a layout of charts, read-only, shared by the detectors that have it.

    ``ramp[j, t] = k_j * (t + 1)`` in fixed point for chart ``j`` and
    ``t < _CHUNK``; ``gap`` is the ramp of each chart after the leads (the
    first ``directions`` rows) minus that of its lead.
    """
    drifts = np.asarray(fixed_drifts, dtype=np.int64)
    ramp = drifts[:, None] * np.arange(1, _CHUNK + 1, dtype=np.int64)
    leads = np.arange(directions, drifts.size) % directions
    gap = ramp[directions:] - ramp[leads]
    ramp.setflags(write=False)
    gap.setflags(write=False)
    return ramp, gap


def _tilt_roots(increments: np.ndarray, drifts: np.ndarray) -> np.ndarray:
    """Per row of ``increments``, the root ``theta > 0`` of ``mean(exp(theta * row)) = 1``.

    Every row has a negative mean, so ``f(theta) = log mean(exp(theta * row))``
    is convex, zero at 0 and negative just after it. From an upper end where
    ``f > 0`` (doubling from twice the Gaussian root ``2 k``), Newton's
    method converges to the root from above, monotonically (there the
    slope is positive). A row with no value above zero has no root: it
    gets infinity, which the caller reads as "no correction".
    """
    roots = np.full(len(drifts), np.inf)
    rising = increments.max(axis=1) > 0  # the others never return to 1: no root
    increments = increments[rising]
    high = 4.0 * drifts[rising]
    for _ in range(_TILT_DOUBLINGS):
        below = np.mean(np.exp(high[:, None] * increments), axis=1) <= 1.0
        if not below.any():
            break
        high = np.where(below, 2.0 * high, high)
    theta = high
    for _ in range(_TILT_STEPS):
        weights = np.exp(theta[:, None] * increments)
        total = weights.sum(axis=1)
        value = np.log(total / increments.shape[1])
        slope = (weights * increments).sum(axis=1) / total
        theta = theta - np.where(value > 0, value / slope, 0.0)
    roots[rising] = theta
    return roots


def _check_drifts(drifts: Any) -> tuple[float, ...]:
    """Explicit chart drifts as a tuple of floats, or :class:`SpecError`."""
    name = PageHinkley.name
    if isinstance(drifts, (str, bytes)) or not isinstance(drifts, Sequence):
        raise SpecError(name, "drifts", "must be a list of positive numbers")
    if not 1 <= len(drifts) <= 8:
        raise SpecError(name, "drifts", "must hold between 1 and 8 values")
    checked = tuple(check_number(name, "drifts", k, low=0.0, high=10.0, open_low=True) for k in drifts)
    if len(set(checked)) != len(checked):
        raise SpecError(name, "drifts", "values must be distinct")
    return checked


def _check_snapshot(values: Any, reference_id: Any) -> tuple[np.ndarray | None, str | None]:
    """A reference snapshot as a float array and its id, or :class:`SpecError`."""
    return check_reference_values(PageHinkley.name, values, reference_id, minimum=30, maximum=MAX_SNAPSHOT)


def robust_mean_sd(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample sd of ``values`` without the outliers :func:`_outliers` finds.

    Finite for any finite input: when the values span more than a safe range
    they are scaled before any sum or square. Without outliers (Gaussian
    data) the result is exactly ``np.mean`` and ``np.std(ddof=1)``.
    """
    values = np.asarray(values, dtype=np.float64)
    outliers = _outliers(values)
    if outliers.size:
        keep = np.ones(values.size, dtype=bool)
        keep[outliers] = False
        values = values[keep]
    largest = float(np.max(np.abs(values)))
    if largest < 1e150:
        return float(np.mean(values)), float(np.std(values, ddof=1))
    # scale into a safe range first: no sum or square overflows
    scaled = values / largest
    mean = float(np.mean(scaled))
    sd = float(np.std(scaled, ddof=1))
    return mean * largest, min(sd * largest, float(np.finfo(np.float64).max))


def _outliers(values: np.ndarray) -> np.ndarray:
    """Positions of the values that would each carry too much of the variance.

    The values are ranked by distance from the median (in robust units, so
    squares of ordinary values cannot overflow; absurd ones become inf, which
    ranks them right). Of the ``OUTLIER_MOST`` most distant, every value from
    the first one whose squared deviation from the mean of the values closer
    in exceeds ``OUTLIER_SHARE`` times their summed squared deviations is an
    outlier (testing against the closer values only, two equal huge values
    cannot hide each other).
    """
    size = values.size
    most = max(1, int(size * OUTLIER_MOST))
    if size < 3:
        return np.empty(0, dtype=np.intp)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        median = float(np.median(values))
        distance = np.abs(values - median)
        spread = 0.0
        for quantile in (0.5, 0.9, 0.99, 1.0):  # mostly one value: the spread of the others
            spread = float(np.quantile(distance, quantile))
            if spread != 0.0:
                break
        if spread == 0.0 or not math.isfinite(spread):
            return np.empty(0, dtype=np.intp)
        units = values / spread - median / spread
        order = np.argsort(np.abs(units), kind="stable")
        ranked = units[order]
        first = size - most
        sums = np.cumsum(ranked[: size - 1])
        squares = np.cumsum(ranked[: size - 1] ** 2)
        counts = np.arange(first, size)
        means = sums[first - 1 :] / counts
        spreads = np.maximum(squares[first - 1 :] - counts * means**2, 0.0)
        flagged = (ranked[first:] - means) ** 2 > OUTLIER_SHARE * spreads
    if not flagged.any():
        return np.empty(0, dtype=np.intp)
    return order[first + int(np.argmax(flagged)) :]
