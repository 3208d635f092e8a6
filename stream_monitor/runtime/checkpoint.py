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
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from stream_monitor.config import Settings
from stream_monitor.metrics import Metrics
from stream_monitor.state.recovery import PartitionState

__all__ = ["Checkpoint"]

log = logging.getLogger(__name__)

#: (kind, topic, key, value, headers, partition) -> None
Produce = Callable[[str, str, bytes | None, bytes | None, object, int], None]

#: the timeout given to each transactional call; a retriable failure is tried again
#: until ``TransactionalCheckpoint.RETRY_S``
CALL_TIMEOUT_S = 15.0
#: a transactional call still running this long after its own timeout is stuck:
#: librdkafka can miss that timeout when the group coordinator goes away and comes
#: back (confluentinc/librdkafka#5456, #5511); the service then stops with exit 1
STUCK_GRACE_S = 10.0
#: how often the producer's callbacks are served while a transactional call blocks
SERVE_EVERY_S = 0.2


def snapshot_due(settings: Settings, state: PartitionState, now: float) -> bool:
    """Whether a partition's snapshot is due (only a state that changed is written).

    A partition never snapshotted is written with its first checkpoint, before
    any of its offsets is stored or committed: a committed offset then always
    has a state on the changelog to go with it.
    """
    if state.since_snapshot == 0:
        return False
    return (state.store.snapshot_id == 0
            or state.since_snapshot >= settings.state.snapshot_events
            or now - state.snapshot_at >= settings.state.snapshot_interval_s)


def mark_snapshotted(metrics: Metrics, states: Iterable[PartitionState], written: int) -> None:
    """After a snapshot is durable: reset the partitions' counters, export its bytes and time."""
    wall, now = time.time(), time.monotonic()
    metrics.changelog_bytes.inc(written)
    numbers = []
    for state in states:
        state.since_snapshot = 0
        state.snapshot_at = now
        label = str(state.number)
        metrics.state_snapshot_timestamp.labels(label).set(wall)
        metrics.state_keys.labels(label).set(len(state.store.slots))
        numbers.append(state.number)
    log.debug("state snapshot written", extra={"partitions": numbers, "bytes": written})


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
        return snapshot_due(self.settings, state, now)

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
        mark_snapshotted(self.metrics, states, written)
        return True

    def commit(self) -> None:
        """Commit the stored offsets now (at revoke and shutdown)."""
        try:
            self._consumer().commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit failed", extra={"error": str(exc)})


