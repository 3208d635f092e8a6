"""stream_monitor_drift_active: 1 for drift_active_hold_s seconds after a detector's last detection.

The hold is in (wall-clock) seconds, not in values: at a few thousand events
per second a hold of N values ends between two scrapes. The clock is injected.
"""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from stream_monitor.config import Settings, load_settings
from stream_monitor.errors import ConfigError
from stream_monitor.events import PredictionEvent
from stream_monitor.metrics import Metrics
from stream_monitor.monitor import Monitor, Record

HOLD_S = 300.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def records(values: np.ndarray, first: int) -> list[Record]:
    return [Record(PredictionEvent(f"e{first + i}", "m", "1", 1000.0 + first + i, {"x": float(v)}, None))
            for i, v in enumerate(values)]


def active(metrics: Metrics) -> dict[str, float]:
    """drift_active of feature:x per detector, as a scrape sees it."""
    found = {}
    for family in metrics.registry.collect():
        if family.name == "stream_monitor_drift_active":
            for sample in family.samples:
                if sample.labels["signal"] == "feature:x":
                    found[sample.labels["detector"]] = sample.value
    return found


def test_drift_active_holds_for_the_configured_seconds_whatever_the_values_that_follow():
    clock = Clock(1000.0)
    metrics = Metrics(CollectorRegistry())
    monitor = Monitor(Settings(drift_active_hold_s=HOLD_S), metrics, clock=clock)
    rng = np.random.default_rng(5)
    before = rng.normal(0, 1, 3000)
    after = rng.normal(2, 1, 30_000)
    assert monitor.process(records(before, 0)) == []
    assert active(metrics) and set(active(metrics).values()) == {0.0}
    # the change at value 3000: the detectors that fire hold 1 from t=1000
    fired_first = {alert.detector for alert in monitor.process(records(after[:1000], 3000))}
    assert fired_first, "the shift should be detected"
    assert {d for d, v in active(metrics).items() if v == 1.0} == fired_first

    # 29,000 more values (post-change, so quiet) nearly HOLD_S later: still held, however many
    clock.now = 1000.0 + HOLD_S - 1
    later = monitor.process(records(after[1000:], 4000))
    refired = {alert.detector for alert in later}
    state = active(metrics)
    assert {d for d, v in state.items() if v == 1.0} == fired_first | refired

    # the hold runs out with no value fed: the gauge is read at scrape time
    clock.now = 1000.0 + HOLD_S
    state = active(metrics)
    assert {d for d, v in state.items() if v == 1.0} == refired
    clock.now = 1000.0 + 2 * HOLD_S - 1
    assert {d for d, v in active(metrics).items() if v == 1.0} == refired
    clock.now = 1000.0 + 2 * HOLD_S - 1 + 0.001
    assert set(active(metrics).values()) == {0.0}


def test_a_detection_restarts_the_hold():
    clock = Clock(0.0)
    metrics = Metrics(CollectorRegistry())
    monitor = Monitor(Settings(drift_active_hold_s=10), metrics, clock=clock)
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.normal(0, 1, 3000), rng.normal(2, 1, 1000)])
    (detector, *_) = sorted({alert.detector for alert in monitor.process(records(values, 0))})
    assert active(metrics)[detector] == 1.0
    # the signal shifts back at t=9: the detector fires again and holds until t=19
    clock.now = 9.0
    back = monitor.process(records(rng.normal(0, 1, 3000), 4000))
    assert detector in {alert.detector for alert in back}
    clock.now = 18.9
    assert active(metrics)[detector] == 1.0
    clock.now = 19.0
    assert active(metrics)[detector] == 0.0


def test_the_hold_is_validated_naming_the_field(tmp_path):
    assert Settings().drift_active_hold_s == 600
    path = tmp_path / "config.yaml"
    path.write_text("drift_active_hold_s: 0\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert [field for field, _ in caught.value.problems] == ["drift_active_hold_s"]


def test_the_old_value_count_setting_is_refused_naming_its_replacement(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("drift_active_values: 10000\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    ((field, reason),) = caught.value.problems
    assert field == "drift_active_values"
    assert "drift_active_hold_s" in reason


def test_drift_series_carry_the_signals_severity_for_routing():
    """Performance signals are critical; features take the model rule's severity (the rule reads it)."""
    metrics = Metrics(CollectorRegistry())
    monitor = Monitor(Settings(models=[{"model": "m", "severity": "info"}]), metrics)
    rng = np.random.default_rng(5)
    items = records(rng.normal(0, 1, 100), 0)
    monitor.process(items)
    monitor.feed_signal("m", "1", "performance:error_rate", [(float(i % 2), item) for i, item in enumerate(items)])
    severities = {(sample.labels["signal"], sample.labels["severity"])
                  for family in metrics.registry.collect() if family.name == "stream_monitor_drift_active"
                  for sample in family.samples}
    assert severities == {("feature:x", "info"), ("performance:error_rate", "critical")}
