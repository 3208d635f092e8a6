"""Two monitors in one group share the partitions, and labels still meet their predictions."""

from __future__ import annotations

import time

import orjson

from stream_monitor.simulate import Scenario, parse_drift, stream

from .service_harness import MonitorProcess, alerts_of, metric_sum, produce, read_all, wait_until, write_config


def test_two_members_co_partition_labels_and_share_the_work(kafka_bootstrap, topic_factory, group_id,
                                                             tmp_path):
    topics = {"predictions": topic_factory("predictions", partitions=4),
              "labels": topic_factory("labels", partitions=4),
              "alerts": topic_factory("alerts"), "dead_letter": topic_factory("dead-letter")}
    models = ("fraud", "churn", "spam", "ads", "credit", "search")
    scenario = Scenario(models=models, n_events=6000, n_numeric=3, seed=13, label_delay_events=200,
                        drifts=(parse_drift("fraud:performance:error_rate@3000:error=0.5"),))
    predictions, labels = [], []
    for kind, item in stream(scenario):
        (predictions if kind == "prediction" else labels).append((item["model"].encode(), orjson.dumps(item)))
    config = write_config(tmp_path / "config.yaml", kafka_bootstrap, group_id, topics)

    first = MonitorProcess(config, tmp_path / "first.log")
    second = MonitorProcess(config, tmp_path / "second.log")
    try:
        # both members have joined and split the 8 partitions before any data arrives
        def split() -> bool:
            owned = [_assignment(member.log()) for member in (first, second)]
            return all(owned) and not (owned[0] & owned[1]) and len(owned[0] | owned[1]) == 8
        wait_until(split, 60, "the two members to split the partitions")
        produce(kafka_bootstrap, topics["predictions"], predictions)
        produce(kafka_bootstrap, topics["labels"], labels)
        totals = {}
        for _ in range(300):
            texts = [first.scrape(), second.scrape()]
            totals = {
                "predictions": sum(metric_sum(t, "stream_monitor_events_consumed_total",
                                              topic=topics["predictions"]) for t in texts),
                "labels": sum(metric_sum(t, "stream_monitor_events_consumed_total",
                                         topic=topics["labels"]) for t in texts),
            }
            if totals == {"predictions": len(predictions), "labels": len(labels)}:
                break
            time.sleep(0.3)
        assert totals == {"predictions": len(predictions), "labels": len(labels)}
        def joined() -> float:
            return sum(metric_sum(member.scrape(), "stream_monitor_labels_total", model=m, outcome="joined")
                       for member in (first, second) for m in models)
        # the counters of the last batch follow its consumption within moments
        wait_until(lambda: joined() == len(labels), 30,
                   "every label to join (labels meeting a member without their predictions never do)")
        texts = [first.scrape(), second.scrape()]
        assert all(metric_sum(t, "stream_monitor_events_consumed_total",
                              topic=topics["predictions"]) > 0 for t in texts), "one member did nothing"
        for member in (first, second):
            assert member.terminate()[0] == 0
    finally:
        first.close()
        second.close()
    alerts = alerts_of(read_all(kafka_bootstrap, topics["alerts"]))
    assert [(a["model"], a["signal"]) for a in alerts] == [("fraud", "performance:error_rate")]


def _assignment(log: str) -> set[str]:
    """The partitions of the member's latest assignment (the range assignor is eager)."""
    owned: set[str] = set()
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        record = orjson.loads(line)
        if record.get("message") == "partitions assigned":
            owned = set(record["partitions"])
        elif record.get("message") in ("partitions revoked", "partitions lost"):
            owned -= set(record["partitions"])
    return owned
