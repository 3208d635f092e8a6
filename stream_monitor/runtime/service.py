"""The long-running Kafka consumer: consume, decode, detect, alert, checkpoint.

State is scoped by input partition: each partition this member owns has its
own pipeline (detectors and label join), restored from the changelog topic
when the partition is assigned (:mod:`stream_monitor.state.recovery`),
written back by snapshots, and dropped when the partition is revoked (after a
final snapshot and commit) or lost (without either). The commit order is
:mod:`stream_monitor.runtime.checkpoint`'s: alerts and dead letters
delivered, then state, then offsets. A crash between delivery and commit
re-reads the batch silently after the restore (alerts already delivered are
not produced again; the detectors see every event once); nothing is lost.

Bad messages never stall a partition: each goes to the dead-letter topic with
its original key, value and headers plus ``error.*`` and ``source.*`` headers.

A message that can never be produced (a permanent delivery error: not
authorised, record too large for the topic...) is never dropped: the service
logs it, counts it in ``produce_failures_total{kind, code}``, stops before the
batch's offsets are stored and exits 1, so the orchestrator restarts it and the
batch (and its alert or dead letter) is tried again. This holds for dead
letters too: the dead letter is the only copy of a bad message the monitor
keeps, and its source offset is not committed until it is delivered.

SIGTERM or Ctrl-C: the current batch finishes, the producer flushes, offsets
are committed, the consumer closes and :meth:`Service.run` returns 0.
"""

from __future__ import annotations

import bisect
import contextlib
import faulthandler
import gc
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from operator import methodcaller
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from stream_monitor import logs
from stream_monitor.config import Settings
from stream_monitor.errors import BadMessage, ConfigError, StreamMonitorError
from stream_monitor.metrics import Health, Metrics
from stream_monitor.monitor import Record, RecordBlock
from stream_monitor.pipeline import Decoder, LabelRecord
from stream_monitor.runtime.checkpoint import Checkpoint, TransactionalCheckpoint
from stream_monitor.state.changelog import ChangelogError, ChangelogReader, ensure_changelog
from stream_monitor.state.recovery import PartitionState, recover

__all__ = ["Service", "consumer_config", "producer_config"]

log = logging.getLogger("stream_monitor.runtime")

#: a message's fields, read for a whole batch at a time (C calls, no Python loop)
_ERROR, _TOPIC, _PARTITION = methodcaller("error"), methodcaller("topic"), methodcaller("partition")
_OFFSET, _TIMESTAMP, _VALUE = methodcaller("offset"), methodcaller("timestamp"), methodcaller("value")

#: SIGTERM to exit: time left to deliver what is pending before giving up on it
STOP_GRACE_S = 7.0
#: the cyclic garbage collector's young generation while the loop runs (Python's default: 700)
GC_YOUNG_OBJECTS = 50_000
#: the detectors' statistic and threshold gauges are read this often at most while events flow
#: (and at every empty poll): a scrape sees them at most this much older than the last batch
GAUGES_EVERY_S = 1.0
#: delivery errors worth producing again: they pass when the broker is back
_PASSING_DELIVERY_ERRORS = frozenset({KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT,
                                      KafkaError._TRANSPORT, KafkaError.REQUEST_TIMED_OUT,
                                      KafkaError.NOT_ENOUGH_REPLICAS,
                                      KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                                      KafkaError.LEADER_NOT_AVAILABLE,
                                      KafkaError.NOT_LEADER_FOR_PARTITION})

#: delivery reports of the messages an aborted transaction had queued or in flight (abort_transaction
#: purges them): not failures, the rollback itself
_ROLLED_BACK = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})


class TopicsMissing(StreamMonitorError):
    def __init__(self, topics: list[str]) -> None:
        super().__init__(f"topic(s) not found on the cluster: {', '.join(topics)}; create them "
                         f"(see README) or fix topics.* in the config")
        self.topics = topics




def consumer_config(settings: Settings, **callbacks: Any) -> dict[str, Any]:
    """Our defaults, then the user's librdkafka properties, then what correctness needs.

    With labels, both input topics must be co-partitioned on each member
    (partition i of predictions and of labels together, as Kafka Streams
    requires for a join): the range assignor does that for topics with the
    same partition count; cooperative-sticky does not.
    """
    join_needs = {"partition.assignment.strategy": "range"} if settings.topics.labels else {}
    static = {"group.instance.id": settings.kafka.instance_id} if settings.kafka.instance_id else {}
    return {
        "auto.offset.reset": "earliest",
        "statistics.interval.ms": 5000,
        "partition.assignment.strategy": "cooperative-sticky",
        **settings.kafka.client_properties(),
        "group.id": settings.kafka.group_id,
        # offsets are stored by hand after the batch's alerts are delivered; in exactly-once
        # delivery they are committed by the transactions, never by the consumer
        "enable.auto.offset.store": False,
        "enable.auto.commit": settings.delivery != "exactly_once",
        "auto.commit.interval.ms": int(settings.consumer.commit_interval_s * 1000),
        **static,
        **join_needs,
        # librdkafka's own lines through our logger (JSON like every other line)
        "logger": logs.kafka_logger(),
        **callbacks,
    }


