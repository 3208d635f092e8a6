"""Unknown top-level input fields: counted and logged, or dead-lettered in strict mode."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from stream_monitor.config import Settings
from stream_monitor.errors import BadMessage
from stream_monitor.metrics import Metrics
from stream_monitor.monitor import Record
from stream_monitor.pipeline import Decoder, LabelRecord, Pipeline


def test_unknown_fields_are_counted_per_topic_kind():
    registry = CollectorRegistry()
    settings = Settings()
    pipeline, decoder = Pipeline(settings, Metrics(registry)), Decoder(settings)
    items = [Record(decoder.prediction(b'{"event_id": "e1", "model": "m", "feature": {"x": 1}}')),
             Record(decoder.prediction(b'{"event_id": "e2", "model": "m", "features": {"x": 1}}')),
             LabelRecord(decoder.label(b'{"event_id": "e1", "model": "m", "label": 1, "why": 2}'))]
    pipeline.process(items)
    value = registry.get_sample_value
    assert value("stream_monitor_unknown_fields_total", {"topic_kind": "predictions"}) == 1
    assert value("stream_monitor_unknown_fields_total", {"topic_kind": "labels"}) == 1


def test_strict_input_rejects_unknown_fields_with_their_reason():
    decoder = Decoder(Settings(input={"strict": True}))
    with pytest.raises(BadMessage) as error:
        decoder.prediction(b'{"event_id": "e1", "model": "m", "feature": {"x": 1}}')
    assert error.value.reason == "unknown_field"
    with pytest.raises(BadMessage) as error:
        decoder.label(b'{"event_id": "e1", "model": "m", "label": 1, "why": 2}')
    assert error.value.reason == "unknown_field"
