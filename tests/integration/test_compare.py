"""A canary against the real broker: version comparison alerts, and agreement with replay."""

from __future__ import annotations

import io

import orjson

from stream_monitor.config import load_settings
from stream_monitor.replay import replay
from stream_monitor.simulate import Scenario, stream

from .service_harness import MonitorProcess, alerts_of, metric_value, produce, read_all, write_config


def test_a_worse_canary_gives_comparison_alerts_by_alert_id_as_replay(
        kafka_bootstrap, topic_factory, group_id, tmp_path):
    topics = {"predictions": topic_factory("predictions"), "labels": topic_factory("labels"),
              "alerts": topic_factory("alerts"), "dead_letter": topic_factory("dead-letter")}
    # version 2 gets 20% of the traffic from event 5000: 12% errors where version 1 has 5%,
    # and scores 0.3 sd higher (logit) on the same inputs
    scenario = Scenario(n_events=20_000, n_numeric=4, seed=2, label_delay_events=500,
                        candidate_version="2", candidate_share=0.2, candidate_from=5000,
                        candidate_error_rate=0.12, candidate_score_shift=0.3)
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
        assert metric_value(text, "stream_monitor_version_compare_differs", model="fraud", model_version="2",
                            baseline_version="1", signal="performance:error_rate",
                            severity="critical") == 1
        assert monitor.terminate()[0] == 0
    finally:
        monitor.close()

    every_alert = alerts_of(read_all(kafka_bootstrap, topics["alerts"]))
    alerts = [a for a in every_alert if a["detector"] == "version_compare"]
    assert {(a["signal"], a["model_version"], a["baseline_version"], a["severity"]) for a in alerts} == {
        ("performance:error_rate", "2", "1", "critical"), ("prediction", "2", "1", "warning")}

    events_file, labels_file = tmp_path / "events.jsonl", tmp_path / "labels.jsonl"
    events_file.write_bytes(b"\n".join(predictions) + b"\n")
    labels_file.write_bytes(b"\n".join(labels) + b"\n")
    out = io.BytesIO()
    replay(load_settings(config), events_file, out, labels_path=labels_file)
    every_replayed = list(map(orjson.loads, out.getvalue().splitlines()))
    replayed = [a for a in every_replayed if a["detector"] == "version_compare"]
    assert sorted(a["alert_id"] for a in alerts) == sorted(a["alert_id"] for a in replayed)
    assert sorted(alerts, key=lambda a: a["alert_id"]) == sorted(replayed, key=lambda a: a["alert_id"])
    # the two versions' predictions are interleaved on the partition (mixed blocks in the service):
    # every alert, not only the comparison's, is replay's
    assert sorted(every_alert, key=lambda a: a["alert_id"]) == sorted(every_replayed, key=lambda a: a["alert_id"])
