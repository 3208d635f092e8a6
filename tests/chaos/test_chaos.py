"""The long fault runs (``make chaos``), each in both delivery modes: more faults, longer streams.

Every fault kind of issue 11 runs with ``delivery: at_least_once`` and with
``delivery: exactly_once``: kill -9 at random and at chosen points, SIGTERM at
10 points, rebalance churn of three members (20 joins and leaves by SIGTERM
and SIGKILL), three broker hard bounces, and labels mixed in under kill -9
(the performance alert survives). 1% bad predictions of every reject reason
are mixed into every stream. Each run is judged by
:func:`~tests.integration.faults.judge`: alerts against ``replay`` by
``alert_id`` (exactly-once: not one duplicate), dead letters against the bad
messages fed by their ``source.*`` headers, both read ``read_committed``. Each
run prints its row; the session ends with the whole table (both modes): faults
applied, alerts expected, lost, duplicated, spurious, changed (same id,
another body), the same for dead letters (``dl_``), and wall time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from stream_monitor.simulate import Scenario, parse_drift

from ..integration.faults import (
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
    table,
    with_poison,
)
from ..integration.service_harness import metric_sum

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(3600)]

LONG_DRIFTS = ("fraud:feature:f01@15000:shift=1.0", "credit:feature:f02@25000:scale=1.8",
               "fraud:prediction@35000:shift=1.0", "credit:feature:f00@50000:shift=0.8",
               "fraud:feature:c00@60000:share=0.45", "credit:feature:c00@75000:share=0.4",
               "fraud:feature:f02@85000:shift=-1.0:over=2000", "credit:prediction@90000:shift=-1.0")


def _chosen_points(drifts: Iterable[str]) -> list[tuple[str, int]]:
    """Kill points relative to each change point (10 or 40 events after, and in the re-armed
    warm-ups 500 events after), and inside the first warm-ups."""
    points = [("fraud", 300), ("credit", 1500)]
    for number, text in enumerate(drifts):
        drift = parse_drift(text)
        assert drift.model is not None
        points += [(drift.model, drift.at + (10 if number % 2 == 0 else 40)), (drift.model, drift.at + 500)]
    return points


def _spread(positions: Iterable[int], spacing: int) -> list[int]:
    """Sorted positions, dropping any within ``spacing`` of the one kept before it."""
    kept: list[int] = []
    for position in sorted(positions):
        if not kept or position - kept[-1] > spacing:
            kept.append(position)
    return kept



def _judge(name: str, bootstrap: str, config: Path, feeder: Feeder, topics: Mapping[str, str],
           run: FaultRun, folder: Path, at_least: int) -> Verdict:
    verdict = judge(name, bootstrap, config, feeder, topics, run, folder, at_least)
    print(f"\n{name}, delivery {verdict.delivery}\n{table([verdict.row()])}")
    assert verdict.ok, verdict.report()
    return verdict


def _feeder(bootstrap: str, scenario: Scenario, topics: Mapping[str, str]) -> Feeder:
    """The scenario's messages (labels too when there is a labels topic), 1% of the predictions bad."""
    messages = scenario_messages(scenario, topics["predictions"], topics.get("labels"))
    return Feeder(bootstrap, with_poison(messages, topics["predictions"], share=0.01, seed=scenario.seed))


def _long_stream(seed: int) -> Scenario:
    return Scenario(models=("fraud", "credit"), n_events=100_000, n_numeric=3, n_categorical=1, seed=seed,
                    drifts=tuple(parse_drift(text) for text in LONG_DRIFTS))


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_kill_9_at_random_and_chosen_points_of_a_200k_stream(
        kafka_bootstrap, topic_factory, group_id, tmp_path, state_topics, delivery):
    topics = fault_topics(topic_factory)
    feeder = _feeder(kafka_bootstrap, _long_stream(31), topics)
    tail = 300
    chosen = [feeder.position(topics["predictions"], event_id(model, number))
              for model, number in _chosen_points(LONG_DRIFTS)]
    randomly = random.Random(31).sample(range(2000, len(feeder.messages) - 2000), 10)
    positions = _spread(chosen + randomly, tail)
    config = fault_config(tmp_path / "config.yaml", kafka_bootstrap, group_id, topics,
                          snapshot_interval_s=1.0, instance_id="chaos-kill-member", delivery=delivery)

    run = run_faults(kafka_bootstrap, group_id, feeder, {"a": config}, tmp_path, restarts(positions, "kill"),
               tail=tail, seed=31)

    _judge("kill -9", kafka_bootstrap, config, feeder, topics, run, tmp_path, at_least=len(LONG_DRIFTS))


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_sigterm_at_ten_points_of_a_200k_stream(kafka_bootstrap, topic_factory, group_id, tmp_path,
                                                state_topics, delivery):
    topics = fault_topics(topic_factory)
    feeder = _feeder(kafka_bootstrap, _long_stream(32), topics)
    tail = 300
    chosen = [feeder.position(topics["predictions"], event_id(model, number))
              for model, number in _chosen_points(LONG_DRIFTS)]
    positions = sorted(random.Random(32).sample(_spread(chosen, tail), 10))
    config = fault_config(tmp_path / "config.yaml", kafka_bootstrap, group_id, topics, snapshot_interval_s=0.5,
                          delivery=delivery)

    run = run_faults(kafka_bootstrap, group_id, feeder, {"a": config}, tmp_path, restarts(positions, "term"),
               tail=tail, seed=32)

    slowest = max(record.seconds or 0.0 for record in run.records)
    print(f"\nslowest SIGTERM to exit: {slowest:.1f} s")
    _judge("SIGTERM", kafka_bootstrap, config, feeder, topics, run, tmp_path, at_least=len(LONG_DRIFTS))


