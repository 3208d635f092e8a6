"""The checkpoint: the one place that decides when input offsets may be committed.

The order, for each consumed batch:

1. the batch's alerts and dead letters are produced and delivered;
2. when a partition's snapshot is due (``state.snapshot_interval_s`` or
   ``state.snapshot_events``, and at revoke and shutdown): its changed state
   records are produced and delivered, then its meta record (naming the
   complete snapshot) and tombstones are produced and delivered;
3. the batch's next offsets are stored; librdkafka commits stored offsets
   every ``consumer.commit_interval_s``, and :meth:`Checkpoint.commit` commits
   them at once (revoke, shutdown).

Nothing is stored while something before it is undelivered, so after a crash
the committed offsets never pass an alert, a dead letter or a state that was
not written (see :mod:`stream_monitor.state.recovery` for the way back).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from stream_monitor.config import Settings
from stream_monitor.metrics import Metrics
from stream_monitor.state.recovery import PartitionState

__all__ = ["Checkpoint"]

log = logging.getLogger(__name__)

#: (kind, topic, key, value, headers, partition) -> None
Produce = Callable[[str, str, bytes | None, bytes | None, object, int], None]


class Checkpoint:
    """Orders delivery, state and offsets for the service (the only commit site)."""

    def __init__(self, settings: Settings, metrics: Metrics, consumer: Callable[[], Consumer],
                 produce: Produce, deliver: Callable[[], bool],
                 topics: Callable[[], dict[str, str]]) -> None:
        self.settings = settings
        self.metrics = metrics
        #: the service's consumer (looked up at each use)
        self._consumer = consumer
        self._produce = produce
        self._deliver = deliver
        #: topic kind -> input topic name (looked up at each snapshot: the labels topic may be off)
        self._topics = topics
        self._state_topic = settings.state_topic

    def due(self, state: PartitionState, now: float) -> bool:
        """Whether a partition's snapshot is due (only a state that changed is written).

        A partition never snapshotted is written after its first batch, before
        any of its offsets is stored: a committed offset then always has a
        state on the changelog to go with it.
        """
        if state.since_snapshot == 0:
            return False
        return (state.store.snapshot_id == 0
                or state.since_snapshot >= self.settings.state.snapshot_events
                or now - state.snapshot_at >= self.settings.state.snapshot_interval_s)

    def after_batch(self, states: Iterable[PartitionState], offsets: list[TopicPartition]) -> bool:
        """Deliver the batch's output, write due snapshots, store the offsets; False: stop, store nothing."""
        if not self._deliver():
            return False
        now = time.monotonic()
        if not self.snapshot([s for s in states if self.due(s, now)]):
            return False
        if offsets:
            try:
                self._consumer().store_offsets(offsets=offsets)
            except KafkaException as exc:
                # e.g. revoked in between: the next owner re-reads these, nothing is lost
                log.warning("storing offsets failed", extra={"error": str(exc)})
        return True

    def snapshot_due(self, states: Iterable[PartitionState]) -> bool:
        """Write the snapshots that are due (between batches too, so a quiet input is not left behind)."""
        now = time.monotonic()
        return self.snapshot([s for s in states if self.due(s, now)])

    def snapshot(self, states: list[PartitionState]) -> bool:
        """Write the snapshots of ``states``: key records, delivered; then meta and tombstones, delivered."""
        if not states:
            return True
        tails = []
        written = 0
        for state in states:
            keys, tail = state.store.snapshot(state.pipeline, state.positions, self._topics())
            for key, value in keys:
                self._produce("state", self._state_topic, key, value, None, state.number)
            tails.append((state, tail))
            written += state.store.last_bytes
        if not self._deliver():
            return False
        for state, tail in tails:
            for key, value in tail:
                self._produce("state", self._state_topic, key, value, None, state.number)
        if not self._deliver():
            return False
        wall = time.time()
        now = time.monotonic()
        self.metrics.changelog_bytes.inc(written)
        log.debug("state snapshot written", extra={
            "partitions": [s.number for s in states], "bytes": written})
        for state in states:
            state.since_snapshot = 0
            state.snapshot_at = now
            label = str(state.number)
            self.metrics.state_snapshot_timestamp.labels(label).set(wall)
            self.metrics.state_keys.labels(label).set(len(state.store.slots))
        return True

    def commit(self) -> None:
        """Commit the stored offsets now (at revoke and shutdown)."""
        try:
            self._consumer().commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit failed", extra={"error": str(exc)})
