"""Error rate: Bernoulli CUSUMs for rises in the error rate of a 0/1 stream.

Once labels are joined to predictions, ``performance:error_rate`` is a stream
of 0 (correct) and 1 (error); any non-zero value counts as an error. The first
``warmup`` values estimate the in-control error rate: the design rate ``p0``
is an upper credible bound (90% to 99.99%, whichever detects fastest) of the
rate given the warm-up's errors (Jeffreys prior), so a clean warm-up still
gives a usable rate and an unlucky low one does not turn into a false alarm.
The detector then runs, for each design odds ratio in ``odds_ratios``, the
optimal chart for a rise to the design rate ``p1`` whose odds are that
ratio times those of ``p0``: each value adds its log-likelihood ratio,
``log(p1 / p0)`` for an error and ``log((1 - p1) / (1 - p0))`` for a correct
prediction, to a sum floored at zero, and the detector fires when any sum
crosses its ``h``. The size of a rise is unknown, and one chart sees well
only rises near its design: one chart at the ratio 2.5 barely sees a rise
from 5% to 8% (its drift there is about zero), so the default is two charts, at
the ratios 1.5 and 3, which split the false-alarm budget (``log 2`` nats of
threshold). Median delays over 60 seeds (``bench/error_rate.py``: 10,000
values at 5%, then the rise; 22 signals' budget), two charts against one at
2.5, both with the growing reference below: a rise to 8%: 2,080 against
16,361 (23 of 60 missed in 20,000 values; bound h / KL 2,378); to 10%: 688
against 851 (bound 930); to 15%: 222 against 212 (bound 273); to 25%: 77
against 80; to 50%: 30 against 33 (bound 23). Four charts (1.3, 2, 3.5, 8)
cost more threshold than they gain (a median of 250 against 235 for the two
on ``bench/quality.py``'s rise to 15%, 200 seeds).

``h`` is set from the false-alarm target ``arl`` (values between false
alarms; default ``DEFAULT_ARL * family_tests``), split equally between the
charts (Bonferroni). The true rate is known only through the reference, so
the false-alarm rate is averaged over the posterior of the true rate given
the reference's counts, with the exponential-tilt (Wald) approximation of
the ARL (conservative: it ignores the overshoot); see
:mod:`stream_monitor.detectors.calibration`. The thresholds depend only on
the reference's counts and the parameters, and are cached.

Falls in the error rate are improvements, not alarms, so the chart is
one-sided. After a detection the chart restarts and the next ``warmup``
values form a new reference, so one change gives one alert.

The reference keeps growing while the chart runs: each time the values seen
since the reference's end equal the reference's size (doubling it) and until
it holds ``max_reference`` values, they join it and the chart is designed
again from the larger reference, the sum keeping its fraction of the
threshold. Values whose error count is improbable given the reference
(beta-binomial predictive upper tail below 1%: a rise, perhaps under way
and not yet detected) do not join it; the next as many values are tried
instead. A short warm-up leaves the true rate uncertain (about 14% of it
for 50 errors in 1,000 values), and covering the uncertain rates costs
threshold and drift; a reference of 8,000 values halves that cost (the
median delay of ``bench/quality.py``'s rise from 5% to 15% falls from 320 to
about 235 labelled predictions). Each design is calibrated on its own
reference, whose values precede every value the chart then sees. A change a
little before a doubling can enter the reference in part, too few values to
make their count improbable, against a reference at least as large as the
one before. Detections name their reference ``"warmup:<first>-<last>"``
(0-based positions of the reference's first and last values in the signal,
inclusive). Sums are kept in
fixed point (integers in units of ``2**-20``), so a batch gives exactly the
result of feeding its values one at a time.

Examples
--------
>>> import numpy as np
>>> from stream_monitor.detectors import DetectorSpec, build
>>> rng = np.random.default_rng(7)
>>> errors = np.concatenate([rng.random(3000) < 0.05, rng.random(3000) < 0.15])
>>> detector = build(DetectorSpec("error_rate"))
>>> for detection in detector.update(errors.astype(float)):
...     print(f"change detected at index {detection.index}")
change detected at index 3255
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from stream_monitor.detectors._dist import beta_ppf, betabinom_sf

from stream_monitor.detectors import DEFAULT_ARL, register
from stream_monitor.detectors.base import (
    Detection,
    Detector,
    SpecError,
    check_integer,
    check_known,
    check_number,
)
from stream_monitor.detectors.calibration import bernoulli_cusum_threshold

__all__ = ["ErrorRate"]

_SCALE = float(2**20)
_CHUNK = 4096
_STATE_VERSION = 2
# The reference grows to this many warm-ups unless max_reference says otherwise.
_GROWTH = 16
# Values join the reference unless their error count is this improbable given it (a rise).
_GROWTH_LEVEL = 0.01
# One chart per design rise of the odds of an error.
_ODDS_RATIOS = (1.5, 3.0)
_MAX_CHARTS = 8
# Candidate design rates: these posterior quantiles of the warm-up's error rate.
_DESIGN_QUANTILES = (0.9, 0.99, 0.999, 0.9999)
# Tried in turn when no candidate reaches the target: a higher bound leaves less
# posterior weight on true rates above the design alternative (whose run length
# grows only linearly with the threshold, so they cap the reachable target).
_FALLBACK_QUANTILES = (1 - 1e-6, 1 - 1e-9, 1 - 1e-12)


@register
class ErrorRate(Detector):
    """One-sided Bernoulli CUSUM charts on a 0/1 error stream, calibrated from ``arl``.

    Parameters
    ----------
    warmup
        Values in each reference sample (at least 100).
    max_reference
        Most values the reference grows to (at least ``warmup``; default 16
        times ``warmup``); ``warmup`` keeps the reference to the warm-up.
    odds_ratios
        The design alternatives, one chart each: the rises in the odds of an
        error the charts are tuned to detect fastest (each greater than 1).
    odds_ratio
        One design alternative: shorthand for ``odds_ratios=[odds_ratio]``
        (one chart).
    arl
        Target average number of values between false alarms.
    """

    name = "error_rate"
    kind = "error"
    reference_params = ("warmup",)

    def __init__(
        self,
        *,
        warmup: int = 1000,
        max_reference: int | None = None,
        odds_ratios: Sequence[float] = _ODDS_RATIOS,
        odds_ratio: float | None = None,
        arl: float = DEFAULT_ARL,
    ) -> None:
        name = self.name
        self.warmup = check_integer(name, "warmup", warmup, minimum=100, maximum=10**7)
        if max_reference is None:
            max_reference = _GROWTH * self.warmup
        self.max_reference = check_integer(
            name, "max_reference", max_reference, minimum=self.warmup, maximum=10**9
        )
        if odds_ratio is not None:
            if tuple(odds_ratios) != _ODDS_RATIOS:
                raise SpecError(name, "odds_ratio", "give odds_ratio or odds_ratios, not both")
            odds_ratios = (check_number(name, "odds_ratio", odds_ratio, low=1.0, high=1e6, open_low=True),)
        self.odds_ratios = _check_odds_ratios(odds_ratios)
        self.arl = check_number(name, "arl", arl, low=10.0, high=1e18)
        self._reset()

    @classmethod
    def from_spec(cls, params: Mapping[str, Any], *, family_tests: int = 1) -> ErrorRate:
        """Build from spec parameters; a default ``arl`` is multiplied by ``family_tests``."""
        params = dict(params)
        check_known(cls.name, params, ("warmup", "max_reference", "odds_ratios", "odds_ratio", "arl"))
        params.setdefault("arl", DEFAULT_ARL * family_tests)
        detector = cls(**params)
        # the chart is designed after the warm-up; refuse now what could not be designed then
        for errors in _probe_counts(detector.warmup):
            try:
                detector._designs(errors, detector.warmup)
            except ValueError as exc:
                raise SpecError(cls.name, "arl", f"{exc}: lower the arl or lengthen the warm-up") from None
        return detector

    def _params(self) -> Mapping[str, Any]:
        return {
            "warmup": self.warmup,
            "max_reference": self.max_reference,
            "odds_ratios": list(self.odds_ratios),
            "arl": self.arl,
        }

    def _reset(self) -> None:
        """Build all mutable state: a fresh detector that has seen nothing."""
        self._n_seen = 0
        self._warmup_seen = 0
        self._warmup_errors = 0
        self._reference_start = 0
        self._sums = np.zeros(len(self.odds_ratios))
        self._calibrate(None)

    def _designs(self, errors: int, size: int) -> np.ndarray:
        """``(up, down, threshold)`` per chart (rows) for a reference of ``size`` values, ``errors`` errors."""
        chart_arl = self.arl * len(self.odds_ratios)
        return np.array([_design(errors, size, ratio, chart_arl) for ratio in self.odds_ratios])

    def _calibrate(self, errors: int | None, size: int | None = None) -> None:
        """Set the chart from a reference of ``size`` values (the warm-up's) and ``errors`` errors.

        ``None`` errors: still warming up. The values seen since the reference's
        end are forgotten (they are the next part of the reference).
        """
        self._reference_errors = errors
        self._reference_size = self.warmup if size is None else size
        self._grow_seen = self._grow_errors = 0
        charts = len(self.odds_ratios)
        if errors is None:
            self._thresholds = np.zeros(charts)
            self._fixed_up = self._fixed_down = self._fixed_thresholds = np.zeros(charts)
            return
        designs = self._designs(errors, self._reference_size)
        self._thresholds = designs[:, 2].copy()
        self._fixed_up = np.rint(designs[:, 0] * _SCALE)
        self._fixed_down = np.rint(designs[:, 1] * _SCALE)
        self._fixed_thresholds = np.floor(self._thresholds * _SCALE)

    @property
    def n_seen(self) -> int:
        return self._n_seen

    def _closest_chart(self) -> int:
        if self._reference_errors is None:
            return 0
        return int(np.argmax(self._sums / self._fixed_thresholds))

    @property
    def statistic(self) -> float:
        return float(self._sums[self._closest_chart()]) / _SCALE

    @property
    def threshold(self) -> float:
        """The closest chart's threshold (0 while warming up)."""
        return float(self._thresholds[self._closest_chart()])

    @property
    def reference_rate(self) -> float | None:
        """The error rate of the current reference sample, once it is complete."""
        if self._reference_errors is None:
            return None
        return self._reference_errors / self._reference_size

    @property
    def reference_size(self) -> int:
        """Values in the current reference (the warm-up's size while warming up)."""
        return self._reference_size

    def _growth_left(self) -> int:
        """Values until the reference next grows (0: it holds ``max_reference`` values)."""
        grow = min(self._reference_size, self.max_reference - self._reference_size)
        return max(0, grow - self._grow_seen)

    def _grow(self, chunk: np.ndarray) -> None:
        """Count charted values towards the reference; redesign when they double it."""
        if self._reference_size >= self.max_reference:
            return
        self._grow_seen += len(chunk)
        self._grow_errors += int(np.count_nonzero(chunk))
        if self._growth_left():
            return
        if not _consistent(self._grow_errors, self._grow_seen, self._reference_errors, self._reference_size):
            # more errors than the reference predicts: a rise, perhaps under way; keep the reference clean
            self._grow_seen = self._grow_errors = 0
            return
        errors, size = self._reference_errors + self._grow_errors, self._reference_size + self._grow_seen
        try:
            self._designs(errors, size)
        except ValueError:  # no chart reaches the target from these counts: keep the reference
            self._grow_seen = self._grow_errors = 0
            return
        old_thresholds = self._fixed_thresholds
        self._calibrate(errors, size)
        # each sum keeps its fraction of its threshold, rounded down (exact integers in fixed point)
        self._sums = np.array([
            float(int(total) * int(new) // int(old))
            for total, new, old in zip(self._sums, self._fixed_thresholds, old_thresholds)
        ])

    def update(self, values: np.ndarray | Sequence[Any]) -> list[Detection]:
        """Feed 0/1 values in order; return the detections, indexed within ``values``."""
        batch = np.ascontiguousarray(values, dtype=np.float64).ravel() != 0.0
        detections: list[Detection] = []
        start_seen = self._n_seen
        position, size = 0, len(batch)
        while position < size:
            if self._reference_errors is None:
                take = min(self.warmup - self._warmup_seen, size - position)
                self._warmup_errors += int(np.count_nonzero(batch[position : position + take]))
                self._warmup_seen += take
                position += take
                if self._warmup_seen == self.warmup:
                    self._calibrate(self._warmup_errors)
                continue
            take = min(_CHUNK, size - position)
            if self._growth_left():
                take = min(take, self._growth_left())
            chunk = batch[position : position + take]
            found = self._run_charts(chunk)
            if found is None:
                self._grow(chunk)
                position += len(chunk)
                continue
            index, chart = found
            detections.append(
                Detection(
                    index=position + index,
                    n_seen=start_seen + position + index,
                    statistic=float(self._sums[chart]) / _SCALE,
                    threshold=float(self._thresholds[chart]),
                    window={"reference": self._reference_size},
                    reference=f"warmup:{self._reference_start}-"
                    f"{self._reference_start + self._reference_size - 1}",
                )
            )
            # Re-arm on post-change data.
            self._reference_start = start_seen + position + index + 1
            self._warmup_seen = self._warmup_errors = 0
            self._sums = np.zeros(len(self.odds_ratios))
            self._calibrate(None)
            position += index + 1
        self._n_seen = start_seen + size
        return detections

    def _run_charts(self, chunk: np.ndarray) -> tuple[int, int] | None:
        """Run every chart over ``chunk``; ``(index, chart)`` of the first crossing, if any.

        The sums are left at the crossing (or at the chunk's end).
        """
        first: tuple[int, int] | None = None
        walks = []
        for chart in range(len(self._sums)):
            # Integer sums in float64: walk[t] - min(-s, min(walk[:t + 1])) is the chart.
            walk = np.cumsum(np.where(chunk, self._fixed_up[chart], -self._fixed_down[chart]))
            floor = np.minimum(walk, -self._sums[chart])
            np.minimum.accumulate(floor, out=floor)
            walk -= floor
            crossed = walk > self._fixed_thresholds[chart]
            if crossed.any():
                index = int(np.argmax(crossed))
                if first is None or index < first[0]:
                    first = (index, chart)
            walks.append(walk)
        end = len(chunk) - 1 if first is None else first[0]
        self._sums = np.array([walk[end] for walk in walks])
        return first

    def state_dict(self) -> dict[str, Any]:
        """The mutable state as plain JSON-serialisable data."""
        return {
            "version": _STATE_VERSION,
            "n_seen": self._n_seen,
            "warmup_seen": self._warmup_seen,
            "warmup_errors": self._warmup_errors,
            "reference_errors": self._reference_errors,
            "reference_size": self._reference_size,
            "grow_seen": self._grow_seen,
            "grow_errors": self._grow_errors,
            "reference_start": self._reference_start,
            "sums": [int(total) for total in self._sums],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` of a detector with the same spec."""
        if state.get("version") == 1:
            state = _from_version_1(state, self.warmup, len(self.odds_ratios))
        if state.get("version") != _STATE_VERSION:
            raise ValueError("state was saved by a different error_rate version")
        self._reset()
        self._n_seen = int(state["n_seen"])
        self._warmup_seen = int(state["warmup_seen"])
        self._warmup_errors = int(state["warmup_errors"])
        self._reference_start = int(state["reference_start"])
        errors = state["reference_errors"]
        self._calibrate(None if errors is None else int(errors), int(state["reference_size"]))
        self._grow_seen = int(state["grow_seen"])
        self._grow_errors = int(state["grow_errors"])
        sums = [float(total) for total in state["sums"]]
        if len(sums) != len(self.odds_ratios):
            raise ValueError("state was saved by an error_rate with other odds_ratios")
        self._sums = np.array(sums)


def _from_version_1(state: Mapping[str, Any], warmup: int, charts: int) -> dict[str, Any]:
    """A version-1 state (one chart, the reference the warm-up) as version 2: the reference kept, sums at 0."""
    return {
        **{key: state[key] for key in ("n_seen", "warmup_seen", "warmup_errors", "reference_errors",
                                       "reference_start")},
        "version": _STATE_VERSION,
        "reference_size": warmup,
        "grow_seen": 0,
        "grow_errors": 0,
        "sums": [0] * charts,
    }


def _consistent(errors: int, size: int, reference_errors: int, reference_size: int) -> bool:
    """Whether ``errors`` in ``size`` new values are no more than the reference predicts.

    The predictive distribution of the count is beta-binomial (the Jeffreys
    posterior of the reference's rate); the new values are consistent unless
    so many errors or more have probability below :data:`_GROWTH_LEVEL`.
    """
    tail = betabinom_sf(errors - 1, size, reference_errors + 0.5, reference_size - reference_errors + 0.5)
    return tail >= _GROWTH_LEVEL


def _check_odds_ratios(ratios: Any) -> tuple[float, ...]:
    """The design odds ratios as a sorted tuple of distinct numbers above 1, or :class:`SpecError`."""
    name = ErrorRate.name
    if isinstance(ratios, (str, bytes)) or not isinstance(ratios, Sequence):
        raise SpecError(name, "odds_ratios", f"must be a list of numbers, got {ratios!r}")
    if not 1 <= len(ratios) <= _MAX_CHARTS:
        raise SpecError(name, "odds_ratios", f"must hold 1 to {_MAX_CHARTS} numbers, got {len(ratios)}")
    checked = sorted({check_number(name, "odds_ratios", ratio, low=1.0, high=1e6, open_low=True)
                      for ratio in ratios})
    return tuple(checked)


def _probe_counts(warmup: int) -> list[int]:
    """Warm-up error counts checked at build time: none, few, a tenth, half, all."""
    return sorted({0, 1, warmup // 100, warmup // 10, warmup // 2, warmup})


@functools.lru_cache(maxsize=4096)
def _design(errors: int, n: int, odds_ratio: float, arl: float) -> tuple[float, float, float]:
    """The chart for a warm-up with ``errors`` errors: ``(up, down, threshold)``.

    The design rate ``p0`` is an upper credible bound of the error rate: a
    bound a little above the estimate means an unlucky, low warm-up rarely
    leaves the true rate above the rate at which the chart climbs, so the
    threshold can stay low. Of the candidate bounds, the one whose chart
    detects its own design alternative fastest (threshold over the
    Kullback-Leibler drift) wins.
    """
    best: tuple[float, float, float, float] | None = None
    for quantiles in (_DESIGN_QUANTILES, *((q,) for q in _FALLBACK_QUANTILES)):
        for quantile in quantiles:
            p0 = float(beta_ppf(quantile, errors + 0.5, n - errors + 0.5))
            odds = odds_ratio * p0 / (1.0 - p0)
            p1 = odds / (1.0 + odds)
            if not 0.0 < p0 < p1 < 1.0:
                continue
            up = math.log(p1 / p0)
            down = math.log((1.0 - p0) / (1.0 - p1))
            try:
                threshold = bernoulli_cusum_threshold(errors, n, up, down, arl)
            except ValueError:  # this design cannot reach the target
                continue
            delay = threshold / (p1 * up - (1.0 - p1) * down)
            if best is None or delay < best[0]:
                best = (delay, up, down, threshold)
        if best is not None:
            return best[1], best[2], best[3]
    raise ValueError(f"no chart reaches arl {arl:g} after a reference of {n} values with {errors} errors")
