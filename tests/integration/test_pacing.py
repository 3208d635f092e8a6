"""Predictions read far ahead of their labels wait for them instead of expiring.

Labels here carry a large extra field, so each fetch brings few labels and many
predictions: the predictions topic runs ahead, beyond the join's retention.
"""

from __future__ import annotations

import orjson

from stream_monitor.simulate import Scenario, stream

from .service_harness import MonitorProcess, metric_sum, produce, write_config


def test_a_predictions_backlog_does_not_expire_predictions_whose_labels_are_unread(
        kafka_bootstrap, topic_factory, group_id, tmp_path):
    topics = {"predictions": topic_factory("predictions"), "labels": topic_factory("labels"),
              "alerts": topic_factory("alerts"), "dead_letter": topic_factory("dead-letter")}
    scenario = Scenario(models=("fraud",), n_events=12_000, n_numeric=1, n_categorical=0, seed=2,
                        label_delay_events=100)
    predictions, labels = [], []
    for kind, item in stream(scenario):
        if kind == "prediction":
            predictions.append(orjson.dumps(item))
        else:
            labels.append(orjson.dumps({**item, "note": "x" * 4000}))
    produce(kafka_bootstrap, topics["predictions"], predictions)
    produce(kafka_bootstrap, topics["labels"], labels)
    config = write_config(tmp_path / "config.yaml", kafka_bootstrap, group_id, topics,
                          extra="labels: {retention_events: 5000}\n")
    monitor = MonitorProcess(config, tmp_path / "monitor.log")
    try:
        monitor.wait_consumed(topics["labels"], len(labels), timeout_s=180)
        monitor.wait_consumed(topics["predictions"], len(predictions))
        text = monitor.scrape()
        outcomes = {outcome: metric_sum(text, "stream_monitor_labels_total", model="fraud", outcome=outcome)
                    for outcome in ("joined", "late", "unmatched", "duplicate")}
        assert outcomes == {"joined": len(labels), "late": 0, "unmatched": 0, "duplicate": 0}
        assert monitor.terminate()[0] == 0
    finally:
        monitor.close()


def test_a_labels_backlog_waits_for_its_predictions_however_long_the_predictions_take_to_read(
        kafka_bootstrap, topic_factory, group_id, tmp_path):
    # the mirror case: predictions carry the large field, so each fetch brings many labels and
    # few predictions, and the labels run ahead for the whole backlog (many times the join's room)
    topics = {"predictions": topic_factory("predictions"), "labels": topic_factory("labels"),
              "alerts": topic_factory("alerts"), "dead_letter": topic_factory("dead-letter")}
    scenario = Scenario(models=("fraud",), n_events=12_000, n_numeric=1, n_categorical=0, seed=3,
                        label_delay_events=100)
    predictions, labels = [], []
    for kind, item in stream(scenario):
        if kind == "prediction":
            predictions.append(orjson.dumps({**item, "note": "x" * 4000}))
        else:
            labels.append(orjson.dumps(item))
    produce(kafka_bootstrap, topics["predictions"], predictions)
    produce(kafka_bootstrap, topics["labels"], labels)
    config = write_config(tmp_path / "config.yaml", kafka_bootstrap, group_id, topics,
                          extra="labels: {early_label_events: 4000}\n")
    monitor = MonitorProcess(config, tmp_path / "monitor.log")
    try:
        monitor.wait_consumed(topics["predictions"], len(predictions), timeout_s=180)
        monitor.wait_consumed(topics["labels"], len(labels))
        text = monitor.scrape()
        outcomes = {outcome: metric_sum(text, "stream_monitor_labels_total", model="fraud", outcome=outcome)
                    for outcome in ("joined", "late", "unmatched", "duplicate")}
        assert outcomes == {"joined": len(labels), "late": 0, "unmatched": 0, "duplicate": 0}
        assert monitor.terminate()[0] == 0
    finally:
        monitor.close()
