"""The service never loses an alert: full local queues and failed deliveries are retried.

A fake producer stands in for librdkafka here; the real thing is exercised by
the integration tests.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError
from pydantic import ValidationError
from prometheus_client import CollectorRegistry

from stream_monitor.config import Settings
from stream_monitor.metrics import Health, Metrics
from stream_monitor.pipeline import Pipeline
from stream_monitor.runtime.service import Service, consumer_config
from stream_monitor.state.recovery import PartitionState
from stream_monitor.state.store import PartitionStore


class FlakyProducer:
    """Refuses the first ``full`` produce calls with BufferError; fails the first delivery."""

    def __init__(self, full: int, failed_deliveries: int) -> None:
        self.full = full
        self.failed_deliveries = failed_deliveries
        self.pending: list[tuple] = []
        self.delivered: list[tuple[str, bytes | None, bytes | None]] = []
        self.polls = 0

    def produce(self, topic, value=None, key=None, headers=None, on_delivery=None, partition=-1):
        if self.full > 0:
            self.full -= 1
            raise BufferError("Local: Queue full")
        self.pending.append((topic, key, value, on_delivery))

    def poll(self, timeout=0):
        self.polls += 1
        return 0

    def flush(self, timeout=None):
        pending, self.pending = self.pending, []
        for topic, key, value, on_delivery in pending:
            if self.failed_deliveries > 0:
                self.failed_deliveries -= 1
                on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT), None)
            else:
                self.delivered.append((topic, key, value))
                on_delivery(None, None)
        return 0

    def __len__(self):
        return len(self.pending)


def _service() -> Service:
    # the at-least-once path (produce, flush, store offsets); tests/unit/test_transactions.py
    # covers exactly-once, the default
    settings = Settings(kafka={"bootstrap_servers": "127.0.0.1:1"}, delivery="at_least_once")
    service = Service(settings, Metrics(CollectorRegistry()), Health())
    # partition 0 is owned, with a fresh state (no restore)
    service.owned[0] = PartitionState(0, Pipeline(settings), PartitionStore(0))
    return service


def test_buffer_error_and_failed_delivery_lose_nothing(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda _s: None)
    service = _service()
    fake = FlakyProducer(full=3, failed_deliveries=2)
    service.producer = fake  # type: ignore[assignment]
    for number in range(5):
        service._produce("alert", "alerts", b"k", f"alert-{number}".encode(), None)
    assert fake.polls >= 3  # a full queue was served, not dropped
    service._flush_until_delivered()
    assert sorted(value for _, _, value in fake.delivered) == [f"alert-{n}".encode() for n in range(5)]
    assert service.metrics.registry.get_sample_value("stream_monitor_alerts_produced_total") == 5
    service.consumer.close()


def test_user_properties_cannot_turn_off_manual_offset_storage():
    # properties the monitor owns are refused by the settings (tests/unit/test_config.py);
    # the client configuration puts the monitor's own values last all the same
    settings = Settings(kafka={"properties": {"fetch.min.bytes": 1000}, "group_id": "mine"})
    config = consumer_config(settings)
    assert config["enable.auto.offset.store"] is False
    assert config["fetch.min.bytes"] == 1000
    assert config["group.id"] == "mine"
    with pytest.raises(ValidationError, match="kafka.properties.group.id"):
        Settings(kafka={"properties": {"group.id": "ignored"}})


def test_a_fatal_client_error_stops_the_loop_and_fails_the_exit_status():
    service = _service()
    service._on_kafka_error(KafkaError(KafkaError._TRANSPORT, "broker down", fatal=False))
    assert not service._stop.is_set()
    service._on_kafka_error(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
    assert service._stop.is_set()
    assert service.metrics.registry.get_sample_value(
        "stream_monitor_kafka_errors_total", {"code": "_FENCED"}) == 1
    service.consumer.close()


class RefusingProducer(FlakyProducer):
    """Fails every delivery with a permanent error, or refuses at produce time."""

    def __init__(self, at_produce: bool) -> None:
        super().__init__(full=0, failed_deliveries=0)
        self.at_produce = at_produce

    def produce(self, topic, value=None, key=None, headers=None, on_delivery=None, partition=-1):
        if self.at_produce:
            from confluent_kafka import KafkaException
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.pending.append((topic, key, value, on_delivery))

    def flush(self, timeout=None):
        pending, self.pending = self.pending, []
        for *_, on_delivery in pending:
            on_delivery(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), None)
        return 0


def test_a_permanent_failure_stops_the_service_uncommitted_with_exit_1():
    # nothing lost is the rule: an alert (or a dead letter, which carries a message
    # whose offset would be committed) that can never be produced stops the service
    # before its batch's offsets are stored; the orchestrator restarts it and retries
    for kind in ("alert", "dead_letter"):
        for at_produce, code in ((True, "MSG_SIZE_TOO_LARGE"), (False, "TOPIC_AUTHORIZATION_FAILED")):
            service = _service()
            service.producer = RefusingProducer(at_produce)  # type: ignore[assignment]
            service._produce(kind, "out", b"k", b"v", None)
            assert service._flush_until_delivered() is False
            assert service._stop.is_set()
            assert service.metrics.registry.get_sample_value(
                "stream_monitor_produce_failures_total", {"kind": kind, "code": code}) == 1
            assert service.exit_status() == 1
            service.consumer.close()


class StoringConsumer:
    """Records the offsets stored; the batch path needs nothing else of it here."""

    def __init__(self) -> None:
        self.stored: list = []

    def store_offsets(self, offsets=None):
        self.stored.extend(offsets)


class InputMessage:
    """A consumed prediction."""

    def __init__(self, offset: int, value: bytes) -> None:
        self._offset, self._value = offset, value

    def error(self): return None
    def topic(self): return "ml.predictions"
    def partition(self): return 0
    def offset(self): return self._offset
    def key(self): return b"fraud"
    def value(self): return self._value
    def headers(self): return None
    def timestamp(self): return (0, 0)


def test_a_batch_whose_dead_letter_cannot_be_produced_is_not_stored():
    service = _service()
    real_consumer = service.consumer
    service.producer = RefusingProducer(at_produce=False)  # type: ignore[assignment]
    storing = StoringConsumer()
    service.consumer = storing  # type: ignore[assignment]
    service._assigned.add(("ml.predictions", 0))
    service._process([InputMessage(7, b"not json")])
    assert storing.stored == []
    assert service.exit_status() == 1
    real_consumer.close()


class DownProducer(FlakyProducer):
    """A broker that never answers: nothing is ever delivered."""

    flushes = 0

    def flush(self, timeout=None):
        import time

        self.flushes += 1
        time.sleep(0.01)
        return len(self.pending)


def test_a_stop_during_an_outage_gives_up_at_the_deadline(monkeypatch):
    import stream_monitor.runtime.service as service_module

    monkeypatch.setattr(service_module, "STOP_GRACE_S", 0.2)
    service = _service()
    service.producer = DownProducer(full=0, failed_deliveries=0)  # type: ignore[assignment]
    service._produce("alert", "alerts", b"k", b"v", None)
    service.stop()
    assert service._flush_until_delivered() is False
    assert service.producer.flushes > 1  # it kept trying until the deadline, then gave up
    service.consumer.close()


class Message:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def topic(self): return "in"
    def partition(self): return 3
    def offset(self): return 42
    def key(self): return b"m"
    def value(self): return self._value
    def headers(self): return [("trace", b"abc")]


def test_an_oversize_dead_letter_keeps_a_prefix_and_says_so():
    from stream_monitor.errors import BadMessage

    service = _service()
    fake = FlakyProducer(full=0, failed_deliveries=0)
    service.producer = fake  # type: ignore[assignment]
    original = b"x" * 2_000_000
    service._dead_letter(Message(original), BadMessage("oversize", "too big", original))
    topic, key, value, _ = fake.pending[0]
    assert topic == service.settings.topics.dead_letter and key == b"m"
    assert value == original[: service.settings.limits.dead_letter_max_bytes]
    service.consumer.close()


def test_with_labels_the_inputs_are_co_partitioned_by_the_range_assignor():
    with_labels = consumer_config(Settings(kafka={"properties": {
        "partition.assignment.strategy": "cooperative-sticky"}}))
    assert with_labels["partition.assignment.strategy"] == "range"
    without = consumer_config(Settings(topics={"labels": None}))
    assert without["partition.assignment.strategy"] == "cooperative-sticky"


def test_readiness_needs_a_known_lag_within_the_bound_on_every_assigned_partition():
    service = _service()
    service._update_readiness()
    assert service.health.ready() == (False, "no partitions assigned")
    service._assigned.update({("ml.predictions", 0), ("ml.labels", 0)})
    service._lag[("ml.predictions", 0)] = 0
    service._update_readiness()
    ready, reason = service.health.ready()
    assert not ready and "lag unknown" in reason and "ml.labels[0]" in reason
    service._lag[("ml.labels", 0)] = 50_000  # a short batch is no evidence of being caught up
    service._update_readiness()
    ready, reason = service.health.ready()
    assert not ready and "50000" in reason
    service._lag[("ml.labels", 0)] = service.settings.consumer.ready_max_lag
    service._update_readiness()
    assert service.health.ready()[0] is True
    service.consumer.close()


def test_lag_from_statistics_stored_then_committed_then_an_empty_partition():
    service = _service()
    service._assigned.update({("t", 0), ("t", 1), ("t", 2), ("t", 3)})
    partitions = {
        "0": {"consumer_lag_stored": 7, "consumer_lag": 9, "hi_offset": 10, "lo_offset": 0},
        "1": {"consumer_lag_stored": -1, "consumer_lag": 4, "hi_offset": 10, "lo_offset": 0},
        "2": {"consumer_lag_stored": -1, "consumer_lag": -1, "hi_offset": 5, "lo_offset": 5},
        "3": {"consumer_lag_stored": -1, "consumer_lag": -1, "hi_offset": 10, "lo_offset": 0},
        "-1": {"consumer_lag_stored": -1, "consumer_lag": -1, "hi_offset": -1, "lo_offset": -1},
    }
    import orjson

    service._on_stats(orjson.dumps({"topics": {"t": {"partitions": partitions}}}).decode())
    assert service._lag == {("t", 0): 7, ("t", 1): 4, ("t", 2): 0, ("t", 3): None}
    service.consumer.close()


def test_messages_an_aborted_transaction_purged_are_rolled_back_not_given_up():
    """abort_transaction purges what the transaction had queued; their delivery reports say
    _PURGE_QUEUE or _PURGE_INFLIGHT. That is the rollback itself: the batch is read again from the
    committed state, the service goes on (a rebalance that fails a commit with ILLEGAL_GENERATION
    stopped a member with exit 1 here). A message that can never be produced still stops it."""
    settings = Settings(kafka={"bootstrap_servers": "127.0.0.1:1"}, delivery="exactly_once")
    service = Service(settings, Metrics(CollectorRegistry()), Health())
    for code in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
        service._deliveries.callback("state", "group.state", b"k", b"v", None, 0)(KafkaError(code), None)
    service._rewind()
    assert not service._stop.is_set() and service.exit_status() == 0
    assert service.metrics.registry.get_sample_value(
        "stream_monitor_produce_failures_total", {"kind": "state", "code": "_PURGE_QUEUE"}) is None
    service._deliveries.callback("alert", "alerts", b"k", b"v", None, -1)(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
    service._rewind()
    assert service._stop.is_set() and service.exit_status() == 1
    service.consumer.close()
