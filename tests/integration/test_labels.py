"""Late labels against the real broker: performance drift alerts, and agreement with replay."""

from __future__ import annotations

import io

import orjson
import pytest

from stream_monitor.config import load_settings
from stream_monitor.replay import replay
from stream_monitor.simulate import Scenario, parse_drift, stream

from .service_harness import MonitorProcess, alerts_of, metric_value, produce, read_all, write_config


def _key(alert: dict) -> tuple:
    return (alert["signal"], alert["detector"], alert["n_seen"], alert["event_id"])


def test_error_rate_rise_gives_a_performance_alert_only_and_matches_replay(
        kafka_bootstrap, topic_factory, group_id, tmp_path):
    topics = {"predictions": topic_factory("predictions"), "labels": topic_factory("labels"),
              "alerts": topic_factory("alerts"), "dead_letter": topic_factory("dead-letter")}
    change_at = 20_000
    scenario = Scenario(models=("fraud",), n_events=40_000, seed=21, label_delay_events=500,
                        drifts=(parse_drift(f"performance:error_rate@{change_at}:error=0.15"),))
    predictions, labels = [], []
    for kind, item in stream(scenario):
        (predictions if kind == "prediction" else labels).append(orjson.dumps(item))
    produce(kafka_bootstrap, topics["predictions"], predictions)
    produce(kafka_bootstrap, topics["labels"], labels)
    config = write_config(tmp_path / "config.yaml", kafka_bootstrap, group_id, topics)

    monitor = MonitorProcess(config, tmp_path / "monitor.log")
    try:
        monitor.wait_consumed(topics["labels"], len(labels))
        monitor.wait_consumed(topics["predictions"], len(predictions))
        text = monitor.scrape()
        assert metric_value(text, "stream_monitor_labels_total", model="fraud", outcome="joined") == len(labels)
        assert metric_value(text, "stream_monitor_label_delay_seconds_count") == len(labels)
        assert metric_value(text, "stream_monitor_model_performance", model="fraud",
                            signal="performance:error_rate") == pytest.approx(0.15, abs=0.05)
        assert monitor.terminate()[0] == 0
    finally:
        monitor.close()

    alerts = alerts_of(read_all(kafka_bootstrap, topics["alerts"]))
    assert alerts, "the error-rate rise was not detected"
    assert {a["signal"] for a in alerts} == {"performance:error_rate"}
    assert all(a["severity"] == "critical" for a in alerts)
    assert min(int(a["event_id"].rsplit("-", 1)[1]) for a in alerts) >= change_at

    events_file, labels_file = tmp_path / "events.jsonl", tmp_path / "labels.jsonl"
    events_file.write_bytes(b"\n".join(predictions) + b"\n")
    labels_file.write_bytes(b"\n".join(labels) + b"\n")
    out = io.BytesIO()
    replay(load_settings(config), events_file, out, labels_path=labels_file)
    replayed = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert sorted(alerts, key=_key) == sorted(replayed, key=_key)
