"""The label join's global bound, through the pipeline's metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from stream_monitor.config import Settings
from stream_monitor.events import PredictionEvent
from stream_monitor.metrics import Metrics
from stream_monitor.monitor import Record
from stream_monitor.pipeline import Pipeline


def test_predictions_beyond_the_global_bound_are_counted_as_dropped_and_expired():
    registry = CollectorRegistry()
    pipeline = Pipeline(Settings(labels={"max_waiting_predictions": 5}), Metrics(registry))
    pipeline.process([Record(PredictionEvent(f"e{n}", f"m{n % 3}", "1", float(n), {"x": 1.0}, 0.5))
                      for n in range(12)])
    value = registry.get_sample_value
    assert value("stream_monitor_join_dropped_total", {"reason": "global_bound"}) == 7
    assert sum(value("stream_monitor_predictions_expired_total", {"model": f"m{m}"}) or 0
               for m in range(3)) == 7
    assert pipeline.join.pending_predictions() == 5