class TransactionalCheckpoint:
    """``delivery: exactly_once``: each checkpoint is one Kafka transaction.

    A transaction holds the alerts and dead letters of the batches since the
    previous one, the state records of the partitions whose snapshot is due,
    and the batches' next offsets (``send_offsets_to_transaction`` with the
    consumer's group metadata, so a member fenced by a rebalance cannot commit
    them). It commits every ``consumer.transaction_interval_s``, at a revoke
    and at shutdown. Errors by class: retriable -> the call is tried again;
    abortable -> the transaction is aborted and ``rewind`` takes every owned
    partition back to its last committed state and offsets; fatal (fenced) ->
    ``fail``, and the service exits 1.
    """

    #: the longest a retriable transaction call is retried
    RETRY_S = 60.0

    def __init__(self, settings: Settings, metrics: Metrics, consumer: Callable[[], Consumer],
                 producer: Callable[[], Any], produce: Produce, topics: Callable[[], dict[str, str]],
                 rewind: Callable[[], None], fail: Callable[[KafkaError], None],
                 committed: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        #: called after each commit (the service counts what the transaction delivered)
        self._committed = committed
        self.metrics = metrics
        self._consumer = consumer
        self._producer = producer
        self._produce = produce
        self._topics = topics
        self._rewind = rewind
        self._fail = fail
        self._state_topic = settings.state_topic
        self._interval = settings.consumer.transaction_interval_s
        #: (topic, partition) -> next offset, for the batches in the open transaction
        self._offsets: dict[tuple[str, int], int] = {}
        self._began = time.monotonic()
        self._open = False
        self._broken = False

    def start(self) -> None:
        """Fence older incarnations of this transactional id, then open the first transaction."""
        producer = self._producer()
        producer.init_transactions(self.RETRY_S)
        self._begin()

    def _begin(self) -> None:
        self._producer().begin_transaction()
        self._open = True
        self._began = time.monotonic()

    def due(self, state: PartitionState, now: float) -> bool:
        return snapshot_due(self.settings, state, now)

    def after_batch(self, states: Iterable[PartitionState], offsets: list[TopicPartition]) -> bool:
        for tp in offsets:
            self._offsets[(tp.topic, tp.partition)] = tp.offset
        return self.snapshot_due(states)

    def snapshot_due(self, states: Iterable[PartitionState]) -> bool:
        """Commit when the transaction interval is over (the due snapshots go with it)."""
        if not self._open or time.monotonic() - self._began < self._interval:
            return True
        now = time.monotonic()
        due = [s for s in states if self.due(s, now)]
        if not due and not self._offsets:
            return True  # nothing read since the last commit: nothing to commit
        return self.snapshot(due)

    def snapshot(self, states: list[PartitionState]) -> bool:
        """Commit the open transaction, with the snapshots of ``states``; False when it aborted."""
        if not self._open or self._broken:
            return False
        written = 0
        try:
            for state in states:
                keys, tail = state.store.snapshot(state.pipeline, state.positions, self._topics())
                for key, value in (*keys, *tail):
                    self._produce("state", self._state_topic, key, value, None, state.number)
                written += state.store.last_bytes
            offsets = [TopicPartition(topic, partition, offset)
                       for (topic, partition), offset in self._offsets.items()]
            producer = self._producer()
            if offsets:
                metadata = self._consumer().consumer_group_metadata()
                self._retry("send_offsets_to_transaction", lambda timeout: producer.send_offsets_to_transaction(
                    offsets, metadata, timeout))
            self._retry("commit_transaction", producer.commit_transaction)
        except KafkaException as exc:
            self._open = False
            self._after_failure(exc.args[0])
            return False
        self.metrics.transactions.labels("committed").inc()
        self._committed()
        mark_snapshotted(self.metrics, states, written)
        if offsets:
            # stored, never committed by the consumer: the lag statistics count from them
            try:
                self._consumer().store_offsets(offsets=offsets)
            except KafkaException:
                pass
        self._offsets.clear()
        self._begin()
        return True

    def _serve(self) -> None:
        """While a transactional call blocks: the producer's callbacks (errors, deliveries) run,
        so an outage shows in ``kafka_errors_total`` at once, not after the call returns."""
        self._producer().poll(0)

    def _retry(self, name: str, call: Callable[[float], Any]) -> None:
        """``call(timeout)`` until it succeeds, a non-retriable error, or ``RETRY_S``."""
        deadline = time.monotonic() + self.RETRY_S
        while True:
            try:
                _bounded(name, call, CALL_TIMEOUT_S, self._serve)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if not error.retriable() or time.monotonic() > deadline:
                    raise
                log.warning("transaction call failed, retrying", extra={"error": error.str()})
                time.sleep(0.2)

    def _after_failure(self, error: KafkaError) -> None:
        if error.txn_requires_abort():
            log.warning("transaction aborted: every owned partition goes back to its last committed "
                        "state and offsets", extra={"error": error.str(), "code": error.name()})
            if self.abort():
                self._rewind()
            return
        # fenced (another process has this transactional id) or another fatal error
        self._broken = True
        self.metrics.transactions.labels("failed").inc()
        self._fail(error)

    def abort(self) -> bool:
        """Abort the open transaction (its output never becomes visible); then open the next."""
        self._offsets.clear()
        try:
            _bounded("abort_transaction", self._producer().abort_transaction, self.RETRY_S, self._serve)
        except KafkaException as exc:
            self._broken = True
            self._fail(exc.args[0])
            return False
        self.metrics.transactions.labels("aborted").inc()
        self._begin()
        return True

    def commit(self) -> None:
        """Transactions commit offsets themselves: nothing to do (the at-least-once interface)."""

    def close(self) -> None:
        """Abort what is left open (shutdown after a failure: nothing of it may become visible)."""
        if self._open and not self._broken:
            try:
                _bounded("abort_transaction", self._producer().abort_transaction, 10.0, self._serve)
            except KafkaException:
                pass
        self._open = False


def _bounded(name: str, call: Callable[[float], Any], timeout: float,
             serve: Callable[[], None] = lambda: None) -> None:
    """``call(timeout)`` in a worker thread, ``serve()`` every ``SERVE_EVERY_S`` while it runs; a
    fatal ``_TIMED_OUT`` error when it outlives the timeout by ``STUCK_GRACE_S`` (the call is left
    blocked; the producer must not be used again)."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            call(timeout)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=target, name=f"kafka-{name}", daemon=True)
    worker.start()
    deadline = time.monotonic() + timeout + STUCK_GRACE_S
    worker.join(min(SERVE_EVERY_S, timeout + STUCK_GRACE_S))
    while worker.is_alive() and time.monotonic() < deadline:
        serve()
        worker.join(min(SERVE_EVERY_S, max(0.0, deadline - time.monotonic())))
    if worker.is_alive():
        raise KafkaException(KafkaError(
            KafkaError._TIMED_OUT, f"{name} did not return {timeout + STUCK_GRACE_S:.0f} s after it "
            f"started (its timeout was {timeout:.0f} s): the transactional producer is stuck", fatal=True))
    if failure:
        raise failure[0]
