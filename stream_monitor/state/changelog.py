"""The changelog topic: made sure of at start, read back to its end on assignment.

Partition *i* of the changelog holds the state of input partition *i* (the
Kafka Streams layout), so the topic has the predictions topic's partition
count and compaction keeps the latest record of every key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from stream_monitor import logs
from stream_monitor.config import Settings
from stream_monitor.errors import StreamMonitorError

__all__ = ["CHANGELOG_CONFIG", "ChangelogError", "ChangelogReader", "changelog_topic", "cleanup_policy",
           "ensure_changelog", "partition_mismatch"]

log = logging.getLogger(__name__)

#: topic configs of a changelog the monitor creates (``run``, and ``topics create``)
CHANGELOG_CONFIG = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1",
                 "segment.ms": str(6 * 3600 * 1000)}


#: errors that pass once a leader is elected or the broker is back
_PASSING = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                      KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
                      KafkaError.REQUEST_TIMED_OUT, KafkaError._ALL_BROKERS_DOWN})


class ChangelogError(StreamMonitorError):
    """The changelog topic cannot be used (missing and not creatable, wrong partitions)."""


def changelog_topic(settings: Settings, partitions: int, replication_factor: int | None = None) -> NewTopic:
    """The changelog topic as the monitor creates it: compacted, one partition per input partition.

    ``replication_factor`` None: ``state.replication_factor`` (-1, the broker's default, unless set).
    """
    replication = settings.state.replication_factor if replication_factor is None else replication_factor
    return NewTopic(settings.state_topic, partitions, replication, config=dict(CHANGELOG_CONFIG))


def partition_mismatch(settings: Settings, found: int, partitions: int) -> str | None:
    """Why an existing changelog with ``found`` partitions cannot serve ``partitions`` input
    partitions, or None when it can."""
    if found == partitions:
        return None
    return (f"state topic {settings.state_topic!r} has {found} partitions, the predictions topic "
            f"{partitions}: partition i of the state holds input partition i, so they must be "
            f"equal (delete the state topic, or set state.topic to a new name)")


def ensure_changelog(settings: Settings, partitions: int, timeout_s: float = 30.0) -> None:
    """Create the changelog topic when missing; refuse one with another partition count."""
    topic = settings.state_topic
    admin = AdminClient({**settings.kafka.client_properties(), "log_level": 3, "logger": logs.kafka_logger()})
    metadata = admin.list_topics(timeout=timeout_s)
    found = metadata.topics.get(topic)
    if found is not None and found.error is None:
        mismatch = partition_mismatch(settings, len(found.partitions), partitions)
        if mismatch:
            raise ChangelogError(mismatch)
        _warn_unless_compacted(admin, topic, timeout_s)
        return
    new = changelog_topic(settings, partitions)
    replication = new.replication_factor
    future = admin.create_topics([new], operation_timeout=timeout_s, request_timeout=timeout_s)[topic]
    try:
        future.result(timeout=timeout_s)
    except KafkaException as exc:
        error = exc.args[0]
        if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return ensure_changelog(settings, partitions, timeout_s)  # another member made it
        raise ChangelogError(
            f"state topic {topic!r} is missing and could not be created ({error.name()}: "
            f"{error.str()}): create it compacted with {partitions} partitions, or grant the "
            f"monitor CREATE on it") from None
    _wait_for_leaders(admin, topic, partitions, timeout_s)
    log.info("state topic created", extra={"topic": topic, "partitions": partitions,
                                           "replication_factor": replication})


def _wait_for_leaders(admin: AdminClient, topic: str, partitions: int, timeout_s: float) -> None:
    """A created topic is usable once every partition has a leader; wait for that (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = admin.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if (found is not None and found.error is None and len(found.partitions) == partitions
                and all(p.leader >= 0 and p.error is None for p in found.partitions.values())):
            return
        time.sleep(0.2)


def cleanup_policy(admin: AdminClient, topic: str, timeout_s: float) -> str | None:
    """The topic's ``cleanup.policy``, or None when it cannot be described (e.g. the ACL)."""
    try:
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        configs = admin.describe_configs([resource], request_timeout=timeout_s)[resource].result(timeout_s)
    except Exception:  # noqa: BLE001 - describing is a courtesy check; the ACL may not allow it
        return None
    policy = configs.get("cleanup.policy")
    return None if policy is None else (policy.value or "")


def _warn_unless_compacted(admin: AdminClient, topic: str, timeout_s: float) -> None:
    policy = cleanup_policy(admin, topic, timeout_s)
    if policy is not None and "compact" not in policy:
        log.warning("state topic is not compacted: it grows without bound and restores slow down "
                    "(set cleanup.policy=compact)", extra={"topic": topic, "cleanup_policy": policy})


class ChangelogReader:
    """Reads one changelog partition from its start to its end, as a restore needs."""

    def __init__(self, settings: Settings, progress: Callable[[], None] = lambda: None,
                 **callbacks: Any) -> None:
        """``progress`` is called between fetches (the service marks itself alive: a long
        restore must not look like a hung loop to a liveness probe)."""
        self.topic = settings.state_topic
        self._progress = progress
        self._timeout_s = settings.state.restore_timeout_s
        self._consumer = Consumer({
            **settings.kafka.client_properties(),
            "logger": logs.kafka_logger(),
            # never joins the group (assign only) and never commits
            "group.id": f"{settings.kafka.group_id}.state-restore",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "fetch.max.bytes": 64 * 1024 * 1024,
            **callbacks,
        })

    def read(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        """Every record of the partition, (key, value) in offset order; value None is a tombstone."""
        deadline = time.monotonic() + self._timeout_s
        low, high = self._watermarks(TopicPartition(self.topic, partition), deadline)
        if high <= low:
            return []
        self._consumer.assign([TopicPartition(self.topic, partition, OFFSET_BEGINNING)])
        records: list[tuple[bytes, bytes | None]] = []
        try:
            while True:
                if time.monotonic() > deadline:
                    raise ChangelogError(f"restoring {self.topic}[{partition}] took longer than "
                                         f"state.restore_timeout_s ({self._timeout_s:.0f} s)")
                done = False
                self._progress()
                for message in self._consumer.consume(10_000, 0.5):
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            # read_committed: the end is the last stable offset (a transaction
                            # still open is not state yet)
                            done = True
                            continue
                        raise ChangelogError(f"reading {self.topic}[{partition}]: {error.str()}")
                    key = message.key()
                    if key is not None:
                        records.append((key, message.value()))
                    if message.offset() >= high - 1:
                        done = True
                if done:
                    return records
        finally:
            self._consumer.unassign()

    def _watermarks(self, tp: TopicPartition, deadline: float) -> tuple[int, int]:
        """The partition's low and high watermarks, waiting out a leader election.

        A state topic created moments ago (or a broker just restarted) has no
        leader yet: that passes, so it is retried until the restore deadline.
        """
        while True:
            self._progress()
            try:
                return self._consumer.get_watermark_offsets(tp, timeout=5.0, cached=False)
            except KafkaException as exc:
                error = exc.args[0]
                passing = error.retriable() or error.code() in _PASSING
                if not passing or time.monotonic() > deadline:
                    raise ChangelogError(f"reading {tp.topic}[{tp.partition}]: {error.str()}") from None
                log.info("state topic partition not available yet, retrying",
                         extra={"topic": tp.topic, "partition": tp.partition, "error": error.name()})
                time.sleep(0.5)

    def close(self) -> None:
        self._consumer.close()
