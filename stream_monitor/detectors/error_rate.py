"""Error rate: a Bernoulli CUSUM for rises in the error rate of a 0/1 stream.

Once labels are joined to predictions, ``performance:error_rate`` is a stream
of 0 (correct) and 1 (error); any non-zero value counts as an error. The first
``warmup`` values estimate the in-control error rate: the design rate ``p0``
is an upper credible bound (90% to 99.99%, whichever detects fastest) of the
rate given the warm-up's errors (Jeffreys prior), so a clean warm-up still
gives a usable rate and an unlucky low one does not turn into a false alarm.
The detector then runs the optimal chart for a rise to the design rate
``p1`` whose odds are ``odds_ratio`` times those of ``p0``: each value adds
its log-likelihood ratio, ``log(p1 / p0)`` for an error and
``log((1 - p1) / (1 - p0))`` for a correct prediction, to a sum floored at
zero, and the detector fires when the sum crosses ``h``.

``h`` is set from the false-alarm target ``arl`` (values between false
alarms; default ``DEFAULT_ARL * family_tests``). The true rate is known only
through the warm-up, so the false-alarm rate is averaged over the posterior
of the true rate given the warm-up counts, with the exponential-tilt (Wald)
approximation of the ARL (conservative: it ignores the overshoot); see
:mod:`stream_monitor.detectors.calibration`. The threshold depends only on
the warm-up counts and the parameters, and is cached.

Falls in the error rate are improvements, not alarms, so the chart is
one-sided. After a detection the chart restarts and the next ``warmup``
values form a new reference, so one change gives one alert. Detections name
their reference ``"warmup:<first>-<last>"`` (0-based positions of the
reference's first and last values in the signal, inclusive). Sums are kept in
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
change detected at index 3536
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

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
_STATE_VERSION = 1
# Candidate design rates: these posterior quantiles of the warm-up's error rate.
_DESIGN_QUANTILES = (0.9, 0.99, 0.999, 0.9999)
# Tried in turn when no candidate reaches the target: a higher bound leaves less
# posterior weight on true rates above the design alternative (whose run length
# grows only linearly with the threshold, so they cap the reachable target).
_FALLBACK_QUANTILES = (1 - 1e-6, 1 - 1e-9, 1 - 1e-12)


@register
class ErrorRate(Detector):
    """One-sided Bernoulli CUSUM on a 0/1 error stream, calibrated from ``arl``.

    Parameters
    ----------
    warmup
        Values in each reference sample (at least 100).
    odds_ratio
        The design alternative: the rise in the odds of an error the chart is
        tuned to detect fastest (greater than 1).
    arl
        Target average number of values between false alarms.
    """

    name = "error_rate"
    kind = "error"
    reference_params = ("warmup",)

    def __init__(self, *, warmup: int = 1000, odds_ratio: float = 2.5, arl: float = DEFAULT_ARL) -> None:
        name = self.name
        self.warmup = check_integer(name, "warmup", warmup, minimum=100, maximum=10**7)
        self.odds_ratio = check_number(name, "odds_ratio", odds_ratio, low=1.0, high=1e6, open_low=True)
        self.arl = check_number(name, "arl", arl, low=10.0, high=1e18)
        self._reset()

    @classmethod
    def from_spec(cls, params: Mapping[str, Any], *, family_tests: int = 1) -> ErrorRate:
        """Build from spec parameters; a default ``arl`` is multiplied by ``family_tests``."""
        params = dict(params)
        check_known(cls.name, params, ("warmup", "odds_ratio", "arl"))
        params.setdefault("arl", DEFAULT_ARL * family_tests)
        detector = cls(**params)
        # the chart is designed after the warm-up; refuse now what could not be designed then
        for errors in _probe_counts(detector.warmup):
            try:
                _design(errors, detector.warmup, detector.odds_ratio, detector.arl)
            except ValueError as exc:
                raise SpecError(cls.name, "arl", f"{exc}: lower the arl or lengthen the warm-up") from None
        return detector

    def _params(self) -> Mapping[str, Any]:
        return {"warmup": self.warmup, "odds_ratio": self.odds_ratio, "arl": self.arl}

    def _reset(self) -> None:
        """Build all mutable state: a fresh detector that has seen nothing."""
        self._n_seen = 0
        self._warmup_seen = 0
        self._warmup_errors = 0
        self._reference_start = 0
        self._sum = 0.0
        self._calibrate(None)

    def _calibrate(self, errors: int | None) -> None:
        """Set the chart from the warm-up's error count (``None``: still warming up)."""
        self._reference_errors = errors
        if errors is None:
            self._up = self._down = self._threshold = 0.0
            self._fixed_up = self._fixed_down = self._fixed_threshold = 0.0
            return
        self._up, self._down, self._threshold = _design(errors, self.warmup, self.odds_ratio, self.arl)
        self._fixed_up = float(np.rint(self._up * _SCALE))
        self._fixed_down = float(np.rint(self._down * _SCALE))
        self._fixed_threshold = math.floor(self._threshold * _SCALE)

    @property
    def n_seen(self) -> int:
        return self._n_seen

    @property
    def statistic(self) -> float:
        return self._sum / _SCALE

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def reference_rate(self) -> float | None:
        """The error rate of the current reference sample, once it is complete."""
        if self._reference_errors is None:
            return None
        return self._reference_errors / self.warmup

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
            chunk = batch[position : position + _CHUNK]
            index = self._run_chart(chunk)
            if index is None:
                position += len(chunk)
                continue
            detections.append(
                Detection(
                    index=position + index,
                    n_seen=start_seen + position + index,
                    statistic=self._sum / _SCALE,
                    threshold=self._threshold,
                    window={"reference": self.warmup},
                    reference=f"warmup:{self._reference_start}-{self._reference_start + self.warmup - 1}",
                )
            )
            # Re-arm on post-change data.
            self._reference_start = start_seen + position + index + 1
            self._warmup_seen = self._warmup_errors = 0
            self._sum = 0.0
            self._calibrate(None)
            position += index + 1
        self._n_seen = start_seen + size
        return detections

    def _run_chart(self, chunk: np.ndarray) -> int | None:
        # Integer sums in float64: walk[t] - min(-s, min(walk[:t + 1])) is the chart.
        steps = np.where(chunk, self._fixed_up, -self._fixed_down)
        walk = np.cumsum(steps)
        floor = np.minimum(walk, -self._sum)
        np.minimum.accumulate(floor, out=floor)
        walk -= floor
        crossed = walk > self._fixed_threshold
        if not crossed.any():
            self._sum = float(walk[-1])
            return None
        index = int(np.argmax(crossed))
        self._sum = float(walk[index])
        return index

    def state_dict(self) -> dict[str, Any]:
        """The mutable state as plain JSON-serialisable data."""
        return {
            "version": _STATE_VERSION,
            "n_seen": self._n_seen,
            "warmup_seen": self._warmup_seen,
            "warmup_errors": self._warmup_errors,
            "reference_errors": self._reference_errors,
            "reference_start": self._reference_start,
            "sum": int(self._sum),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` of a detector with the same spec."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError("state was saved by a different error_rate version")
        self._reset()
        self._n_seen = int(state["n_seen"])
        self._warmup_seen = int(state["warmup_seen"])
        self._warmup_errors = int(state["warmup_errors"])
        self._reference_start = int(state["reference_start"])
        errors = state["reference_errors"]
        self._calibrate(None if errors is None else int(errors))
        self._sum = float(state["sum"])


def _probe_counts(warmup: int) -> list[int]:
    """Warm-up error counts checked at build time: none, few, a tenth, half, all."""
    return sorted({0, 1, warmup // 100, warmup // 10, warmup // 2, warmup})


@functools.lru_cache(maxsize=4096)
def _design(errors: int, warmup: int, odds_ratio: float, arl: float) -> tuple[float, float, float]:
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
            p0 = float(stats.beta.ppf(quantile, errors + 0.5, warmup - errors + 0.5))
            odds = odds_ratio * p0 / (1.0 - p0)
            p1 = odds / (1.0 + odds)
            if not 0.0 < p0 < p1 < 1.0:
                continue
            up = math.log(p1 / p0)
            down = math.log((1.0 - p0) / (1.0 - p1))
            try:
                threshold = bernoulli_cusum_threshold(errors, warmup, up, down, arl)
            except ValueError:  # this design cannot reach the target
                continue
            delay = threshold / (p1 * up - (1.0 - p1) * down)
            if best is None or delay < best[0]:
                best = (delay, up, down, threshold)
        if best is not None:
            return best[1], best[2], best[3]
    raise ValueError(f"no chart reaches arl {arl:g} after a warm-up of {warmup} values with {errors} errors")
