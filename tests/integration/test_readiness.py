"""/readyz over HTTP against the real broker: ready only on a known lag within the bound."""

from __future__ import annotations

import orjson

from stream_monitor.simulate import Scenario, generate

from .service_harness import MonitorProcess, produce, wait_until, write_config


def _setup(kafka_bootstrap, topic_factory, group_id, tmp_path, statistics_ms: int):
    topics = {"predictions": topic_factory("predictions"), "alerts": topic_factory("alerts"),
              "dead_letter": topic_factory("dead-letter")}
    events = [orjson.dumps(event) for event, _ in
              generate(Scenario(models=("fraud",), n_events=3000, n_numeric=2, n_categorical=0, seed=3))]
    produce(kafka_bootstrap, topics["predictions"], events)
    config = write_config(tmp_path / "config.yaml", kafka_bootstrap, group_id, topics)
    config.write_text(config.read_text().replace("statistics.interval.ms: 500",
                                                 f"statistics.interval.ms: {statistics_ms}"))
    return topics, events, config


def test_an_unknown_lag_is_not_ready_even_when_every_message_is_read(
        kafka_bootstrap, topic_factory, group_id, tmp_path):
    # no statistics for a day: the lag is never known
    topics, events, config = _setup(kafka_bootstrap, topic_factory, group_id, tmp_path, 86_400_000)
    monitor = MonitorProcess(config, tmp_path / "monitor.log")
    try:
        monitor.wait_consumed(topics["predictions"], len(events))
        # several empty polls after the last message: each re-judges readiness
        wait_until(lambda: "lag unknown" in monitor.get("/readyz")[1], 30, "the readiness reason")
        status, body = monitor.get("/readyz")
        assert status == 503, body
        assert f"{topics['predictions']}[0]" in body
        assert monitor.get("/healthz")[0] == 200
        assert monitor.terminate()[0] == 0
    finally:
        monitor.close()


def test_caught_up_is_ready_and_says_the_lag(kafka_bootstrap, topic_factory, group_id, tmp_path):
    topics, events, config = _setup(kafka_bootstrap, topic_factory, group_id, tmp_path, 300)
    monitor = MonitorProcess(config, tmp_path / "monitor.log")
    try:
        monitor.wait_consumed(topics["predictions"], len(events))
        # the lag comes from statistics every 300 ms: a report from before the
        # last batch was stored can still say 1000 (within ready_max_lag)
        def ready_at_lag_0() -> bool:
            status, body = monitor.get("/readyz")
            return status == 200 and "lag 0" in body

        wait_until(ready_at_lag_0, 30, "readiness at lag 0")
        assert monitor.terminate()[0] == 0
    finally:
        monitor.close()