CHURN_MODELS = ("churn", "spam", "fraud", "search", "ads", "risk")  # partitions 0, 1, 2, 3, 0, 1 of four
CHURN_DRIFTS = ("churn:feature:f00@4000:shift=1.2", "spam:feature:f01@6000:scale=2.0",
                "fraud:prediction@8000:shift=1.0", "search:feature:f02@10000:shift=-1.2",
                "ads:feature:c00@12000:share=0.5", "risk:feature:f00@14000:shift=1.0",
                "churn:prediction@16000:shift=-1.0", "fraud:feature:f01@17000:scale=1.8")


def _churn_schedule(steps: int, length: int, seed: int) -> list[Fault]:
    """``steps`` joins and leaves of members a, b, c at even positions; leaves by SIGTERM or SIGKILL.

    At least one member always runs; a leave is never of the last one.
    """
    rng = random.Random(seed)
    running = {"a"}
    faults = []
    for step in range(1, steps + 1):
        position = step * length // (steps + 1)
        stopped = sorted({"a", "b", "c"} - running)
        if stopped and (len(running) == 1 or rng.random() < 0.5):
            member = rng.choice(stopped)
            running.add(member)
            faults.append(Fault(position, "start", member))
        else:
            member = rng.choice(sorted(running))
            running.discard(member)
            faults.append(Fault(position, "kill" if rng.random() < 0.4 else "term", member))
    return faults


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_rebalance_churn_of_twenty_joins_and_leaves_with_three_members(
        kafka_bootstrap, topic_factory, group_id, tmp_path, state_topics, delivery):
    topics = fault_topics(topic_factory, partitions=4)
    scenario = Scenario(models=CHURN_MODELS, n_events=20_000, n_numeric=3, n_categorical=1, seed=33,
                        drifts=tuple(parse_drift(text) for text in CHURN_DRIFTS))
    feeder = _feeder(kafka_bootstrap, scenario, topics)
    config = fault_config(tmp_path / "config.yaml", kafka_bootstrap, group_id, topics, snapshot_interval_s=1.0,
                          delivery=delivery)
    churn = _churn_schedule(20, len(feeder.messages), seed=33)

    run = run_faults(kafka_bootstrap, group_id, feeder, {"a": config, "b": config, "c": config}, tmp_path, churn,
               tail=500, seed=33)

    assert sorted(feeder.values(topics["predictions"])) == [0, 1, 2, 3], "every partition must have events"
    _judge("rebalance churn", kafka_bootstrap, config, feeder, topics, run, tmp_path, at_least=len(CHURN_DRIFTS))


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_broker_hard_bounce_three_times(private_broker, tmp_path, delivery):
    bootstrap = private_broker.bootstrap
    suffix = f"{time.monotonic_ns():x}"
    topics = {"predictions": f"bounce.{suffix}.predictions", "alerts": f"bounce.{suffix}.alerts",
              "dead_letter": f"bounce.{suffix}.dead-letter"}
    create_topics(bootstrap, topics.values())
    group_id = f"bounce-{suffix}"
    drifts = ("fraud:feature:f01@8000:shift=1.0", "credit:feature:f00@16000:scale=1.8",
              "fraud:prediction@24000:shift=1.0", "credit:feature:c00@30000:share=0.45")
    scenario = Scenario(models=("fraud", "credit"), n_events=40_000, n_numeric=3, n_categorical=1, seed=34,
                        drifts=tuple(parse_drift(text) for text in drifts))
    feeder = _feeder(bootstrap, scenario, topics)
    config = fault_config(tmp_path / "config.yaml", bootstrap, group_id, topics, snapshot_interval_s=1.0,
                          delivery=delivery)
    bounces = [Fault(feeder.position(topics["predictions"], event_id(model, number)), "bounce")
               for model, number in (("fraud", 8010), ("credit", 16040), ("fraud", 24010))]

    run = run_faults(bootstrap, group_id, feeder, {"a": config}, tmp_path, bounces, tail=600, seed=34,
               broker=private_broker)

    _judge("broker bounce", bootstrap, config, feeder, topics, run, tmp_path, at_least=len(drifts))


