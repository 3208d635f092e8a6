"""An alert that can never be produced stops the service uncommitted, against the real broker."""

from __future__ import annotations

import io

import orjson

from stream_monitor.config import load_settings
from stream_monitor.replay import replay
from stream_monitor.simulate import Scenario, generate, parse_drift

from .service_harness import MonitorProcess, committed_offset, produce, read_all, write_config


def test_an_alerts_topic_refusing_the_alert_exits_1_with_the_batch_uncommitted(
        kafka_bootstrap, topic_factory, group_id, tmp_path):
    # an alert is several hundred bytes: this topic can never take one
    topics = {"predictions": topic_factory("predictions"),
              "alerts": topic_factory("alerts", config={"max.message.bytes": "200"}),
              "dead_letter": topic_factory("dead-letter")}
    change_at = 5000
    scenario = Scenario(models=("fraud",), n_events=9000, n_numeric=3, n_categorical=0, seed=5,
                        drifts=(parse_drift(f"feature:f01@{change_at}:shift=1.5"),))
    events = [orjson.dumps(event) for event, _ in generate(scenario)]
    produce(kafka_bootstrap, topics["predictions"], events)
    config = write_config(tmp_path / "config.yaml", kafka_bootstrap, group_id, topics)

    # the event that raises the first alert, by replay (offset = position: one partition)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in events))
    out = io.BytesIO()
    replay(load_settings(config), path, out)
    alert_ids = [orjson.loads(line)["event_id"] for line in out.getvalue().splitlines()]
    assert alert_ids, "the shift must raise an alert for this test to mean anything"
    ids = [orjson.loads(event)["event_id"] for event in events]
    first_alert_offset = ids.index(alert_ids[0])

    monitor = MonitorProcess(config, tmp_path / "monitor.log", "--exit-when-idle", "10")
    try:
        assert monitor.wait(timeout_s=120) == 1, monitor.log()
    finally:
        monitor.close()
    log = monitor.log()
    assert "message can never be produced" in log and "MSG_SIZE_TOO_LARGE" in log, log[-3000:]
    assert '"message":"stopped with exit 1"' in log and "uncommitted" in log
    committed = committed_offset(kafka_bootstrap, group_id, topics["predictions"])
    # the batch holding the alert's event (and everything after it) is not committed
    assert committed <= first_alert_offset, (committed, first_alert_offset)
    assert read_all(kafka_bootstrap, topics["alerts"]) == []
