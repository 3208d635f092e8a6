"""The label join never stalls: kill -9 at random points, restart, and every label is read.

After a kill, the restarted member re-reads each topic from its committed offset;
labels whose predictions were read before the kill wait for predictions that
never come again. The labels topic may be paused while they pile up; when pausing resolves nothing,
or once every prediction is read, the labels must flow again (the join gives up
on what cannot join), on empty polls too.
"""

from __future__ import annotations

import random
import signal

import orjson

from stream_monitor.simulate import Scenario, stream

from .service_harness import (
    MonitorProcess,
    committed_offset,
    high_watermark,
    metric_sum,
    produce,
    wait_until,
    write_config,
)

OUTCOMES = ("joined", "late", "unmatched", "duplicate", "invalid")


def _labels_read(monitor: MonitorProcess) -> dict[str, float]:
    text = monitor.scrape()
    return {outcome: metric_sum(text, "stream_monitor_labels_total", outcome=outcome) for outcome in OUTCOMES}


def test_kill_9_at_random_points_then_restart_reads_every_label_and_reports_readiness(
        kafka_bootstrap, topic_factory, group_id, tmp_path):
    topics = {"predictions": topic_factory("predictions"), "labels": topic_factory("labels"),
              "alerts": topic_factory("alerts"), "dead_letter": topic_factory("dead-letter")}
    scenario = Scenario(models=("fraud",), n_events=30_000, n_numeric=2, n_categorical=0, seed=13,
                        label_delay_events=500)
    predictions, labels = [], []
    for kind, item in stream(scenario):
        (predictions if kind == "prediction" else labels).append(orjson.dumps(item))
    produce(kafka_bootstrap, topics["predictions"], predictions)
    produce(kafka_bootstrap, topics["labels"], labels)
    # a small waiting room: a few hundred labels orphaned by a kill are enough to pause the labels
    extra = "labels: {early_label_events: 400}\nconsumer: {batch_size: 500, poll_timeout_s: 0.2, " \
            "commit_interval_s: 0.5, ready_max_lag: 0}\n"
    config = write_config(tmp_path / "config.yaml", kafka_bootstrap, group_id, topics)
    config.write_text(config.read_text().split("consumer:")[0] + "metrics: {host: 127.0.0.1, port: 0}\n"
                      + extra)

    # kill points: positions in the predictions topic, reached through the group's commits
    targets = sorted(random.Random(5).sample(range(3000, len(predictions) - 3000), 3))
    for kill, target in enumerate(targets):
        monitor = MonitorProcess(config, tmp_path / f"monitor-{kill}.log")
        try:
            wait_until(lambda: committed_offset(kafka_bootstrap, group_id, topics["predictions"]) >= target,
                       120, f"predictions committed up to {target} (a stall never gets there)")
            monitor.process.send_signal(signal.SIGKILL)
            monitor.process.wait()
        finally:
            monitor.close()

    final = MonitorProcess(config, tmp_path / "monitor-final.log")
    try:
        ends = {topic: high_watermark(kafka_bootstrap, topics[topic]) for topic in ("predictions", "labels")}
        for topic, end in ends.items():
            wait_until(lambda: committed_offset(kafka_bootstrap, group_id, topics[topic]) == end, 120,
                       f"every {topic} message read and committed (a stall never gets there)")
        # the lag comes from periodic statistics: wait for a report after the last commit
        wait_until(lambda: final.get("/readyz")[0] == 200 and "lag 0" in final.get("/readyz")[1],
                   30, "readiness at lag 0 once caught up")
        # every label read by this member is accounted for once given up or joined; what is
        # NOT asserted yet: that the labels join as in an uninterrupted run (30,000 of 30,000).
        # Predictions read and committed before a kill are not read again, so their labels,
        # read after the restart, are unmatched (3,100 here). That needs the commit held back
        # to the oldest prediction still waiting in the join, or the join state persisted.
        outcomes = _labels_read(final)
        assert outcomes["joined"] + outcomes["unmatched"] > 0, outcomes
        assert final.terminate()[0] == 0
    finally:
        final.close()