LABEL_DRIFTS = ("fraud:performance:error_rate@12000:error=0.2", "credit:feature:f01@8000:shift=1.0",
                "credit:performance:error_rate@25000:error=0.25", "fraud:feature:f00@30000:shift=1.0")


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_labels_mixed_in_kill_9_at_random_and_chosen_points_keeps_the_performance_alerts(
        kafka_bootstrap, topic_factory, group_id, tmp_path, state_topics, delivery):
    topics = fault_topics(topic_factory, labels=True)
    scenario = Scenario(models=("fraud", "credit"), n_events=40_000, n_numeric=2, n_categorical=1, seed=36,
                        label_delay_events=500, drifts=tuple(parse_drift(text) for text in LABEL_DRIFTS))
    feeder = _feeder(kafka_bootstrap, scenario, topics)
    tail = 300
    chosen = [
        feeder.position(topics["predictions"], event_id("fraud", 300)),     # inside the first warm-ups
        feeder.position(topics["labels"], event_id("fraud", 5000)),         # 500 predictions wait for labels
        feeder.position(topics["labels"], event_id("fraud", 12_010)),       # 10 labels after fraud's error change
        feeder.position(topics["labels"], event_id("fraud", 12_500)),       # inside its re-armed warm-up
        feeder.position(topics["predictions"], event_id("credit", 8040)),   # 40 events after credit f01's change
        feeder.position(topics["labels"], event_id("credit", 25_040)),      # 40 labels after credit's error change
    ]
    randomly = random.Random(36).sample(range(2000, len(feeder.messages) - 2000), 6)
    positions = _spread(chosen + randomly, tail)
    # snapshots every 5 s: most restores replay a stretch silently, the label join included
    config = fault_config(tmp_path / "config.yaml", kafka_bootstrap, group_id, topics, snapshot_interval_s=5.0,
                          instance_id="chaos-labels-member", delivery=delivery)

    run = run_faults(kafka_bootstrap, group_id, feeder, {"a": config}, tmp_path, restarts(positions, "kill"),
                     tail=tail, seed=36)

    verdict = _judge("labels + kill -9", kafka_bootstrap, config, feeder, topics, run, tmp_path,
                     at_least=len(LABEL_DRIFTS))
    performance = {(alert["model"], alert["signal"]) for alert in verdict.expected.alerts
                   if alert["signal"].startswith("performance:")}
    assert performance == {("fraud", "performance:error_rate"), ("credit", "performance:error_rate")}, performance


def _restart_latency(bootstrap: str, topics: Mapping[str, str], group_id: str, folder: Path,
                     instance_id: str | None) -> float | None:
    """Seconds from a SIGKILLed member's replacement starting to its first consumed event (None: 60 s)."""
    folder.mkdir()
    scenario = Scenario(models=("fraud",), n_events=6000, n_numeric=2, n_categorical=0, seed=35)
    feeder = Feeder(bootstrap, scenario_messages(scenario, topics["predictions"]))
    config = fault_config(folder / "config.yaml", bootstrap, group_id, topics, snapshot_interval_s=1.0,
                          instance_id=instance_id, session_timeout_ms=30_000)
    group = Group({"a": config}, folder)
    run = FaultRun(bootstrap, group_id, feeder, group, seed=35)
    try:
        group.start()
        run.step(Fault(3000, "kill"))
        feeder.release_all()
        restarted = group.start()
        while time.monotonic() - restarted.started_at < 60:
            group.check_alive()
            if metric_sum(restarted.scrape(), "stream_monitor_events_consumed_total", topic=topics["predictions"]):
                return time.monotonic() - restarted.started_at
            time.sleep(0.1)
        return None
    finally:
        group.close()


def test_restart_latency_with_and_without_static_membership(kafka_bootstrap, topic_factory, group_id,
                                                            tmp_path, state_topics):
    latencies = {}
    for name, instance_id in (("static (kafka.instance_id)", "latency-member"), ("dynamic", None)):
        topics = fault_topics(topic_factory)
        member_group = f"{group_id}-{'static' if instance_id else 'dynamic'}"
        state_topics.append(f"{member_group}.state")
        latencies[name] = _restart_latency(kafka_bootstrap, topics, member_group, tmp_path / name.split()[0],
                                           instance_id)
    print("\nrestart after SIGKILL, session.timeout.ms 30000: start to first consumed event\n" + table(
        [{"membership": name, "seconds": "over 60" if seconds is None else f"{seconds:.1f}"}
         for name, seconds in latencies.items()]))
    static = latencies["static (kafka.instance_id)"]
    assert static is not None and static <= 10.0, f"a restarted static member waited {static} s"
