"""Each detector's statistic and threshold over the event index, downsampled as it is recorded.

``replay --report`` gives the monitor a :class:`StatisticTrace`; the monitor
cuts each detector's batch where the event index crosses a multiple of
:meth:`StatisticTrace.stride` and samples the statistic after each piece (the
detections do not change: a detector gives the same detections for any cut
of its stream).

A series keeps at most ``max_points`` buckets of event indices. A bucket
keeps its sample closest to the threshold (the highest statistic over
threshold; a detector of several charts, such as Page-Hinkley, reports its
closest chart's statistic and threshold), so peaks show; when the series is full, the bucket
width doubles and neighbouring buckets merge. The pieces grow with the
buckets (``samples_per_bucket`` samples per bucket), and start at
``expected_events / (max_points * samples_per_bucket)`` when the stream's
length is known, so recording costs about ``max_points * samples_per_bucket``
extra detector calls per series, not one per value. The statistic at each
detection is kept apart, exactly, so every alert's point is on the chart.

>>> trace = StatisticTrace(max_points=4, samples_per_bucket=1)
>>> key = ("fraud", "3", "feature:amount", "page_hinkley")
>>> for x in range(10):
...     trace.sample(key, x, float(x % 4), 5.0)
>>> series = trace.series[key]
>>> series.width, series.xs, series.statistics
(4, [3, 7, 9], [3.0, 3.0, 1.0])
>>> trace.stride(key)
4
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from stream_monitor.alerts import Alert

__all__ = ["Detected", "Series", "StatisticTrace"]

Key = tuple[str, str, str, str]


@dataclass(frozen=True, slots=True)
class Detected:
    """A detection: its event index, statistic and threshold, and the detector's ``n_seen`` there."""

    x: int
    statistic: float
    threshold: float
    n_seen: int


@dataclass(slots=True)
class Series:
    """One detector's downsampled samples: per bucket of ``width`` events, the one closest to alarm."""

    width: int = 1
    xs: list[int] = field(default_factory=list)
    statistics: list[float] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)
    detections: list[Detected] = field(default_factory=list)


def _rank(statistic: float, threshold: float) -> tuple[float, float]:
    """Order of samples in a bucket: by statistic over threshold, then statistic; NaN lowest."""
    if math.isnan(statistic):
        return (-math.inf, -math.inf)
    ratio = statistic / threshold if math.isfinite(threshold) and threshold > 0 else -math.inf
    return (ratio, statistic)


class StatisticTrace:
    """The statistic trace of every detector, and the alerts, of one replay."""

    def __init__(self, max_points: int = 2000, samples_per_bucket: int = 1,
                 expected_events: int | None = None) -> None:
        if max_points < 2:
            raise ValueError("max_points must be at least 2")
        if samples_per_bucket < 1:
            raise ValueError("samples_per_bucket must be at least 1")
        self.max_points = max_points
        self.samples_per_bucket = samples_per_bucket
        #: events between two samples at least (from the expected length of the stream)
        self.resolution = max(1, (expected_events or 0) // (max_points * samples_per_bucket))
        self.series: dict[Key, Series] = {}
        #: every alert of the replay, in the order written
        self.alerts: list[Alert] = []

    def _series(self, key: Key) -> Series:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series()
        return series

    def stride(self, key: Key) -> int:
        """Events between two samples of the series."""
        series = self.series.get(key)
        width = 1 if series is None else series.width
        return max(self.resolution, width // self.samples_per_bucket)

    def sample(self, key: Key, x: int, statistic: float, threshold: float) -> None:
        series = self._series(key)
        xs = series.xs
        if xs and xs[-1] // series.width == x // series.width:
            if _rank(statistic, threshold) > _rank(series.statistics[-1], series.thresholds[-1]):
                xs[-1], series.statistics[-1], series.thresholds[-1] = x, statistic, threshold
            return
        xs.append(x)
        series.statistics.append(statistic)
        series.thresholds.append(threshold)
        if len(xs) > self.max_points:
            self._merge(series)

    def detected(self, key: Key, x: int, statistic: float, threshold: float, n_seen: int) -> None:
        self._series(key).detections.append(Detected(x, statistic, threshold, n_seen))

    @staticmethod
    def _merge(series: Series) -> None:
        """Double the bucket width, keeping the sample closest to alarm of each new bucket."""
        width = series.width * 2
        xs: list[int] = []
        statistics: list[float] = []
        thresholds: list[float] = []
        for x, statistic, threshold in zip(series.xs, series.statistics, series.thresholds):
            if xs and xs[-1] // width == x // width:
                if _rank(statistic, threshold) > _rank(statistics[-1], thresholds[-1]):
                    xs[-1], statistics[-1], thresholds[-1] = x, statistic, threshold
                continue
            xs.append(x)
            statistics.append(statistic)
            thresholds.append(threshold)
        series.width, series.xs, series.statistics, series.thresholds = width, xs, statistics, thresholds

    def points(self, key: Key) -> list[tuple[int, float, float]]:
        """The series' samples and its detections, by event index: what a chart draws."""
        series = self.series[key]
        # at one event index a detection comes before the sample taken after the detector re-armed
        ranked = [(x, 1, statistic, threshold)
                  for x, statistic, threshold in zip(series.xs, series.statistics, series.thresholds)]
        ranked += [(d.x, 0, d.statistic, d.threshold) for d in series.detections]
        ranked.sort(key=lambda point: point[:2])
        return [(x, statistic, threshold) for x, _, statistic, threshold in ranked]
