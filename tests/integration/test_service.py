"""`stream-monitor run` against the real broker: alerts, dead letters, metrics,
shutdown and restart, and agreement with `replay`."""

from __future__ import annotations

import io
from pathlib import Path

import jsonschema
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from stream_monitor.alerts import ALERT_SCHEMA
from stream_monitor.config import load_settings
from stream_monitor.events import REJECT_REASONS
from stream_monitor.detectors import default_specs
from stream_monitor.replay import replay
from stream_monitor.simulate import Scenario, generate, parse_drift

from .service_harness import (
    MonitorProcess,
    alerts_of,
    committed_offset,
    high_watermark,
    metric_sum,
    metric_value,
    metric_values,
    produce,
    read_all,
    wait_until,
    write_config,
)


@pytest.fixture
def topics(topic_factory):
    return {"predictions": topic_factory("predictions"), "alerts": topic_factory("alerts"),
            "dead_letter": topic_factory("dead-letter")}


def _events(scenario: Scenario) -> list[bytes]:
    return [orjson.dumps(event) for event, _ in generate(scenario)]


def _replay_alerts(config: Path, events: list[bytes], tmp_path: Path) -> list[dict]:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in events))
    out = io.BytesIO()
    replay(load_settings(config), path, out)
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_drift_alerts_name_only_the_drifting_signal_and_match_replay(
        kafka_bootstrap, topics, group_id, tmp_path):
    change_at = 6000
    scenario = Scenario(models=("fraud", "churn"), n_events=12_000, seed=11,
                        drifts=(parse_drift(f"fraud:feature:f03@{change_at}:shift=1.0"),))
    events = _events(scenario)
    produce(kafka_bootstrap, topics["predictions"], ((orjson.loads(e)["model"].encode(), e) for e in events))
    config = write_config(tmp_path / "config.yaml", kafka_bootstrap, group_id, topics)

    monitor = MonitorProcess(config, tmp_path / "monitor.log", "--exit-when-idle", "4")
    try:
        assert monitor.wait() == 0, monitor.log()
    finally:
        monitor.close()

    messages = read_all(kafka_bootstrap, topics["alerts"])
    alerts = alerts_of(messages)
    assert alerts, "the +1 sigma shift was not detected"
    for message, alert in zip(messages, alerts):
        jsonschema.validate(alert, ALERT_SCHEMA)
        assert (alert["model"], alert["signal"]) == ("fraud", "feature:f03")
        assert message.key() == b"fraud/feature:f03"
        assert int(alert["event_id"].rsplit("-", 1)[1]) >= change_at
        assert alert["n_seen"] >= change_at
    first = min(int(alert["event_id"].rsplit("-", 1)[1]) for alert in alerts)
    assert first - change_at <= 200, f"first detection {first - change_at} events after the change"

    assert alerts == _replay_alerts(config, events, tmp_path)


def test_stationary_stream_of_200k_events_gives_no_alert(kafka_bootstrap, topics, group_id, tmp_path):
    events = _events(Scenario(models=("fraud",), n_events=200_000, seed=5))
    produce(kafka_bootstrap, topics["predictions"], events)
    config = write_config(tmp_path / "config.yaml", kafka_bootstrap, group_id, topics)
    monitor = MonitorProcess(config, tmp_path / "monitor.log", "--exit-when-idle", "4")
    try:
        monitor.wait_consumed(topics["predictions"], len(events), timeout_s=300)
        assert monitor.wait(timeout_s=60) == 0, monitor.log()
    finally:
        monitor.close()
    # the monitor has exited: nothing more can arrive, and the topic is truly empty
    assert high_watermark(kafka_bootstrap, topics["alerts"]) == 0
    assert alerts_of(read_all(kafka_bootstrap, topics["alerts"])) == []


# One bad message of every kind, each at a known place in a valid stream.
BAD_MESSAGES = {
    "invalid_json": b'{"event_id": "x", "model": "fraud",',
    "invalid_utf8": b'{"event_id": "\xff\xfe", "model": "fraud"}',
    "missing_field": b'{"model": "fraud", "features": {"f00": 1.0}}',
    "wrong_type": b'{"event_id": 17, "model": "fraud"}',
    "non_finite": b'{"event_id": "nan-1", "model": "fraud", "features": {"f00": NaN}}',
    "nested_value": b'{"event_id": "n-1", "model": "fraud", "features": {"f00": {"a": 1}}}',
    "oversize": b'{"event_id": "big", "model": "fraud", "features": {"f00": "' + b"x" * 20_000 + b'"}}',
    "empty_value": b"",
    "not_an_object": b"[1, 2, 3]",
    "unknown_model": b'{"event_id": "u-1", "model": "not-allowed", "features": {"f00": 1.0}}',
    "unknown_field": b'{"event_id": "k-1", "model": "fraud", "feature": {"f00": 1.0}}',
}


