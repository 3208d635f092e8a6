"""Version against version (canary, A/B): a candidate's values against the baseline's, online.

:mod:`~stream_monitor.compare.source_test` holds the statistic (an anytime-valid
e-process on the version a value came from); :mod:`~stream_monitor.compare.versions`
keeps one per (model, candidate, signal) and turns detections into alerts.
"""

from stream_monitor.compare.source_test import CompareDetection, SourceTest
from stream_monitor.compare.versions import DETECTOR, VersionComparisons

__all__ = ["DETECTOR", "CompareDetection", "SourceTest", "VersionComparisons"]
