"""Implausible event times are replaced by the Kafka message time, and counted."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from stream_monitor.config import Settings
from stream_monitor.events import LabelEvent, PredictionEvent
from stream_monitor.metrics import Metrics
from stream_monitor.monitor import Record
from stream_monitor.pipeline import LabelRecord, Pipeline


def test_a_ts_a_day_away_from_the_kafka_time_takes_the_kafka_time_and_is_counted():
    registry = CollectorRegistry()
    pipeline = Pipeline(Settings(), Metrics(registry))
    kafka = 1_764_000_000.0
    items = [Record(PredictionEvent("e1", "m", "1", 253_402_300_000.0, {}, 0.9), 0, kafka),
             Record(PredictionEvent("e2", "m", "1", kafka - 10, {}, 0.9), 0, kafka),
             LabelRecord(LabelEvent("e1", "m", 1.0, 0.0), 0, kafka + 5)]
    pipeline.process(items)
    assert items[0].event.ts == kafka and items[1].event.ts == kafka - 10
    assert items[2].label.ts == kafka + 5
    value = registry.get_sample_value
    assert value("stream_monitor_event_time_clamped_total", {"topic_kind": "predictions"}) == 1
    assert value("stream_monitor_event_time_clamped_total", {"topic_kind": "labels"}) == 1
