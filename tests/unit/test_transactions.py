"""The exactly-once checkpoint's error handling by class (a fake transactional producer)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry

from stream_monitor.config import Settings
from stream_monitor.metrics import Metrics
from stream_monitor.pipeline import Pipeline
from stream_monitor.runtime.checkpoint import TransactionalCheckpoint
from stream_monitor.state.recovery import PartitionState
from stream_monitor.state.store import PartitionStore


def _error(code: int, *, retriable=False, abortable=False, fatal=False) -> KafkaException:
    return KafkaException(KafkaError(code, "injected", fatal=fatal, retriable=retriable,
                                     txn_requires_abort=abortable))


class FakeProducer:
    def __init__(self, commit_errors=()):
        self.calls: list[str] = []
        self.commit_errors = list(commit_errors)

    def init_transactions(self, timeout):
        self.calls.append("init")

    def begin_transaction(self):
        self.calls.append("begin")

    def send_offsets_to_transaction(self, offsets, metadata, timeout):
        self.calls.append(f"offsets {[(tp.topic, tp.partition, tp.offset) for tp in offsets]}")

    def commit_transaction(self, timeout):
        if self.commit_errors:
            self.calls.append("commit failed")
            raise self.commit_errors.pop(0)
        self.calls.append("commit")

    def abort_transaction(self, timeout):
        self.calls.append("abort")

    polls = 0

    def poll(self, timeout=0):
        self.polls += 1
        return 0


class FakeConsumer:
    def __init__(self):
        self.stored = []

    def consumer_group_metadata(self):
        return object()

    def store_offsets(self, offsets):
        self.stored.extend((tp.topic, tp.partition, tp.offset) for tp in offsets)


def _checkpoint(producer, events):
    settings = Settings(delivery="exactly_once", consumer={"transaction_interval_s": 1.0})
    consumer = FakeConsumer()
    produced = []
    checkpoint = TransactionalCheckpoint(
        settings, Metrics(CollectorRegistry()), lambda: consumer, lambda: producer,
        lambda *args: produced.append(args), lambda: {"predictions": "in"},
        rewind=lambda: events.append("rewind"), fail=lambda error: events.append(f"fail {error.name()}"))
    checkpoint.start()
    state = PartitionState(0, Pipeline(Settings(), join_labels=False), PartitionStore(0))
    return checkpoint, consumer, produced, state


def test_a_commit_holds_the_offsets_and_the_due_snapshot_then_the_next_transaction_begins():
    producer, events = FakeProducer(), []
    checkpoint, consumer, produced, state = _checkpoint(producer, events)
    state.since_snapshot = 3  # never snapshotted: due at the first commit
    assert checkpoint.after_batch([state], [TopicPartition("in", 0, 3)])  # within the interval: open
    assert producer.calls == ["init", "begin"]
    assert checkpoint.snapshot([state])
    assert producer.calls == ["init", "begin", "offsets [('in', 0, 3)]", "commit", "begin"]
    assert [topic for _, topic, *_ in produced] == ["stream-monitor.state"] * len(produced) and produced
    assert consumer.stored == [("in", 0, 3)]  # for the lag statistics only
    assert state.since_snapshot == 0 and events == []


def test_a_retriable_commit_error_is_retried(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda _s: None)
    producer, events = FakeProducer([_error(KafkaError._TIMED_OUT, retriable=True)]), []
    checkpoint, _, _, state = _checkpoint(producer, events)
    checkpoint.after_batch([], [TopicPartition("in", 0, 7)])
    assert checkpoint.snapshot([])
    assert producer.calls[-3:] == ["commit failed", "commit", "begin"]
    assert events == []


def test_an_abortable_error_aborts_and_rewinds_to_the_committed_state():
    producer, events = FakeProducer([_error(KafkaError._STATE, abortable=True)]), []
    checkpoint, consumer, _, state = _checkpoint(producer, events)
    checkpoint.after_batch([], [TopicPartition("in", 0, 7)])
    assert not checkpoint.snapshot([])
    assert producer.calls[-3:] == ["commit failed", "abort", "begin"]
    assert events == ["rewind"]
    assert consumer.stored == []  # nothing of the aborted transaction counts as read
    # the next commit carries no offset of the aborted one
    checkpoint.after_batch([], [TopicPartition("in", 0, 9)])
    assert checkpoint.snapshot([])
    assert "offsets [('in', 0, 9)]" in producer.calls[-3:]


def test_a_fatal_error_fails_the_service_and_nothing_more_is_written():
    producer, events = FakeProducer([_error(KafkaError._FENCED, fatal=True)]), []
    checkpoint, _, _, state = _checkpoint(producer, events)
    checkpoint.after_batch([], [TopicPartition("in", 0, 7)])
    assert not checkpoint.snapshot([])
    assert events == ["fail _FENCED"]
    calls = len(producer.calls)
    assert not checkpoint.snapshot([])
    checkpoint.close()
    assert len(producer.calls) == calls  # a fenced producer is not used again


@pytest.mark.parametrize("delivery, expected", [("at_least_once", True), ("exactly_once", False)])
def test_exactly_once_turns_off_consumer_commits_and_sets_a_transactional_id(delivery, expected):
    from stream_monitor.runtime.service import consumer_config, producer_config

    settings = Settings(delivery=delivery, kafka={"group_id": "g", "instance_id": "pod-0"})
    assert consumer_config(settings)["enable.auto.commit"] is expected
    assert ("transactional.id" in producer_config(settings)) is not expected
    if not expected:
        assert producer_config(settings)["transactional.id"] == "g.pod-0"


class StuckProducer(FakeProducer):
    """send_offsets_to_transaction never returns: librdkafka can miss its own timeout when the
    group coordinator moves (confluentinc/librdkafka#5456, #5511)."""

    def __init__(self):
        super().__init__()
        import threading
        self.release = threading.Event()

    def send_offsets_to_transaction(self, offsets, metadata, timeout):
        self.calls.append("offsets (stuck)")
        self.release.wait()


def test_a_transaction_call_that_never_returns_fails_the_service(monkeypatch):
    monkeypatch.setattr("stream_monitor.runtime.checkpoint.CALL_TIMEOUT_S", 0.05)
    monkeypatch.setattr("stream_monitor.runtime.checkpoint.STUCK_GRACE_S", 0.5)
    monkeypatch.setattr("stream_monitor.runtime.checkpoint.SERVE_EVERY_S", 0.01)
    producer, events = StuckProducer(), []
    checkpoint, consumer, _, _ = _checkpoint(producer, events)
    checkpoint.after_batch([], [TopicPartition("in", 0, 7)])
    try:
        assert not checkpoint.snapshot([])
        assert events == ["fail _TIMED_OUT"]
        assert producer.polls > 0  # its error callbacks were served while the call blocked
        assert consumer.stored == []
        calls = len(producer.calls)
        checkpoint.close()  # the stuck producer is not called again (its call still blocks)
        assert len(producer.calls) == calls and "commit" not in producer.calls
    finally:
        producer.release.set()
