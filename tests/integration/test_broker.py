"""The local broker works for what the service needs: plain round trips,
consumer-group offsets, and transactions on a single node."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition


def _consume(consumer: Consumer, expected: int, timeout_s: float = 30.0) -> list[bytes]:
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(values) < expected and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        values.append(msg.value())
    return values


def _drain(consumer: Consumer, idle_s: float = 3.0) -> list[bytes]:
    """Read until nothing arrives for ``idle_s``."""
    values: list[bytes] = []
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < idle_s:
        msg = consumer.poll(0.3)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        values.append(msg.value())
        idle_since = time.monotonic()
    return values


def test_produce_consume_round_trip(kafka_bootstrap, topic_factory, group_id):
    topic = topic_factory()
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    sent = [f"message-{i}".encode() for i in range(100)]
    for value in sent:
        producer.produce(topic, value, key=b"k")
    assert producer.flush(30) == 0

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group_id,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    try:
        assert _consume(consumer, len(sent)) == sent
    finally:
        consumer.close()


def test_group_commit_and_resume_from_committed_offset(kafka_bootstrap, topic_factory, group_id):
    topic = topic_factory()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(10):
        producer.produce(topic, str(i).encode())
    assert producer.flush(30) == 0
    settings = {"bootstrap.servers": kafka_bootstrap, "group.id": group_id,
                "auto.offset.reset": "earliest", "enable.auto.commit": False}

    first = Consumer(settings)
    first.subscribe([topic])
    try:
        assert _consume(first, 4) == [b"0", b"1", b"2", b"3"]
        first.commit(offsets=[TopicPartition(topic, 0, 4)], asynchronous=False)
        committed = first.committed([TopicPartition(topic, 0)], timeout=10)
        assert committed[0].offset == 4
    finally:
        first.close()

    second = Consumer(settings)
    second.subscribe([topic])
    try:
        assert _consume(second, 6) == [str(i).encode() for i in range(4, 10)]
    finally:
        second.close()


def test_transactions_commit_and_abort(kafka_bootstrap, topic_factory, group_id):
    topic = topic_factory()
    producer = Producer({"bootstrap.servers": kafka_bootstrap,
                         "transactional.id": f"test-tx-{uuid.uuid4().hex}"})
    producer.init_transactions(30)

    producer.begin_transaction()
    producer.produce(topic, b"committed-1")
    producer.commit_transaction(30)

    producer.begin_transaction()
    producer.produce(topic, b"aborted")
    producer.flush(30)  # the aborted record reaches the log before the abort marker
    producer.abort_transaction(30)

    producer.begin_transaction()
    producer.produce(topic, b"committed-2")
    producer.commit_transaction(30)

    def read(isolation: str) -> list[bytes]:
        consumer = Consumer({"bootstrap.servers": kafka_bootstrap,
                             "group.id": f"{group_id}-{isolation}",
                             "auto.offset.reset": "earliest",
                             "isolation.level": isolation})
        consumer.subscribe([topic])
        try:
            return _drain(consumer)
        finally:
            consumer.close()

    assert read("read_committed") == [b"committed-1", b"committed-2"]
    # the aborted record was written: only the isolation level hides it
    assert read("read_uncommitted") == [b"committed-1", b"aborted", b"committed-2"]