def producer_config(settings: Settings, **callbacks: Any) -> dict[str, Any]:
    """Idempotent, ``acks=all``; in exactly-once delivery also transactional.

    The transactional id is stable per instance (``<group_id>.<instance_id>``)
    so that a restarted process fences its previous incarnation and aborts the
    transaction it left open; without an instance id it is unique per process,
    and a transaction left open by a killed process blocks read_committed
    readers until ``transaction.timeout.ms`` (10 s by default here).
    """
    transactional: dict[str, Any] = {}
    timeout: dict[str, Any] = {}
    if settings.delivery == "exactly_once":
        instance = settings.kafka.instance_id or uuid.uuid4().hex[:12]
        transactional = {"transactional.id": f"{settings.kafka.group_id}.{instance}"}
        timeout = {"transaction.timeout.ms": 10_000}
    return {
        "linger.ms": 5,
        **timeout,
        **settings.kafka.client_properties(),
        "enable.idempotence": True,
        "acks": "all",
        **transactional,
        "logger": logs.kafka_logger(),
        **callbacks,
    }


def check_client_properties(settings: Settings) -> None:
    """Let librdkafka judge ``kafka.properties`` now, as a config error naming the property.

    The clients are built against an unreachable address and closed at once:
    nothing is sent anywhere.
    """
    offline = {"bootstrap.servers": "127.0.0.1:1", "log_level": 0}
    for kind, build in (("consumer", lambda: Consumer({**consumer_config(settings), **offline})),
                        ("producer", lambda: Producer({**producer_config(settings), **offline}))):
        try:
            client = build()
        except KafkaException as exc:
            raise ConfigError([("kafka.properties", f"{kind}: {exc.args[0].str()}")]) from None
        if isinstance(client, Consumer):
            client.close()


