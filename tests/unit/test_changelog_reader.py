"""The changelog reader's way through a partition whose leader is not serving yet (a fake consumer)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from stream_monitor.config import Settings
from stream_monitor.state.changelog import ChangelogError, ChangelogReader


class FakeConsumer:
    """Fails the first ``failures`` watermark requests, then serves an empty partition's end."""

    def __init__(self, failures: list[KafkaException]) -> None:
        self.failures = failures
        self.asked = 0

    def get_watermark_offsets(self, tp, timeout, cached):
        self.asked += 1
        if self.failures:
            raise self.failures.pop(0)
        return 0, 0

    def consume(self, count: int, timeout: float) -> list[Message]:
        return []

    def unassign(self) -> None:
        pass


def _reader(consumer: FakeConsumer) -> ChangelogReader:
    reader = ChangelogReader(Settings(kafka={"bootstrap_servers": "127.0.0.1:1", "group_id": "g"}))
    reader._consumer.close()
    reader._consumer = consumer
    return reader


def test_a_state_partition_without_a_serving_leader_yet_is_asked_again():
    # seen against the real broker: the first member's restore, right after it created the
    # state topic, got NOT_LEADER_FOR_PARTITION and the service exited 1
    consumer = FakeConsumer([KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)),
                             KafkaException(KafkaError(KafkaError.LEADER_NOT_AVAILABLE))])
    assert _reader(consumer).read(0) == []
    assert consumer.asked == 3


def test_other_errors_fail_the_read():
    consumer = FakeConsumer([KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))])
    with pytest.raises(ChangelogError, match="authorization failed"):
        _reader(consumer).read(0)
    assert consumer.asked == 1