def test_bad_input_is_dead_lettered_once_and_metrics_shutdown_and_restart_hold(
        kafka_bootstrap, topics, group_id, tmp_path):
    assert set(BAD_MESSAGES) == set(REJECT_REASONS)
    change_at = 3000
    valid = _events(Scenario(models=("fraud",), n_events=6000, seed=3,
                             drifts=(parse_drift(f"feature:f05@{change_at}:shift=1.5"),)))
    stream: list[bytes] = []
    bad_at = {}
    for position, event in enumerate(valid):
        if position % 500 == 250 and len(bad_at) < len(BAD_MESSAGES):
            reason = list(BAD_MESSAGES)[len(bad_at)]
            bad_at[reason] = len(stream)
            stream.append(BAD_MESSAGES[reason])
        stream.append(event)
    assert len(bad_at) == len(BAD_MESSAGES)
    producer_messages = [(b"fraud", value) for value in stream]
    produce(kafka_bootstrap, topics["predictions"], producer_messages)
    config = write_config(tmp_path / "config.yaml", kafka_bootstrap, group_id, topics,
                          extra="limits:\n  max_message_bytes: 10000\nallowed_models: [fraud]\n"
                                "input:\n  strict: true\n")

    monitor = MonitorProcess(config, tmp_path / "monitor.log")
    try:
        monitor.wait_consumed(topics["predictions"], len(stream))
        # the lag of the caught-up partition appears with the next statistics report
        wait_until(lambda: metric_value(monitor.scrape(), "stream_monitor_consumer_lag_messages",
                                        topic=topics["predictions"], partition="0") == 0, 30,
                   "consumer lag 0 on the input partition")
        text = monitor.scrape()
        for reason in BAD_MESSAGES:
            assert metric_value(text, "stream_monitor_events_rejected_total",
                                topic=topics["predictions"], reason=reason) == 1, reason
        labels = {"model": "fraud", "model_version": "1", "signal": "feature:f05"}
        assert metric_sum(text, "stream_monitor_drift_detections_total", **labels) >= 1
        assert max(metric_values(text, "stream_monitor_drift_active", **labels)) == 1
        # the quiet signals have every detector's drift_active at 0
        assert set(metric_values(text, "stream_monitor_drift_active", signal="feature:f00")) == {0.0}
        for detector in [spec.name for spec in default_specs("numeric")]:
            statistic = metric_value(text, "stream_monitor_detector_statistic",
                                     signal="feature:f00", detector=detector)
            threshold = metric_value(text, "stream_monitor_detector_threshold",
                                     signal="feature:f00", detector=detector)
            assert 0 <= statistic < threshold, (detector, statistic, threshold)
        assert metric_value(text, "stream_monitor_last_event_timestamp_seconds", model="fraud") == \
            pytest.approx(orjson.loads(valid[-1])["ts"])
        assert metric_value(text, "stream_monitor_build_info") == 1
        assert metric_value(text, "stream_monitor_batch_processing_seconds_count") >= 1
        assert metric_value(text, "stream_monitor_signals", model="fraud") == 22
        assert monitor.get("/healthz")[0] == 200
        # ready once the lag is known (statistics every 500 ms) and within ready_max_lag
        wait_until(lambda: monitor.get("/readyz")[0] == 200, 30, "readiness")
        code, elapsed = monitor.terminate()
        assert code == 0, monitor.log()
        assert elapsed < 10
    finally:
        monitor.close()

    # the group's committed offset is the end of what was processed: everything
    checker = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group_id})
    committed = checker.committed([TopicPartition(topics["predictions"], 0)], timeout=10)[0].offset
    checker.close()
    assert committed == len(stream)

    dead = read_all(kafka_bootstrap, topics["dead_letter"])
    assert len(dead) == len(BAD_MESSAGES)
    by_reason = {}
    for message in dead:
        headers = {key: value.decode() for key, value in message.headers()}
        by_reason[headers["error.reason"]] = (message.value(), headers)
    assert set(by_reason) == set(BAD_MESSAGES)
    for reason, (value, headers) in by_reason.items():
        assert (value or b"") == BAD_MESSAGES[reason]
        assert headers["source.topic"] == topics["predictions"]
        assert headers["source.partition"] == "0"
        assert int(headers["source.offset"]) == bad_at[reason]
        assert headers["error.detail"]

    alerts = alerts_of(read_all(kafka_bootstrap, topics["alerts"]))
    assert alerts and {a["signal"] for a in alerts} == {"feature:f05"}
    assert alerts == _replay_alerts(config, valid, tmp_path)

    # a restart resumes after the committed offset: only the new events are consumed
    more = _events(Scenario(models=("fraud",), n_events=500, seed=4))
    produce(kafka_bootstrap, topics["predictions"], more)
    restarted = MonitorProcess(config, tmp_path / "monitor-2.log")
    try:
        restarted.wait_consumed(topics["predictions"], len(more))
        assert restarted.terminate()[0] == 0
        assert restarted.consumed_at_exit(topics["predictions"]) == len(more)
        assert committed_offset(kafka_bootstrap, group_id, topics["predictions"]) == len(stream) + len(more)
    finally:
        restarted.close()


def test_the_loop_raises_the_collectors_young_generation_and_restores_it(kafka_bootstrap, topic_factory, group_id,
                                                                        state_topics, monkeypatch):
    import gc

    from prometheus_client import CollectorRegistry

    from stream_monitor.config import Settings
    from stream_monitor.metrics import Health, Metrics
    from stream_monitor.runtime.service import GC_YOUNG_OBJECTS, Service

    topics = {"predictions": topic_factory("in"), "alerts": topic_factory("alerts"),
              "dead_letter": topic_factory("dlq")}
    produce(kafka_bootstrap, topics["predictions"],
            [orjson.dumps(event) for event, _ in generate(Scenario(n_events=300, seed=4))])
    settings = Settings(kafka={"bootstrap_servers": kafka_bootstrap, "group_id": group_id}, topics=topics,
                        log_level="WARNING")
    during: list[int] = []
    original = Service._process

    def recording(self: Service, messages: list) -> None:
        during.append(gc.get_threshold()[0])
        original(self, messages)

    monkeypatch.setattr(Service, "_process", recording)
    before = gc.get_threshold()
    metrics = Metrics(CollectorRegistry())
    assert Service(settings, metrics, Health()).run(max_idle_s=1.0) == 0
    assert metrics.registry.get_sample_value("stream_monitor_events_consumed_total",
                                             {"topic": topics["predictions"]}) == 300
    assert during and set(during) == {max(before[0], GC_YOUNG_OBJECTS)}
    assert gc.get_threshold() == before
