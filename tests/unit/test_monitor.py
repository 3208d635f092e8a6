"""Routing: caps, kinds, references, and alerts that do not depend on batching."""

from __future__ import annotations

import json

import numpy as np
from prometheus_client import CollectorRegistry

from stream_monitor.config import Settings, load_settings
from stream_monitor.events import PredictionEvent
from stream_monitor.metrics import Metrics
from stream_monitor.monitor import Monitor, Record


def records(values: np.ndarray, model: str = "m", extra: dict | None = None) -> list[Record]:
    return [Record(PredictionEvent(f"e{i}", model, "1", 1000.0 + i, {"x": float(v), **(extra or {})}, None))
            for i, v in enumerate(values)]


def run(monitor: Monitor, items: list[Record], batch: int) -> list:
    alerts = []
    for start in range(0, len(items), batch):
        alerts.extend(monitor.process(items[start:start + batch]))
    return alerts


def test_alerts_do_not_depend_on_how_the_stream_is_batched():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(0, 1, 4000), rng.normal(1.0, 1, 2000)])
    items = records(values)
    results = [run(Monitor(Settings()), items, batch) for batch in (1, 7, 1000, 10_000)]
    assert results[0], "the shift should be detected"
    assert all(result == results[0] for result in results)
    assert all(alert.n_seen >= 4000 for alert in results[0])


def test_signal_cap_kind_mismatch_and_missing_values_are_counted():
    metrics = Metrics(CollectorRegistry())
    monitor = Monitor(Settings(limits={"max_signals_per_model": 2}), metrics)
    events = [Record(PredictionEvent(f"e{i}", "m", "1", None,
                                     {"a": 1.0, "b": "x" if i else 2.0, "c": None, "d": 4.0}, None))
              for i in range(10)]
    monitor.process(events)
    sample = metrics.registry.get_sample_value
    assert sample("stream_monitor_signals", {"model": "m"}) == 2
    assert sample("stream_monitor_signals_dropped_total", {"model": "m", "reason": "signal_cap"}) == 10  # "d" every time
    assert sample("stream_monitor_values_skipped_total", {"model": "m", "reason": "missing"}) == 10
    assert sample("stream_monitor_values_skipped_total", {"model": "m", "reason": "kind_mismatch"}) == 9


def test_model_cap_counts_what_it_drops():
    metrics = Metrics(CollectorRegistry())
    monitor = Monitor(Settings(limits={"max_models": 1, "model_min_idle_events": 1000}), metrics)
    monitor.process(records(np.zeros(5), model="first") + records(np.zeros(3), model="second"))
    assert metrics.registry.get_sample_value("stream_monitor_models_dropped_total",
                                             {"reason": "model_cap"}) == 3


def test_reference_snapshot_is_used_and_named_in_alerts(tmp_path):
    rng = np.random.default_rng(8)
    snapshot = tmp_path / "reference.json"
    snapshot.write_text(json.dumps({"feature:x": rng.normal(5.0, 1.0, 2000).tolist()}))
    config = tmp_path / "config.yaml"
    config.write_text(f"models:\n  - reference: {{snapshot: '{snapshot}', id: train-2025-11}}\n"
                      "    detectors: {numeric: [{name: ks}]}\n")
    settings = load_settings(config)
    # the live data never looked like the snapshot: the KS test says so at once
    alerts = Monitor(settings).process(records(rng.normal(0.0, 1.0, 1000)))
    assert alerts and alerts[0].reference == "snapshot:train-2025-11"
    assert alerts[0].n_seen < 400
    # data like the snapshot: quiet
    assert Monitor(settings).process(records(rng.normal(5.0, 1.0, 5000))) == []


def test_a_new_version_beyond_the_cap_evicts_the_least_recently_seen_one_and_its_series():
    metrics = Metrics(CollectorRegistry())
    monitor = Monitor(Settings(limits={"max_versions_per_model": 2}), metrics)

    def batch(version: str) -> list[Record]:
        return [Record(PredictionEvent(f"{version}-{i}", "m", version, None, {"x": float(i % 7)}, None))
                for i in range(50)]

    sample = metrics.registry.get_sample_value
    labels = {"model": "m", "signal": "feature:x", "detector": "quantile_chi2", "severity": "warning"}
    monitor.process(batch("1"))
    monitor.process(batch("2"))
    monitor.process(batch("1"))  # version 1 is now the more recent
    monitor.process(batch("3"))  # evicts version 2
    assert sample("stream_monitor_detector_threshold", {**labels, "model_version": "2"}) is None
    assert sample("stream_monitor_detector_threshold", {**labels, "model_version": "1"}) is not None
    assert sample("stream_monitor_detector_threshold", {**labels, "model_version": "3"}) is not None


def test_the_statistic_gauges_are_read_at_most_once_per_interval_and_on_refresh():
    metrics = Metrics(CollectorRegistry())
    now = [100.0]
    monitor = Monitor(Settings(), metrics, clock=lambda: now[0])
    monitor.gauge_interval_s = 1.0
    rng = np.random.default_rng(5)
    items = records(rng.normal(0.0, 1.0, 6000))
    labels = {"model": "m", "model_version": "1", "signal": "feature:x", "severity": "warning"}
    names = ("page_hinkley", "quantile_chi2", "scale")

    def gauges() -> list[float | None]:
        return [metrics.registry.get_sample_value("stream_monitor_detector_statistic", {**labels, "detector": name})
                for name in names]

    def statistics() -> list[float]:
        state = monitor._versions[("m", "1")].by_feature["x"]
        return [detector.statistic for detector in state.detectors]

    monitor.process(items[:3000])  # the first batch reads them
    first = statistics()
    assert gauges() == first
    monitor.process(items[3000:4000])  # within the interval: the gauges keep the first batch's values
    assert statistics() != first and gauges() == first
    now[0] += 1.0
    monitor.process(items[4000:5000])  # the interval is over: read again
    assert gauges() == statistics()
    monitor.process(items[5000:])
    assert gauges() != statistics()
    monitor.refresh_gauges()  # what the service does at an empty poll
    assert gauges() == statistics()
    thresholds = [metrics.registry.get_sample_value("stream_monitor_detector_threshold", {**labels, "detector": name})
                  for name in names]
    state = monitor._versions[("m", "1")].by_feature["x"]
    assert thresholds == [detector.threshold for detector in state.detectors]


def test_with_no_interval_the_statistic_gauges_follow_every_batch():
    metrics = Metrics(CollectorRegistry())
    monitor = Monitor(Settings(), metrics)
    rng = np.random.default_rng(6)
    items = records(rng.normal(0.0, 1.0, 5000))
    labels = {"model": "m", "model_version": "1", "signal": "feature:x", "severity": "warning",
              "detector": "page_hinkley"}
    for start in range(0, 5000, 1000):
        monitor.process(items[start:start + 1000])
        detector = monitor._versions[("m", "1")].by_feature["x"].detectors[0]
        assert metrics.registry.get_sample_value("stream_monitor_detector_statistic", labels) == detector.statistic
