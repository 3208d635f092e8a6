"""`stream-monitor run` against the real broker: one log line per alert, rate-limited lines per dead letter."""

from __future__ import annotations

import orjson

from stream_monitor.simulate import Scenario, generate, parse_drift

from .service_harness import MonitorProcess, alerts_of, produce, read_all, write_config

#: in a bad message's value; a log line never carries message contents
MARKER = "payload-marker-7d1e"


def test_each_alert_is_logged_once_by_id_and_dead_letters_by_offset_rate_limited(
        kafka_bootstrap, topic_factory, group_id, state_topics, tmp_path):
    topics = {"predictions": topic_factory("predictions"), "alerts": topic_factory("alerts"),
              "dead_letter": topic_factory("dead-letter")}
    valid = [orjson.dumps(event) for event, _ in generate(Scenario(
        models=("fraud",), n_events=6000, seed=3, drifts=(parse_drift("feature:f05@3000:shift=1.5"),)))]
    # twelve invalid JSON messages (lines at the 1st and 10th), one without its event_id
    stream: list[bytes] = []
    invalid_at: list[int] = []
    missing_at = None
    for position, event in enumerate(valid):
        if position % 400 == 200 and len(invalid_at) < 12:
            invalid_at.append(len(stream))
            stream.append(b'{"event_id": "' + MARKER.encode() + b'", "model": "fraud",')
        if position == 5100:
            missing_at = len(stream)
            stream.append(b'{"model": "fraud", "features": {"f00": "' + MARKER.encode() + b'"}}')
        stream.append(event)
    produce(kafka_bootstrap, topics["predictions"], stream)
    config = write_config(tmp_path / "config.yaml", kafka_bootstrap, group_id, topics)

    monitor = MonitorProcess(config, tmp_path / "monitor.log", "--exit-when-idle", "4")
    try:
        assert monitor.wait() == 0, monitor.log()
    finally:
        monitor.close()
    text = monitor.log()
    records = [orjson.loads(line) for line in text.splitlines()]  # JSON lines only (stderr is no terminal)

    published = alerts_of(read_all(kafka_bootstrap, topics["alerts"]))
    assert published, "the drift was not detected"
    logged = [record for record in records if record["message"] == "drift alert"]
    assert sorted(record["alert_id"] for record in logged) == sorted(alert["alert_id"] for alert in published)
    by_id = {alert["alert_id"]: alert for alert in published}
    fields = ("alert_id", "model", "model_version", "signal", "detector", "event_id", "severity")
    for record in logged:
        assert record["level"] == "WARNING" and record["logger"] == "stream_monitor.runtime"
        assert {key: record[key] for key in fields} == {key: by_id[record["alert_id"]][key] for key in fields}

    dead = [record for record in records if record["message"].startswith("dead letter (")]
    source = {"source_topic": topics["predictions"], "source_partition": 0}
    assert [{key: record[key] for key in ("reason", "source_topic", "source_partition", "source_offset",
                                          "occurrences")} for record in dead] == [
        {"reason": "invalid_json", **source, "source_offset": invalid_at[0], "occurrences": 1},
        {"reason": "invalid_json", **source, "source_offset": invalid_at[9], "occurrences": 10},
        {"reason": "missing_field", **source, "source_offset": missing_at, "occurrences": 1},
    ]
    assert all(record["level"] == "WARNING" for record in dead)
    [summary] = [record for record in records if record["message"] == "dead letters produced"]
    assert summary["dead_letters"] == {topics["predictions"]: {"invalid_json": 12, "missing_field": 1}}
    assert summary["not_logged"] == 10
    # and the dead letters themselves are where the lines say
    offsets = sorted(int(dict(message.headers())["source.offset"])
                     for message in read_all(kafka_bootstrap, topics["dead_letter"]))
    assert offsets == sorted([*invalid_at, missing_at])
    assert MARKER not in text
