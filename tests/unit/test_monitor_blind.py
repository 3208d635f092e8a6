"""Issue 9: kinds from evidence, caps that release, isolated detector errors, severity labels."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
from prometheus_client import CollectorRegistry

from stream_monitor.config import Settings
from stream_monitor.events import PredictionEvent
from stream_monitor.metrics import Metrics
from stream_monitor.monitor import Monitor, Record


def feature_records(values: list, model: str = "m", version: str = "1", start: int = 0) -> list[Record]:
    return [Record(PredictionEvent(f"{model}-{start + i}", model, version, 1000.0 + start + i,
                                   {"x": v}, None)) for i, v in enumerate(values)]


def shifted(seed: int, before: int = 3000, after: int = 1500, shift: float = 2.0) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(v) for v in np.concatenate([rng.normal(0, 1, before), rng.normal(shift, 1, after)])]


def run(monitor: Monitor, items: list[Record], batch: int) -> list:
    alerts = []
    for start in range(0, len(items), batch):
        alerts.extend(monitor.process(items[start:start + batch]))
    return alerts


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_first_string_value_does_not_make_a_numeric_feature_categorical(seed):
    metrics = Metrics(CollectorRegistry())
    items = feature_records(["N/A", *shifted(seed)])
    alerts = run(Monitor(Settings(), metrics), items, 1000)
    numeric = [a for a in alerts if a.signal == "feature:x" and a.detector in ("page_hinkley", "quantile_chi2")]
    assert numeric and all(a.n_seen >= 3000 - 2 for a in numeric)
    sample = metrics.registry.get_sample_value
    # the kind was still being decided: not a schema change (that would page someone)
    assert sample("stream_monitor_schema_changes_total", {"model": "m", "signal": "feature:x"}) is None


def test_a_categorical_feature_that_turns_to_numbers_is_a_schema_change():
    metrics = Metrics(CollectorRegistry())
    monitor = Monitor(Settings(), metrics)
    monitor.process(feature_records(["a", "b"] * 25 + [float(v) for v in range(60)]))
    sample = metrics.registry.get_sample_value
    assert sample("stream_monitor_schema_changes_total", {"model": "m", "signal": "feature:x"}) == 1


def test_kind_alerts_do_not_depend_on_the_batch_cut():
    values = ["N/A", "N/A", 0.5, *shifted(4)[:2000], "N/A", *shifted(4)[2000:]]
    items = feature_records(values)
    results = [run(Monitor(Settings()), items, batch) for batch in (1, 7, 1000)]
    assert results[0]
    assert results[0] == results[1] == results[2]


def test_a_declared_kind_is_kept_and_the_other_kind_is_skipped():
    metrics = Metrics(CollectorRegistry())
    settings = Settings(models=[{"model": "m", "kinds": {"x": "categorical"}}])
    monitor = Monitor(settings, metrics)
    monitor.process(feature_records(["a", 1.0, 2.0, 3.0, "b"]))
    sample = metrics.registry.get_sample_value
    assert sample("stream_monitor_values_skipped_total", {"model": "m", "reason": "kind_mismatch"}) == 3
    assert sample("stream_monitor_schema_changes_total", {"model": "m", "signal": "feature:x"}) is None


def test_a_numeric_feature_that_turns_to_strings_is_a_schema_change():
    metrics = Metrics(CollectorRegistry())
    monitor = Monitor(Settings(), metrics)
    monitor.process(feature_records([1.0] * 10 + ["s"] * 300))
    sample = metrics.registry.get_sample_value
    assert sample("stream_monitor_values_skipped_total", {"model": "m", "reason": "kind_mismatch"}) == 300
    assert sample("stream_monitor_schema_changes_total", {"model": "m", "signal": "feature:x"}) == 1


def test_after_150_short_lived_models_a_new_model_that_drifts_is_detected():
    metrics = Metrics(CollectorRegistry())
    monitor = Monitor(Settings(), metrics)
    for index in range(150):
        monitor.process(feature_records([0.0, 1.0, 2.0], model=f"short{index}"))
    alerts = run(monitor, feature_records(shifted(5), model="late"), 1000)
    assert any(a.model == "late" and a.n_seen >= 3000 for a in alerts)
    sample = metrics.registry.get_sample_value
    assert sample("stream_monitor_keys_evicted_total", {"kind": "model"}) == 51
    assert len(monitor.models()) == 100
    # the evicted models' series are gone
    assert sample("stream_monitor_signals", {"model": "short0"}) is None


def test_a_version_that_renames_its_features_gets_its_own_signal_budget():
    metrics = Metrics(CollectorRegistry())
    monitor = Monitor(Settings(limits={"max_signals_per_model": 2}), metrics)
    old = [Record(PredictionEvent(f"a{i}", "m", "1", None, {"a": 1.0, "b": 2.0}, None)) for i in range(5)]
    new = [Record(PredictionEvent(f"b{i}", "m", "2", None, {"c": 1.0, "d": 2.0, "e": 3.0}, None))
           for i in range(5)]
    monitor.process(old + new)
    sample = metrics.registry.get_sample_value
    # "c" and "d" are monitored for version 2; only "e" is over the cap
    assert sample("stream_monitor_signals_dropped_total", {"model": "m", "reason": "signal_cap"}) == 5


def test_min_idle_protects_recent_models_and_counts_the_drop():
    metrics = Metrics(CollectorRegistry())
    monitor = Monitor(Settings(limits={"max_models": 1, "model_min_idle_events": 100}), metrics)
    monitor.process(feature_records([0.0] * 5, model="first") + feature_records([0.0] * 3, model="second"))
    sample = metrics.registry.get_sample_value
    assert sample("stream_monitor_models_dropped_total", {"reason": "model_cap"}) == 3
    monitor.process(feature_records([0.0] * 100, model="first", start=5))
    monitor.process(feature_records([0.0] * 99, model="third"))
    assert sample("stream_monitor_keys_evicted_total", {"kind": "model"}) is None
    assert set(monitor.models()) == {"first"}
    # "first" has now been idle for 100 events: it makes room
    monitor.process(feature_records([0.0], model="third", start=99))
    assert sample("stream_monitor_keys_evicted_total", {"kind": "model"}) == 1
    assert set(monitor.models()) == {"third"}


def test_drift_metrics_carry_the_severity():
    metrics = Metrics(CollectorRegistry())
    monitor = Monitor(Settings(models=[{"model": "m", "severity": "info"}]), metrics)
    run(monitor, feature_records(shifted(6)), 1000)
    labels = {"model": "m", "model_version": "1", "signal": "feature:x", "detector": "quantile_chi2",
              "severity": "info"}
    assert metrics.registry.get_sample_value("stream_monitor_drift_detections_total", labels) >= 1


class _Broken:
    """A detector stand-in that raises on every update."""

    name = "broken"
    kind = "numeric"
    statistic = 0.0
    threshold = 1.0

    def update(self, values):
        raise RuntimeError("boom")


def test_a_detector_that_raises_is_isolated_and_the_others_still_alert(caplog):
    metrics = Metrics(CollectorRegistry())
    monitor = Monitor(Settings(), metrics)
    items = feature_records(shifted(7))
    monitor.process(items[:10])
    state = monitor._versions[("m", "1")].by_feature["x"]
    state.detectors.insert(0, _Broken())
    state.last_detection.insert(0, None)
    state.series.insert(0, metrics.detectors.record("m", "1", "feature:x", "broken", "warning"))
    alerts = run(monitor, items[10:], 500)
    assert {a.detector for a in alerts} >= {"page_hinkley", "quantile_chi2"}
    sample = metrics.registry.get_sample_value
    assert sample("stream_monitor_detector_errors_total", {"model": "m", "detector": "broken"}) == 1
    failures = [r for r in caplog.records if "detector failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None


def test_preflight_refuses_a_warmup_ks_cannot_take():
    # the config's bound is what every detector takes: 200,000 is refused when the settings load
    with pytest.raises(pydantic.ValidationError, match="warmup"):
        Settings(models=[{"model": "m", "reference": {"warmup": 200_000}}])
    assert Monitor.preflight(Settings(models=[{"model": "m", "reference": {"warmup": 100_000}}])) == []
    assert Monitor.preflight(Settings(models=[{"model": "m", "reference": {"warmup": 2000}}])) == []
    assert Monitor.preflight(Settings()) == []


def test_a_version_brought_back_by_a_late_label_keeps_its_family_size():
    settings = Settings()
    monitor = Monitor(settings)
    features = {f"f{i}": 0.0 for i in range(20)}
    monitor.process([Record(PredictionEvent("a", "m", "1", None, features, 0.5))])
    family = monitor._versions[("m", "1")].family_signals
    monitor._evict(monitor._versions[("m", "1")])
    label_event = PredictionEvent("a", "m", "1", None, {}, None)
    monitor.feed_signal("m", "1", "performance:error_rate", [(0.0, Record(label_event))])
    assert monitor._versions[("m", "1")].family_signals == family == 21


def test_a_late_label_for_an_evicted_version_keeps_the_false_alarm_correction_in_the_pipeline():
    from stream_monitor.events import LabelEvent
    from stream_monitor.pipeline import LabelRecord, Pipeline

    pipeline = Pipeline(Settings(limits={"max_versions_per_model": 1}))
    features = {f"f{i}": 0.0 for i in range(20)}
    old = [Record(PredictionEvent(f"a{i}", "m", "1", None, features, 0.9)) for i in range(5)]
    new = [Record(PredictionEvent(f"b{i}", "m", "2", None, features, 0.9)) for i in range(5)]
    pipeline.process(old + new)
    assert not pipeline.monitor.has_version("m", "1")
    pipeline.process([LabelRecord(LabelEvent(f"a{i}", "m", 1.0, None)) for i in range(5)])
    assert pipeline.monitor.has_version("m", "1")
    assert pipeline.monitor._versions[("m", "1")].family_signals == 21


def test_signals_a_rule_leaves_out_are_not_counted_as_dropped():
    # the StreamMonitorSignalsDropped rule pages on this counter: a choice is not a loss
    metrics = Metrics(CollectorRegistry())
    monitor = Monitor(Settings(models=[{"model": "m", "signals": ["feature:a"]}]), metrics)
    monitor.process([Record(PredictionEvent(f"e{i}", "m", "1", None, {"a": 1.0, "b": 2.0}, 0.5))
                     for i in range(50)])
    monitor.feed_signal("m", "1", "performance:error_rate",
                        [(0.0, Record(PredictionEvent("e1", "m", "1", None, {}, None)))])
    sample = metrics.registry.get_sample_value
    assert sample("stream_monitor_signals_dropped_total", {"model": "m", "reason": "signal_cap"}) is None
