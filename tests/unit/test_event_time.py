"""Implausible event times are replaced by the Kafka message time, and counted."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from stream_monitor.config import Settings
from stream_monitor.events import LabelEvent, PredictionEvent
from stream_monitor.metrics import Metrics
from stream_monitor.monitor import Record
from stream_monitor.pipeline import LabelRecord, Pipeline


def test_a_ts_more_than_a_day_ahead_of_the_kafka_time_takes_the_kafka_time_and_is_counted():
    registry = CollectorRegistry()
    pipeline = Pipeline(Settings(), Metrics(registry))
    kafka = 1_764_000_000.0
    items = [Record(PredictionEvent("e1", "m", "1", 253_402_300_000.0, {}, 0.9), 0, kafka),
             Record(PredictionEvent("e2", "m", "1", kafka - 10, {}, 0.9), 0, kafka),
             LabelRecord(LabelEvent("e1", "m", 1.0, kafka + 3 * 86_400), 0, kafka + 5),
             # long past is plausible (a backfill of old events, a late logger): kept
             Record(PredictionEvent("e3", "m", "1", kafka - 365 * 86_400, {}, 0.9), 0, kafka),
             LabelRecord(LabelEvent("e2", "m", 0.0, kafka - 30 * 86_400), 0, kafka + 6)]
    pipeline.process(items)
    assert items[0].event.ts == kafka and items[1].event.ts == kafka - 10
    assert items[2].label.ts == kafka + 5
    assert items[3].event.ts == kafka - 365 * 86_400 and items[4].label.ts == kafka - 30 * 86_400
    value = registry.get_sample_value
    assert value("stream_monitor_event_time_clamped_total", {"topic_kind": "predictions"}) == 1
    assert value("stream_monitor_event_time_clamped_total", {"topic_kind": "labels"}) == 1
