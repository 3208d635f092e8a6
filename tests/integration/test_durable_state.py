"""Durable detector state (issue 10) and exactly-once delivery (issue 11) against the real broker.

Each test faults a consumer group of ``stream-monitor run`` processes while it
reads a seeded stream with scheduled drifts, then compares the alerts on the
alerts topic with ``replay`` over the same events (per input partition), by
``alert_id``: every replayed alert is published, no other id is, and a repeat
is identical (``delivery: exactly_once``: there is no repeat at all). Where
bad messages are mixed in, each must be in the dead-letter topic (exactly
once in exactly-once delivery). Both topics are read ``read_committed``. The
kill points are chosen relative to the change points and the warm-ups of the
scheduled drifts (see ``faults`` for how a fault is placed). The short
exactly-once runs here are a kill -9 run with labels and bad messages and a
rebalance churn by SIGTERM and SIGKILL; every fault kind runs in both modes
in ``tests/chaos``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from stream_monitor.simulate import Scenario, parse_drift

from .faults import (
    DELIVERIES,
    Fault,
    FaultRun,
    Feeder,
    Group,
    Verdict,
    create_topics,
    event_id,
    fault_config,
    fault_topics,
    judge,
    restarts,
    run_faults,
    scenario_messages,
    with_poison,
)
from .service_harness import metric_sum


def _positions(feeder: Feeder, topic: str, points: Sequence[tuple[str, int]], spacing: int) -> list[int]:
    """Stream positions of the events (model, number), checked to be ordered and apart."""
    positions = [feeder.position(topic, event_id(model, number)) for model, number in points]
    assert all(later - earlier > spacing for earlier, later in zip(positions, positions[1:])), positions
    return positions



def _judge(name: str, bootstrap: str, config: Path, feeder: Feeder, topics: Mapping[str, str],
           run: FaultRun, folder: Path, at_least: int) -> Verdict:
    """The run against replay and the bad messages fed; fails unless every check holds."""
    # at_least: the stream must exercise the detectors, or equality would prove nothing
    verdict = judge(name, bootstrap, config, feeder, topics, run, folder, at_least)
    assert verdict.ok, verdict.report()
    return verdict


# -- kill -9 ------------------------------------------------------------------

KILL_DRIFTS = ("fraud:feature:f01@4000:shift=1.0", "credit:feature:f02@7000:scale=1.8",
               "fraud:prediction@10000:shift=1.0", "credit:feature:c00@11000:share=0.45")
#: (model, event number) where the kills land: relative to KILL_DRIFTS' change points and
#: to the warm-ups (KS and chi-square: 1000 values, Page-Hinkley: 2000, re-armed after a detection)
KILL_POINTS = (
    ("fraud", 300),      # inside every signal's first warm-up
    ("credit", 1500),    # inside Page-Hinkley's first warm-up, after KS's
    ("fraud", 4010),     # 10 events after fraud f01's change point
    ("fraud", 4500),     # inside the warm-ups re-armed by f01's detections (about 4020 and 4120)
    ("credit", 7040),    # 40 events after credit f02's change point
    ("fraud", 10010),    # 10 events after fraud's prediction shift
    ("credit", 11040),   # 40 events after credit c00's share change
    ("fraud", 13000),    # a quiet stretch, all signals armed
)


def test_kill_9_at_eight_points_near_change_points_and_in_warm_ups_changes_no_alert(
        kafka_bootstrap, topic_factory, group_id, tmp_path, state_topics):
    topics = fault_topics(topic_factory)
    scenario = Scenario(models=("fraud", "credit"), n_events=15_000, n_numeric=3, n_categorical=1, seed=11,
                        drifts=tuple(parse_drift(text) for text in KILL_DRIFTS))
    feeder = Feeder(kafka_bootstrap, scenario_messages(scenario, topics["predictions"]))
    tail = 300
    positions = _positions(feeder, topics["predictions"], KILL_POINTS, tail)
    # the member restarts under the same instance id, as a Kubernetes pod does
    config = fault_config(tmp_path / "config.yaml", kafka_bootstrap, group_id, topics,
                          snapshot_interval_s=1.0, instance_id="kill-9-member")

    run = run_faults(kafka_bootstrap, group_id, feeder, {"a": config}, tmp_path, restarts(positions, "kill"),
               tail=tail, seed=1)

    _judge("kill -9", kafka_bootstrap, config, feeder, topics, run, tmp_path, at_least=len(KILL_DRIFTS))


# -- SIGTERM, two partitions --------------------------------------------------

TERM_DRIFTS = ("fraud:feature:f00@3000:shift=1.0", "spam:feature:f01@5000:scale=1.8",
               "fraud:feature:c00@8000:share=0.45", "spam:prediction@9000:shift=1.0")
TERM_POINTS = (
    ("fraud", 200),      # inside the first warm-ups
    ("spam", 700),
    ("fraud", 3010),     # 10 events after fraud f00's change point
    ("spam", 3600),      # inside fraud f00's re-armed warm-ups
    ("spam", 5040),      # 40 events after spam f01's change point
    ("fraud", 6200),
    ("fraud", 8010),     # 10 events after fraud c00's change point
    ("spam", 9040),      # 40 events after spam's prediction shift
    ("spam", 10400),
    ("fraud", 11300),
)


def test_sigterm_at_ten_points_over_two_partitions_exits_0_in_10_s_and_changes_no_alert(
        kafka_bootstrap, topic_factory, group_id, tmp_path, state_topics):
    # two models keyed onto two partitions ("fraud" hashes to 0, "spam" to 1)
    topics = fault_topics(topic_factory, partitions=2)
    scenario = Scenario(models=("fraud", "spam"), n_events=12_000, n_numeric=3, n_categorical=1, seed=12,
                        drifts=tuple(parse_drift(text) for text in TERM_DRIFTS))
    feeder = Feeder(kafka_bootstrap, scenario_messages(scenario, topics["predictions"]))
    tail = 300
    positions = _positions(feeder, topics["predictions"], TERM_POINTS, tail)
    # a changelog topic named in the config (created by the monitor), snapshots twice a second
    state_topic = f"{group_id}.changelog"
    state_topics.append(state_topic)
    config = fault_config(tmp_path / "config.yaml", kafka_bootstrap, group_id, topics,
                          snapshot_interval_s=0.5, state_topic=state_topic)

    run = run_faults(kafka_bootstrap, group_id, feeder, {"a": config}, tmp_path, restarts(positions, "term"),
               tail=tail, seed=2)

    assert sorted(feeder.values(topics["predictions"])) == [0, 1], "both partitions must have events"
    assert all(record.seconds is not None and record.seconds <= 10.0
               for record in run.records if record.fault.action == "term")  # Group.terminate checks it too
    _judge("SIGTERM", kafka_bootstrap, config, feeder, topics, run, tmp_path, at_least=len(TERM_DRIFTS))


# -- rebalance churn ----------------------------------------------------------

CHURN_MODELS = ("churn", "spam", "fraud", "search", "ads")  # partitions 0, 1, 2, 3 and 0 of four
CHURN_DRIFTS = ("churn:feature:f00@1500:shift=1.2", "spam:feature:f01@2500:scale=2.0",
                "fraud:prediction@3000:shift=1.0", "search:feature:f02@3500:shift=-1.2",
                "ads:feature:c00@2000:share=0.5")


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_rebalance_churn_of_three_members_by_sigterm_and_sigkill_changes_no_alert_nor_dead_letter(
        kafka_bootstrap, topic_factory, group_id, tmp_path, state_topics, delivery):
    topics = fault_topics(topic_factory, partitions=4)
    scenario = Scenario(models=CHURN_MODELS, n_events=5000, n_numeric=3, n_categorical=1, seed=13,
                        drifts=tuple(parse_drift(text) for text in CHURN_DRIFTS))
    # 1% bad predictions; the members have no instance id: in exactly-once delivery each
    # process has its own transactional id, and a SIGKILLed one's open transaction is
    # aborted by the broker (transaction.timeout.ms), not fenced by a restart
    messages = with_poison(scenario_messages(scenario, topics["predictions"]), topics["predictions"], seed=13)
    feeder = Feeder(kafka_bootstrap, messages)
    config = fault_config(tmp_path / "config.yaml", kafka_bootstrap, group_id, topics, snapshot_interval_s=1.0,
                          delivery=delivery)
    step = len(feeder.messages) // 10
    churn = [Fault(1 * step, "start", "b"), Fault(2 * step, "start", "c"), Fault(3 * step, "kill", "b"),
             Fault(4 * step, "start", "b"), Fault(5 * step, "term", "a"), Fault(6 * step, "kill", "c"),
             Fault(7 * step, "start", "a"), Fault(8 * step, "term", "b"), Fault(9 * step, "start", "c")]

    run = run_faults(kafka_bootstrap, group_id, feeder, {"a": config, "b": config, "c": config}, tmp_path, churn,
               tail=500, seed=3)

    assert sorted(feeder.values(topics["predictions"])) == [0, 1, 2, 3], "every partition must have events"
    _judge("rebalance churn", kafka_bootstrap, config, feeder, topics, run, tmp_path, at_least=len(CHURN_DRIFTS))


# -- broker hard bounce -------------------------------------------------------

def test_broker_hard_bounce_twice_during_the_stream_changes_no_alert(private_broker, tmp_path):
    bootstrap = private_broker.bootstrap
    suffix = f"{time.monotonic_ns():x}"
    topics = {"predictions": f"bounce.{suffix}.predictions", "alerts": f"bounce.{suffix}.alerts",
              "dead_letter": f"bounce.{suffix}.dead-letter"}
    create_topics(bootstrap, topics.values())
    group_id = f"bounce-{suffix}"
    scenario = Scenario(models=("fraud", "credit"), n_events=10_000, n_numeric=3, n_categorical=1, seed=14,
                        drifts=tuple(parse_drift(text) for text in (
                            "fraud:feature:f01@3000:shift=1.0", "credit:feature:f00@6000:scale=1.8",
                            "fraud:prediction@8000:shift=1.0")))
    feeder = Feeder(bootstrap, scenario_messages(scenario, topics["predictions"]))
    config = fault_config(tmp_path / "config.yaml", bootstrap, group_id, topics, snapshot_interval_s=1.0)
    # each bounce lands just after a change point, with the tail processed and not yet committed;
    # the broker stays away longer than the session timeout, so the member's partitions are lost
    bounces = [Fault(feeder.position(topics["predictions"], event_id("fraud", 3010)), "bounce"),
               Fault(feeder.position(topics["predictions"], event_id("credit", 6040)), "bounce")]

    run = run_faults(bootstrap, group_id, feeder, {"a": config}, tmp_path, bounces, tail=600, seed=4,
               broker=private_broker)

    _judge("broker bounce", bootstrap, config, feeder, topics, run, tmp_path, at_least=3)


# -- late labels --------------------------------------------------------------


@pytest.mark.parametrize("delivery, instance_id", [("at_least_once", None), ("exactly_once", "labels-kill-member")])
def test_labels_500_events_late_kill_9_four_times_joins_every_label_and_keeps_the_performance_alert(
        kafka_bootstrap, topic_factory, group_id, tmp_path, state_topics, delivery, instance_id):
    topics = fault_topics(topic_factory, labels=True)
    change_at = 8000
    scenario = Scenario(models=("fraud",), n_events=20_000, n_numeric=2, n_categorical=0, seed=21,
                        label_delay_events=500,
                        drifts=(parse_drift(f"performance:error_rate@{change_at}:error=0.2"),
                                parse_drift("feature:f01@12000:shift=1.0")))
    # 1% bad predictions mixed in, each owed to the dead-letter topic
    messages = with_poison(scenario_messages(scenario, topics["predictions"], topics["labels"]),
                           topics["predictions"], seed=21)
    feeder = Feeder(kafka_bootstrap, messages)
    # snapshots every 30 s: none is taken in a process's life, so each restore replays from an old one;
    # exactly-once with an instance id: the restarted process fences the killed one's transaction
    config = fault_config(tmp_path / "config.yaml", kafka_bootstrap, group_id, topics, snapshot_interval_s=30.0,
                          snapshot_events=1_000_000, instance_id=instance_id, delivery=delivery)
    kills = [
        # inside the first warm-ups
        feeder.position(topics["predictions"], event_id("fraud", 1200)),
        # 500 predictions wait in the join for labels not read yet
        feeder.position(topics["labels"], event_id("fraud", 5000)),
        # 10 labels after the error rate changed (the performance signal's change point)
        feeder.position(topics["labels"], event_id("fraud", change_at + 10)),
        # 40 events after the feature's change point, labels 500 behind
        feeder.position(topics["predictions"], event_id("fraud", 12_040)),
    ]

    run = run_faults(kafka_bootstrap, group_id, feeder, {"a": config}, tmp_path, restarts(kills, "kill"),
               tail=300, seed=5)

    verdict = judge("labels + kill -9", kafka_bootstrap, config, feeder, topics, run, tmp_path, at_least=3)
    expected = verdict.expected
    assert any(alert["signal"] == "performance:error_rate" for alert in expected.alerts)
    # every process (the killed ones scraped just before their kill) gave up on no more labels
    # than the uninterrupted replay: a label whose prediction was read before a kill and is
    # missing from the restored join ends "unmatched"
    replay_unmatched = expected.label_outcomes()["unmatched"]
    scrapes = [record.metrics for record in run.records if record.metrics] + run.final_scrapes
    unmatched = [metric_sum(text, "stream_monitor_labels_total", outcome="unmatched") for text in scrapes]
    # and at the end no label waits that replay resolved (joined or gave up on)
    replay_waiting = sum(summary.labels - sum(summary.label_outcomes.values())
                         for summary in expected.summaries.values())
    waiting = sum(metric_sum(text, "stream_monitor_join_waiting", kind="labels") for text in run.final_scrapes)
    labels_note = (f"labels unmatched per process: {unmatched}, in replay: {replay_unmatched}; "
                   f"labels waiting at the end: {waiting:.0f}, in replay: {replay_waiting}")
    assert verdict.ok, f"{verdict.report()}\n{labels_note}"
    assert any(alert["signal"] == "performance:error_rate" for alert in verdict.alerts.published)
    assert all(count <= replay_unmatched for count in unmatched), labels_note
    assert waiting == replay_waiting, labels_note


# -- static membership --------------------------------------------------------


def test_a_restarted_static_member_consumes_within_10_s_of_its_start(
        kafka_bootstrap, topic_factory, group_id, tmp_path, state_topics):
    topics = fault_topics(topic_factory)
    scenario = Scenario(models=("fraud",), n_events=12_000, n_numeric=2, n_categorical=1, seed=22,
                        drifts=(parse_drift("feature:f00@7000:shift=1.0"),))
    feeder = Feeder(kafka_bootstrap, scenario_messages(scenario, topics["predictions"]))
    # a session timeout far beyond the bound: only static membership can meet it
    config = fault_config(tmp_path / "config.yaml", kafka_bootstrap, group_id, topics, snapshot_interval_s=1.0,
                          instance_id="member-a", session_timeout_ms=30_000)
    group = Group({"a": config}, tmp_path)
    run = FaultRun(kafka_bootstrap, group_id, feeder, group, seed=6)
    try:
        group.start()
        run.step(Fault(5000, "kill"))
        feeder.release_to(7020)  # the restarted member has something to read, a change point included
        restarted = group.start()

        def consuming() -> float | None:
            group.check_alive()
            consumed = metric_sum(restarted.scrape(), "stream_monitor_events_consumed_total",
                                  topic=topics["predictions"])
            return time.monotonic() - restarted.started_at if consumed > 0 else None

        # the bound is the (10 s); a static member rejoins at once, so about 2 s of it is
        # the process start. Waiting a little beyond the bound tells "slow" from "stuck".
        deadline = restarted.started_at + 15.0
        waited = None
        while waited is None and time.monotonic() < deadline:
            waited = consuming()
            time.sleep(0.1)
        assert waited is not None and waited <= 10.0, (
            f"the restarted static member consumed nothing within "
            f"{'15' if waited is None else f'{waited:.1f}'} s of its start")
        run.finish()
    finally:
        group.close()

    _judge("static restart", kafka_bootstrap, config, feeder, topics, run, tmp_path, at_least=1)