class _Deliveries:
    """Delivery reports of the messages produced for the current batch."""

    def __init__(self) -> None:
        self.failed: list[tuple[str, str, bytes | None, bytes | None, Any, int, KafkaError]] = []
        self.delivered_alerts = 0

    def callback(self, kind: str, topic: str, key: bytes | None, value: bytes | None,
                 headers: Any, partition: int) -> Callable[[KafkaError | None, Message], None]:
        def report(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                self.failed.append((kind, topic, key, value, headers, partition, error))
            elif kind == "alert":
                self.delivered_alerts += 1
        return report


class Service:
    """One consumer-group member running the monitor over the input topic."""

    def __init__(self, settings: Settings, metrics: Metrics, health: Health,
                 on_alert: Callable[[bytes], None] | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.health = health
        #: input partition number -> its state, for the partitions this member owns
        self.owned: dict[int, PartitionState] = {}
        #: models already reported as spread over partitions
        self._spread_warned: set[str] = set()
        self._labels_topic = settings.topics.labels
        self._paused = {"labels": False, "predictions": False}
        #: predictions read and labels they resolved when the current pacing window began,
        #: and whether pausing the labels is allowed in it (see _labels_pause_helps)
        self._pause_window: tuple[int, int, bool] | None = None
        self._on_alert = on_alert
        self._error_log = logs.RateLimitedLog(log)
        #: one line per dead letter of a (source topic, reason) at its 1st, 10th, 100th, ...
        self._dead_letter_log = logs.RateLimitedLog(log)
        self._stop = threading.Event()
        self._fatal: KafkaError | None = None
        #: the first message that could never be produced: the service stops uncommitted
        self._undeliverable: KafkaError | None = None
        self._stop_deadline: float | None = None
        #: why restoring a partition's state failed (the service stops with exit 1)
        self._restore_failed: str | None = None
        self._decoder = Decoder(settings)
        self._assigned: set[tuple[str, int]] = set()
        #: messages read per topic over this process's life (logged at exit)
        self._consumed_total: dict[str, int] = {}
        #: exactly-once: messages read per topic since the last committed transaction, and over
        #: this process's life those an aborted transaction rolled back (read again; logged at exit)
        self._uncommitted_reads: dict[str, int] = {}
        self._rolled_back_total: dict[str, int] = {}
        #: consumer lag per assigned partition from the client's statistics; None: unknown
        self._lag: dict[tuple[str, int], int | None] = {}
        self._deliveries = _Deliveries()
        self._consumer_config = consumer_config(
            settings, error_cb=self._on_kafka_error, stats_cb=self._on_stats)
        self.consumer = Consumer(self._consumer_config)
        self.producer = Producer(producer_config(settings, error_cb=self._on_kafka_error))
        self._reader: ChangelogReader | None = None
        self.exactly_once = settings.delivery == "exactly_once"
        self.checkpoint: Checkpoint | TransactionalCheckpoint
        if self.exactly_once:
            self.checkpoint = TransactionalCheckpoint(
                settings, metrics, lambda: self.consumer, lambda: self.producer, self._produce,
                self._topic_kinds, self._rewind, self._on_transaction_failure, self._transaction_committed)
        else:
            self.checkpoint = Checkpoint(settings, metrics, lambda: self.consumer, self._produce,
                                         self._flush_until_delivered, self._topic_kinds)

    def _topic_kinds(self) -> dict[str, str]:
        """Topic kind -> topic name, for the input topics read."""
        kinds = {"predictions": self.settings.topics.predictions}
        if self._labels_topic:
            kinds["labels"] = self._labels_topic
        return kinds

    # -- lifecycle ------------------------------------------------------

    def stop(self, *_: Any) -> None:
        """Ask the loop to finish its batch and shut down (signal-handler safe)."""
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + STOP_GRACE_S
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the service; SIGUSR1 prints every thread's stack to stderr
        (where a stuck process waits, without stopping it)."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        faulthandler.register(signal.SIGUSR1, all_threads=True)

    def run(self, max_idle_s: float | None = None) -> int:
        """Consume until stopped; return the process exit status.

        ``max_idle_s`` stops the loop after that long without a message (for
        tests and benchmarks: "run until caught up").
        """
        batch_size = self.settings.consumer.batch_size
        timeout = self.settings.consumer.poll_timeout_s
        # Each batch makes thousands of short-lived containers (messages, tuples, lists) and no
        # reference cycles: with the default young generation (700) the cyclic collector ran a few
        # times per batch and scanned the detectors' state each tenth time, 0.4-0.5 us per event
        # (bench/throughput.py). A cycle made meanwhile waits for 50,000 more objects at most.
        collector = gc.get_threshold()
        gc.set_threshold(max(collector[0], GC_YOUNG_OBJECTS), *collector[1:])
        try:
            self._check_topics()
            if isinstance(self.checkpoint, TransactionalCheckpoint):
                self.checkpoint.start()
            topics = [self.settings.topics.predictions]
            if self._labels_topic:
                topics.append(self._labels_topic)
            self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                    on_lost=self._on_lost)
            log.info("consuming", extra={"topics": topics, "group_id": self.settings.kafka.group_id})
            idle_since = time.monotonic()
            while not self._stop.is_set():
                messages = self.consumer.consume(batch_size, timeout)
                self.health.beat()
                self.producer.poll(0)
                if messages:
                    idle_since = time.monotonic()
                    self._process(messages)
                elif max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                    break
                if self._stop.is_set():
                    break
                if not messages:
                    # a quiet input still gets its last changes written in time, and its gauges read
                    self.checkpoint.snapshot_due(self.owned.values())
                    for state in self.owned.values():
                        state.pipeline.monitor.refresh_gauges()
                # every iteration, empty polls included: a pause must never outlive its reason
                self._pace_inputs()
                self._update_readiness()
        finally:
            self._shutdown()
            gc.set_threshold(*collector)
        return self.exit_status()

    def exit_status(self) -> int:
        """1 after a fatal client error or an undeliverable message, else 0."""
        return 1 if self.exit_reason() is not None else 0

    def exit_reason(self) -> str | None:
        """Why the service stopped with exit 1, or None."""
        if self._undeliverable is not None:
            return (f"a message could not be produced ({self._undeliverable.name()}): the batch "
                    f"is uncommitted and is retried after a restart")
        if self._fatal is not None:
            return f"fatal Kafka client error ({self._fatal.name()}): {self._fatal.str()}"
        if self._restore_failed is not None:
            return f"restoring state failed: {self._restore_failed}"
        return None

    def _check_topics(self) -> None:
        """Fail at start, by name, when a topic we read or write does not exist."""
        wanted = {self.settings.topics.predictions, self.settings.topics.alerts,
                  self.settings.topics.dead_letter}
        metadata = self.producer.list_topics(timeout=30)
        labels = self._labels_topic
        if labels and (labels not in metadata.topics or metadata.topics[labels].error is not None):
            # labels are optional: without their topic the service monitors the rest
            log.warning("labels topic not found: performance monitoring is off (create the topic "
                        "and restart, or set topics.labels to null to silence this)",
                        extra={"topic": labels})
            self._labels_topic = None
        missing = sorted(topic for topic in wanted
                         if topic not in metadata.topics or metadata.topics[topic].error is not None)
        if missing:
            raise TopicsMissing(missing)
        if self._labels_topic:
            counts = {topic: len(metadata.topics[topic].partitions)
                      for topic in (self.settings.topics.predictions, self._labels_topic)}
            if len(set(counts.values())) != 1:
                raise StreamMonitorError(
                    f"the predictions and labels topics must have the same number of partitions "
                    f"(and be keyed by model the same way) for labels to meet their predictions: "
                    f"{counts}")
        ensure_changelog(self.settings, len(metadata.topics[self.settings.topics.predictions].partitions))

    def _shutdown(self) -> None:
        self.health.set_ready(False, "shutting down")
        if self._stop_deadline is None:  # the loop ended by itself (idle, or an exception)
            self._stop_deadline = time.monotonic() + STOP_GRACE_S
        failed = self._undeliverable is not None or self._fatal is not None or self._restore_failed
        if isinstance(self.checkpoint, TransactionalCheckpoint):
            if failed or not self.checkpoint.snapshot([s for s in self.owned.values() if s.since_snapshot]):
                self.checkpoint.close()  # nothing of an unfinished transaction becomes visible
        else:
            if self._flush_until_delivered() and not failed:
                # the last snapshot: a restart resumes without re-reading
                self.checkpoint.snapshot([s for s in self.owned.values() if s.since_snapshot])
            # stored offsets only ever cover delivered output: committing them is always safe
            self.checkpoint.commit()
        self.consumer.close()
        if self._reader is not None:
            self._reader.close()
        self._log_dead_letter_summary()
        log.info("stopped", extra={"consumed": self._consumed_total, "rolled_back": self._rolled_back_total})

    def _log_dead_letter_summary(self) -> None:
        """The dead letters of this process's life by source topic and reason, and how many of
        them had no line of their own (rate-limited)."""
        counts = self._dead_letter_log.counts()
        if not counts:
            return
        produced: dict[str, dict[str, int]] = {}
        for (topic, reason), count in sorted(counts.items()):
            produced.setdefault(topic, {})[reason] = count
        log.warning("dead letters produced", extra={
            "dead_letters": produced, "not_logged": sum(self._dead_letter_log.suppressed().values())})

    # -- the batch ------------------------------------------------------

    def _process(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        metrics = self.metrics
        owned = self.owned
        by_partition: dict[int, list[Record | LabelRecord | RecordBlock]] = {}
        next_offsets: dict[tuple[str, int], int] = {}
        consumed: dict[str, int] = {}
        replayed: dict[str, int] = {}
        batch_size = len(messages)
        errors = list(map(_ERROR, messages))
        if errors.count(None) != len(errors):
            for error in errors:
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    self._on_kafka_error(error)
            messages = [message for message, error in zip(messages, errors) if error is None]
        # the bookkeeping goes run by run: consume() returns long runs of one topic-partition
        for topic, partition, run in _runs(messages, one_topic=self._labels_topic is None):
            state = owned.get(partition)
            if state is None or (topic, partition) not in self._assigned:
                continue  # not ours (any more): its owner reads it from the committed offset
            kind = "labels" if topic == self._labels_topic else "predictions"
            count = len(run)
            last = run[-1].offset()
            state.positions[kind] = last + 1
            state.since_snapshot += count
            consumed[topic] = consumed.get(topic, 0) + count
            # messages below the committed offset are silent: the first ``quiet`` of the run
            until = state.silent_until.get(kind)
            quiet = 0
            if until is not None and run[0].offset() < until:
                offsets = list(map(_OFFSET, run))
                quiet = bisect.bisect_left(offsets, until)
                # storing a silent offset would move the commit backwards; the last one stores
                # the committed offset itself (so the lag is known)
                replayed[topic] = replayed.get(topic, 0) + quiet
                if until - 1 in offsets[:quiet]:
                    next_offsets[(topic, partition)] = until
            if quiet < count:
                next_offsets[(topic, partition)] = last + 1
            items = by_partition.setdefault(partition, [])
            self._decode_run(run, kind, state, quiet, items)
        transactional = isinstance(self.checkpoint, TransactionalCheckpoint)
        for topic, count in consumed.items():
            self._consumed_total[topic] = self._consumed_total.get(topic, 0) + count
            if transactional:  # at-least-once never rolls a read back
                self._uncommitted_reads[topic] = self._uncommitted_reads.get(topic, 0) + count
            metrics.events_consumed.labels(topic).inc(count)
        for topic, count in replayed.items():
            metrics.state_replayed.labels(topic).inc(count)
        if len(owned) > 1:
            self._warn_spread_models()
        for partition, items in by_partition.items():
            for alert in owned[partition].pipeline.process(items):
                value = alert.to_json()
                self._produce("alert", self.settings.topics.alerts, alert.key, value, None)
                log_alert(alert)
                if self._on_alert is not None:
                    self._on_alert(value)
        offsets = [TopicPartition(topic, partition, offset)
                   for (topic, partition), offset in next_offsets.items()]
        touched = [owned[partition] for partition in by_partition]
        if not self.checkpoint.after_batch(touched, offsets):
            return  # stopping with undelivered output: the batch stays uncommitted
        self._export_join_gauges()
        metrics.batch_size.observe(batch_size)
        metrics.processing_seconds.observe(time.perf_counter() - started)

    def _decode_run(self, run: list[Message], kind: str, state: PartitionState, quiet: int,
                    items: list[Record | LabelRecord | RecordBlock]) -> None:
        """Decode one run of messages into ``items`` in order; bad ones go to the dead letters.

        A run of predictions of the partition's usual shape becomes one
        :class:`RecordBlock` (no object per message). The first ``quiet``
        messages are silent: they went to the dead letters before the restart.
        """
        partition = state.number
        times = [milliseconds / 1000.0 if timestamp_kind else None
                 for timestamp_kind, milliseconds in map(_TIMESTAMP, run)]
        values = list(map(_VALUE, run))
        if kind == "predictions":
            for start, stop, block in self._decoder.spans(values, state.pipeline.block_schema(),
                                                          state.pipeline.schema_of):
                if block is not None and block.holes:
                    # the messages left out of the block are rejects: their dead letters, then the block
                    for hole in block.holes:
                        at = start + hole
                        self._decode_records(run[at:at + 1], values[at:at + 1], times[at:at + 1], kind,
                                             partition, int(at < quiet), items)
                    left_out = set(block.holes)
                    kept = [index for index in range(start, stop) if index - start not in left_out]
                    items.append(RecordBlock(block, partition, [times[index] for index in kept],
                                             bisect.bisect_left(kept, quiet)))
                elif block is not None:
                    items.append(RecordBlock(block, partition, times[start:stop], max(0, quiet - start)))
                elif start == 0 and stop == len(run):
                    self._decode_records(run, values, times, kind, partition, quiet, items)
                else:
                    self._decode_records(run[start:stop], values[start:stop], times[start:stop], kind,
                                         partition, max(0, quiet - start), items)
            return
        self._decode_records(run, values, times, kind, partition, quiet, items)

    def _decode_records(self, run: list[Message], values: list[bytes | None], times: list[float | None],
                        kind: str, partition: int, quiet: int,
                        items: list[Record | LabelRecord | RecordBlock]) -> None:
        """Decode messages one by one into records; bad ones go to the dead letters (unless silent)."""
        make: Any
        if kind == "labels":
            outcomes: list[Any] = self._decoder.labels(values)
            make = LabelRecord
        else:
            outcomes = self._decoder.predictions(values)
            make = Record
        for index, outcome in enumerate(outcomes):
            silent = index < quiet
            if outcome.__class__ is BadMessage:
                if not silent:
                    self._dead_letter(run[index], outcome)
                continue
            items.append(make(outcome, partition, times[index], silent))

    def _warn_spread_models(self) -> None:
        """Say once per model when its events arrive on several partitions this member owns.

        State is per partition: such a model runs one detector family per
        partition, each with the whole model's false-alarm budget unless
        ``input.model_partitions`` says how far it is spread.
        """
        if self.settings.input.model_partitions > 1:
            return
        seen: dict[str, int] = {}
        for number, state in self.owned.items():
            for model in state.pipeline.monitor.models():
                first = seen.setdefault(model, number)
                if first != number and model not in self._spread_warned:
                    self._spread_warned.add(model)
                    log.warning("a model's events arrive on more than one input partition (producers "
                                "not keyed by model): each partition runs its own detectors for it; key "
                                "by model, or set input.model_partitions to the partition count",
                                extra={"model": model, "partitions": [first, number]})

    def _export_join_gauges(self) -> None:
        """Waiting predictions and labels over every partition this member owns."""
        joins = [state.pipeline.join for state in self.owned.values()]
        self.metrics.join_waiting.labels("predictions").set(sum(j.pending_predictions() for j in joins))
        self.metrics.join_waiting.labels("labels").set(sum(j.waiting_labels() for j in joins))

    def _dead_letter(self, message: Message, bad: BadMessage) -> None:
        topic = message.topic()
        key, value = message.key(), message.value()
        headers = list(message.headers() or [])
        headers += [
            ("error.reason", bad.reason.encode()),
            ("error.detail", bad.detail.encode("utf-8", "replace")[:1000]),
            ("source.topic", topic.encode()),
            ("source.partition", str(message.partition()).encode()),
            ("source.offset", str(message.offset()).encode()),
        ]
        limit = self.settings.limits.dead_letter_max_bytes
        if (value is not None and len(value) > limit) or (key is not None and len(key) > limit // 8):
            # the original may be bigger than the producer or the topic accept: keep a
            # prefix, say so, and point at the source offset, which still has it whole
            headers += [("error.truncated", b"true"),
                        ("error.original_size", str(len(value or b"")).encode())]
            value = value[:limit] if value is not None else None
            key = key[:limit // 8] if key is not None else None
        self._produce("dead_letter", self.settings.topics.dead_letter, key, value, headers)
        self.metrics.events_rejected.labels(topic, bad.reason).inc()
        # where to find it, never what it holds (the dead letter has the bytes and error.detail)
        self._dead_letter_log.log((topic, bad.reason), "dead letter", reason=bad.reason,
                                  source_topic=topic, source_partition=message.partition(),
                                  source_offset=message.offset())

    def _produce(self, kind: str, topic: str, key: bytes | None, value: bytes | None,
                 headers: Any, partition: int = -1) -> None:
        """Produce one message (``partition`` -1: the partitioner's choice), never dropping it."""
        callback = self._deliveries.callback(kind, topic, key, value, headers, partition)
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers, partition=partition,
                                      on_delivery=callback)
                return
            except BufferError:
                # the local queue is full: serve delivery reports to make room, never drop
                self.producer.poll(0.5)
            except KafkaException as exc:
                # refused before it was queued (too large, bad header...): retrying cannot help
                self._give_up(kind, topic, exc.args[0])
                return

    def _give_up(self, kind: str, topic: str, error: KafkaError) -> None:
        """A permanent failure: count it, say it, and stop before the batch is stored."""
        self.metrics.produce_failures.labels(kind, error.name()).inc()
        log.error("message can never be produced: stopping with exit 1, the batch uncommitted, "
                  "to retry after a restart (fix the topic or the permissions)",
                  extra={"kind": kind, "topic": topic, "code": error.name(), "error": error.str()})
        if self._undeliverable is None:
            self._undeliverable = error
        self.stop()

    def _flush_until_delivered(self) -> bool:
        """Flush; re-produce what failed for a passing reason, until all is delivered.

        Waits through broker outages. Once a stop is requested it waits only until
        the stop deadline and returns False when something is still undelivered.
        """
        while True:
            while len(self.producer) > 0:
                self.producer.flush(0.5)
                self.health.beat()
                if self._past_stop_deadline():
                    log.error("messages undelivered at shutdown; their offsets stay uncommitted",
                              extra={"pending": len(self.producer)})
                    return False
            if self._undeliverable is not None:
                return False
            failed, self._deliveries.failed = self._deliveries.failed, []
            delivered = self._deliveries.delivered_alerts
            self._deliveries.delivered_alerts = 0
            if delivered:
                self.metrics.alerts_produced.inc(delivered)
            retry = []
            for item in failed:
                error = item[-1]
                if error.retriable() or error.code() in _PASSING_DELIVERY_ERRORS:
                    retry.append(item)
                else:
                    self._give_up(item[0], item[1], error)
            if self._undeliverable is not None:
                return False
            if not retry:
                return True
            log.warning("re-producing undelivered messages", extra={"count": len(retry),
                                                                    "error": str(retry[0][-1])})
            if self._past_stop_deadline():
                return False
            time.sleep(0.5)
            for kind, topic, key, value, headers, partition, _ in retry:
                self._produce(kind, topic, key, value, headers, partition)

    def _past_stop_deadline(self) -> bool:
        return self._stop_deadline is not None and time.monotonic() > self._stop_deadline

    def _pace_inputs(self) -> None:
        """Keep the two input topics in step so the join does not give up on what it could join.

        - Labels far ahead of their predictions would crowd the join's waiting
          room: pause the labels topic while more than half the room is taken
          by unresolved labels and the predictions topic still has unread
          messages (or was not fetched yet), as long as the predictions read
          resolve waiting labels (see :meth:`_labels_pause_helps`). Once every
          prediction has been read, waiting cannot resolve a label: the
          labels topic is resumed, and the join gives up on what cannot join
          (counted as ``unmatched``) instead of stalling.
        - Predictions far ahead of their labels would expire by count before
          their labels are read: pause the predictions topic while a model's
          waiting predictions come within two batches of
          ``labels.retention_events`` and the labels topic still has unread
          messages (pausing drops the client's prefetched messages, so the
          batches in hand are all that can overshoot).

        Never both at once (that could wait forever). Called on every loop
        iteration, empty polls included, so no order of arrival leaves a topic
        paused for good; each decision is applied to every assigned partition
        of the topic, so partitions kept or added by a rebalance follow it.
        """
        if not self._labels_topic:
            return
        by_topic: dict[str, list[TopicPartition]] = {}
        for topic, partition in self._assigned:
            by_topic.setdefault(topic, []).append(TopicPartition(topic, partition))
        labels = by_topic.get(self._labels_topic, [])
        predictions = by_topic.get(self.settings.topics.predictions, [])
        join = _Joins(self.owned)
        room = self.settings.labels.early_label_events
        retention = self.settings.labels.retention_events
        waiting = join.unresolved_labels()
        # an assigned predictions partition not fetched yet (its watermark unknown) may well hold
        # the predictions those labels wait for: after a restore the labels, read from a known
        # offset, can arrive first, while the predictions' first fetch waits on an offset lookup
        labels_ahead = (waiting > room // 2 or (self._paused["labels"] and waiting > room // 4)) \
            and self._unread(predictions, unknown=True) and self._labels_pause_helps(room)
        # thresholds leave room for the batches already on their way
        batch = self.settings.consumer.batch_size
        high = max(retention // 2, retention - 2 * batch)
        low = max(retention // 4, retention - 3 * batch)
        fullest = join.fullest_pending()
        predictions_ahead = (fullest >= high or (self._paused["predictions"] and fullest > low)) \
            and self._unread(labels)
        if labels_ahead and predictions_ahead:
            labels_ahead = predictions_ahead = False
        for name, partitions, ahead in (("labels", labels, labels_ahead),
                                        ("predictions", predictions, predictions_ahead)):
            if not partitions:
                continue
            if ahead:
                self.consumer.pause(partitions)
            elif self._paused[name]:
                self.consumer.resume(partitions)
            if ahead != self._paused[name]:
                log.info("pausing input" if ahead else "resuming input",
                         extra={"topic_kind": name, "labels_waiting": waiting,
                                "fullest_pending": fullest})
            self._paused[name] = ahead

    def _labels_pause_helps(self, room: int) -> bool:
        """Whether pausing the labels still lets predictions resolve the waiting labels.

        Labels whose predictions were read before a restart (or never sent) wait
        for good: pausing the labels for them only lets the predictions run
        ahead of their own labels. A pause lasts while the predictions read
        resolve waiting labels; after ``room`` predictions read that resolved
        none, the labels flow for the next ``room`` predictions before a pause
        is tried again. (How many labels wait at the two ends of a window says
        nothing: labels arrive in batches between the pauses.)
        """
        joins = _Joins(self.owned)
        read = self._consumed_total.get(self.settings.topics.predictions, 0)
        resolved = joins.resolved_by_predictions()
        if self._pause_window is None:
            self._pause_window = (read, resolved, True)
        since, resolved_then, pausing = self._pause_window
        if read - since < max(room, 1):
            return pausing
        # a window is over: pause (again) only when the last one saw labels resolve
        helped = resolved != resolved_then
        self._pause_window = (read, resolved, pausing and helped or not pausing)
        if pausing and not helped:
            log.info("labels waiting for predictions already read: the labels topic flows",
                     extra={"labels_waiting": joins.unresolved_labels()})
        return self._pause_window[2]

    def _unread(self, partitions: list[TopicPartition], unknown: bool = False) -> bool:
        """Whether any of these partitions has messages this member has not read yet.

        Uses the client's cached watermarks (updated by every fetch): no request
        to the broker. A partition not fetched yet (its watermark unknown)
        counts as ``unknown``.
        """
        for position in self.consumer.position(partitions):
            low, high = self.consumer.get_watermark_offsets(position, cached=True)
            if high < 0:
                if unknown:
                    return True
                continue
            if high > (position.offset if position.offset >= 0 else max(low, 0)):
                return True
        return False

    # -- callbacks ------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Restore each new partition's state, then start reading where that state needs.

        Runs inside the consumer's poll: no message of these partitions is read
        before it returns. A changelog that cannot be read stops the service
        (exit 1, nothing committed); the orchestrator's restart tries again.
        """
        try:
            self._restore(consumer, partitions)
        except (ChangelogError, KafkaException) as exc:
            log.error("restoring state failed: stopping with exit 1, nothing committed",
                      extra={"error": str(exc), "topic": self.settings.state_topic})
            self._restore_failed = str(exc)
            self.stop()
        if "cooperative" in str(self._consumer_config.get("partition.assignment.strategy")):
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        self._assigned.update((p.topic, p.partition) for p in partitions)
        # a start at the snapshot, at or past the commit, is itself a safe commit: storing it
        # makes the lag known at once, also when nothing more arrives
        resumed = [TopicPartition(p.topic, p.partition, p.offset) for p in partitions
                   if p.offset >= 0 and p.partition in self.owned
                   and not self.owned[p.partition].silent_until.get(self._kind_of(p.topic))]
        if resumed:
            try:
                consumer.store_offsets(offsets=resumed)
            except KafkaException as exc:
                log.warning("storing the resumed offsets failed", extra={"error": str(exc)})
        log.info("partitions assigned", extra={"partitions": [
            f"{p.topic}[{p.partition}]@{p.offset}" if p.offset >= 0 else f"{p.topic}[{p.partition}]"
            for p in partitions]})

    def _rewind(self) -> None:
        """After an aborted transaction: every owned partition back to its last committed state.

        A message that can never be produced fails every transaction: that is
        a stop with exit 1, not a rewind that would loop.
        """
        failed, self._deliveries.failed = self._deliveries.failed, []
        self._deliveries.delivered_alerts = 0  # aborted: never visible
        for topic, count in self._uncommitted_reads.items():
            # read again from the committed offsets (or their state's positions) below
            self.metrics.transaction_rolled_back.labels(topic).inc(count)
            self._rolled_back_total[topic] = self._rolled_back_total.get(topic, 0) + count
        self._uncommitted_reads = {}
        for kind, topic, _key, _value, _headers, _partition, error in failed:
            if error.code() in _ROLLED_BACK:
                continue  # the abort purged it: the rollback itself, read again below
            if not (error.retriable() or error.code() in _PASSING_DELIVERY_ERRORS):
                self._give_up(kind, topic, error)
                return
        partitions = [TopicPartition(topic, number) for topic, number in sorted(self._assigned)]
        for number in list(self.owned):
            self.owned.pop(number).pipeline.release()
        try:
            seek = self._restore(self.consumer, partitions)
        except (ChangelogError, KafkaException) as exc:
            log.error("restoring state after an aborted transaction failed: stopping with exit 1",
                      extra={"error": str(exc)})
            self._restore_failed = str(exc)
            self.stop()
            return
        for tp in partitions:
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, seek[(tp.topic, tp.partition)]))

    def _transaction_committed(self) -> None:
        """What a committed transaction delivered: its alerts are visible to read_committed readers."""
        delivered = self._deliveries.delivered_alerts
        self._deliveries.delivered_alerts = 0
        self._uncommitted_reads = {}
        self._deliveries.failed = []
        if delivered:
            self.metrics.alerts_produced.inc(delivered)

    def _on_transaction_failure(self, error: KafkaError) -> None:
        """Fenced or fatal: this process must not write again; the orchestrator restarts it."""
        log.error("transaction failed for good (fenced by a newer instance, or fatal): stopping with "
                  "exit 1", extra={"code": error.name(), "error": error.str()})
        if self._fatal is None:
            self._fatal = error
        self.stop()

    def _kind_of(self, topic: str) -> str:
        return "labels" if topic == self._labels_topic else "predictions"

    def _restore(self, consumer: Consumer, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
        """Restore the partitions not owned yet; set each one's start offset; return where to seek.

        The seek offset is the state's start, else the committed offset, else the log start.
        """
        if not partitions:
            return {}
        kinds = {topic: kind for kind, topic in self._topic_kinds().items()}
        committed = consumer.committed([TopicPartition(p.topic, p.partition) for p in partitions],
                                       timeout=self.settings.state.restore_timeout_s)
        by_number: dict[int, dict[str, int | None]] = {}
        for tp in committed:
            by_number.setdefault(tp.partition, {})[kinds[tp.topic]] = tp.offset if tp.offset >= 0 else None
        if self._reader is None:
            self._reader = ChangelogReader(self.settings, progress=self.health.beat,
                                           error_cb=self._on_kafka_error)
        for number, offsets in sorted(by_number.items()):
            if number not in self.owned:
                self.owned[number] = recover(self.settings, self.metrics, self._reader, number,
                                             offsets, self._topic_kinds())
                self.owned[number].pipeline.monitor.gauge_interval_s = GAUGES_EVERY_S
        seek: dict[tuple[str, int], int] = {}
        for p in partitions:
            kind = kinds[p.topic]
            start = self.owned[p.partition].start.get(kind)
            if start is not None:
                p.offset = start
            done = by_number.get(p.partition, {}).get(kind)
            seek[(p.topic, p.partition)] = (start if start is not None else
                                            done if done is not None else OFFSET_BEGINNING)
        return seek

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The final snapshot and commit of what this member read, then its state goes."""
        numbers = {p.partition for p in partitions}
        states = [self.owned[n] for n in sorted(numbers) if n in self.owned and self.owned[n].since_snapshot]
        if self._undeliverable is None and self._fatal is None:
            self.checkpoint.snapshot(states)  # in exactly-once delivery: commits the transaction
        self.checkpoint.commit()
        self._forget(partitions)
        log.info("partitions revoked", extra={"partitions": [f"{p.topic}[{p.partition}]"
                                                             for p in partitions]})

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # another member may own them already: committing or writing state now could
        # overwrite its progress; the next owner restores from the changelog
        self._forget(partitions)
        if isinstance(self.checkpoint, TransactionalCheckpoint) and self.checkpoint.abort():
            # the aborted transaction held the kept partitions' output too: they go back
            self._rewind()
        log.warning("partitions lost", extra={"partitions": [f"{p.topic}[{p.partition}]"
                                                             for p in partitions]})

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self._assigned.discard((p.topic, p.partition))
            if self._lag.pop((p.topic, p.partition), None) is not None:
                # this member no longer owns the partition: stop exporting its lag
                with contextlib.suppress(KeyError):
                    self.metrics.consumer_lag.remove(p.topic, str(p.partition))
        held = {number for _, number in self._assigned}
        for number in [n for n in self.owned if n not in held]:
            # its detectors' series would stay exported, stale, beside the new owner's
            self.owned.pop(number).pipeline.release()
            for metric in (self.metrics.state_keys, self.metrics.state_snapshot_timestamp):
                with contextlib.suppress(KeyError):
                    metric.remove(str(number))

    def _on_kafka_error(self, error: KafkaError) -> None:
        self.metrics.kafka_errors.labels(error.name()).inc()
        if error.fatal():
            # the client cannot go on (e.g. the idempotent producer lost its epoch):
            # stop without committing more, exit non-zero, let the orchestrator restart us
            log.error("fatal kafka client error, stopping", extra={"code": error.name(),
                                                                   "error": error.str()})
            self._fatal = error
            self.stop()
            return
        # a broker that stays down is reported on every retry: each kind of error is logged
        # at its 1st, 10th, 100th, ... occurrence (every one is counted in kafka_errors_total)
        self._error_log.log(("kafka", error.name(), error.str().translate(logs.WITHOUT_DIGITS)), "kafka client error",
                            code=error.name(), error=error.str())

    def _on_stats(self, stats_json: str) -> None:
        stats = orjson.loads(stats_json)
        for topic, topic_stats in stats.get("topics", {}).items():
            for partition, partition_stats in topic_stats.get("partitions", {}).items():
                number = int(partition)
                if number < 0 or (topic, number) not in self._assigned:
                    continue
                lag = _partition_lag(partition_stats)
                self._lag[(topic, number)] = lag
                if lag is not None:
                    self.metrics.consumer_lag.labels(topic, partition).set(lag)

    def _update_readiness(self) -> None:
        """Ready only with partitions assigned and a known summed lag within ``ready_max_lag``.

        An unknown lag (no statistics yet, nothing stored or committed on a
        non-empty partition) is not evidence of being caught up: not ready,
        and the reason names the partitions.
        """
        if not self._assigned:
            self.health.set_ready(False, "no partitions assigned")
            return
        unknown = sorted(f"{topic}[{partition}]" for topic, partition in self._assigned
                         if self._lag.get((topic, partition)) is None)
        paused = [name for name, is_paused in self._paused.items() if is_paused]
        note = f"; paused: {', '.join(paused)}" if paused else ""
        if unknown:
            self.health.set_ready(False, f"lag unknown for {', '.join(unknown)}{note}")
            return
        lag = sum(self._lag[tp] or 0 for tp in self._assigned)
        bound = self.settings.consumer.ready_max_lag
        if lag <= bound:
            self.health.set_ready(True, f"{len(self._assigned)} partition(s) assigned, lag {lag}{note}")
        else:
            self.health.set_ready(False, f"catching up: lag {lag} > {bound}{note}")


class _Joins:
    """The label joins of every owned partition, as pacing sees them."""

    def __init__(self, owned: dict[int, PartitionState]) -> None:
        self._joins = [state.pipeline.join for state in owned.values()]

    def unresolved_labels(self) -> int:
        return sum(join.unresolved_labels() for join in self._joins)

    def resolved_by_predictions(self) -> int:
        return sum(join.resolved_by_predictions for join in self._joins)

    def fullest_pending(self) -> int:
        return max((join.fullest_pending() for join in self._joins), default=0)


def log_alert(alert: Any) -> None:
    """One WARNING line per alert produced: who drifted, where, and the alert's id.

    Logged when the alert is produced: after an aborted transaction or a
    restart the same alert (same ``alert_id``) may be produced, and logged, again.
    """
    log.warning("drift alert", extra={
        "alert_id": alert.alert_id, "model": alert.model, "model_version": alert.model_version,
        "signal": alert.signal, "detector": alert.detector, "event_id": alert.event_id,
        "severity": alert.severity})


def _partition_lag(stats: dict[str, Any]) -> int | None:
    """A partition's consumer lag from librdkafka statistics, or None when unknown.

    Against the stored offset first (the committed one trails by a commit
    interval), then the committed offset; a partition with nothing in it has
    no lag whatever was stored.
    """
    for field in ("consumer_lag_stored", "consumer_lag"):
        lag = stats.get(field, -1)
        if lag >= 0:
            return int(lag)
    high, low = stats.get("hi_offset", -1), stats.get("lo_offset", -1)
    if high >= 0 and high == low:
        return 0
    return None


def _runs(messages: list[Message], one_topic: bool = False) -> list[tuple[str, int, list[Message]]]:
    """Consecutive messages of one topic-partition, in order: ``(topic, partition, messages)``.

    ``one_topic``: the consumer reads a single topic (no labels), so messages of one partition are one run.
    """
    if not messages:
        return []
    partitions = list(map(_PARTITION, messages))
    if partitions.count(partitions[0]) == len(partitions):
        if one_topic:
            return [(messages[0].topic(), partitions[0], messages)]
        topics = list(map(_TOPIC, messages))
        if topics.count(topics[0]) == len(topics):  # the usual batch: one run
            return [(topics[0], partitions[0], messages)]
    keys = list(zip(map(_TOPIC, messages), partitions))
    runs = []
    start = 0
    for index in range(1, len(keys) + 1):
        if index == len(keys) or keys[index] != keys[start]:
            runs.append((*keys[start], messages[start:index]))
            start = index
    return runs
