"""Decoded predictions and labels in, alerts out: the path ``run`` and ``replay`` share.

A batch holds predictions and labels in arrival order. Predictions feed the
feature and prediction detectors (:class:`~stream_monitor.monitor.Monitor`)
and wait in the label join; joined pairs feed the performance signals.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stream_monitor.alerts import Alert
import numpy as np

from stream_monitor.config import Settings
from stream_monitor.errors import BadMessage
from stream_monitor.events import LabelEvent, Limits, PredictionEvent, decode_label, decode_prediction
from stream_monitor.events.batch import (BatchDecoder, BlockDecoder, BlockSchema, ColumnBlock, LabelBatchDecoder,
                                         MixedBlock, PredictionBlock)
from stream_monitor.join import JoinLimits, LabelJoin, Pair
from stream_monitor.logs import RateLimitedLog
from stream_monitor.metrics import Metrics
from stream_monitor.monitor import Monitor, Record, RecordBlock

__all__ = ["Decoder", "LabelRecord", "Pipeline"]

log = logging.getLogger(__name__)

#: joined values over which the current error rate / mean error gauge is computed
PERFORMANCE_WINDOW = 1000


class Decoder:
    """Message bytes to events under the settings' limits and model allowlist.

    Raises :class:`~stream_monitor.errors.BadMessage` for anything unusable.
    """

    def __init__(self, settings: Settings) -> None:
        limits = settings.limits
        self.limits = Limits(limits.max_message_bytes, limits.max_string_length, limits.max_features,
                             settings.input.strict)
        self.allowed = frozenset(settings.allowed_models) if settings.allowed_models is not None else None
        self._batch = BatchDecoder(self.limits, self.prediction, self.allowed)
        self._label_batch = LabelBatchDecoder(self.limits, self.label)
        self._block = BlockDecoder(self.limits, self.prediction, self.allowed)

    def block(self, raws: Sequence[bytes | None], schema: BlockSchema | None) -> PredictionBlock | ColumnBlock | None:
        """The batch as one block of ``schema`` (see :class:`BlockDecoder`), or None: decode it with
        :meth:`predictions` instead."""
        return None if schema is None else self._block.block(raws, schema)

    def spans(self, raws: Sequence[bytes | None], schema: BlockSchema | None,
              schema_of: Callable[[str, str], BlockSchema | None] | None = None,
              ) -> list[tuple[int, int, PredictionBlock | ColumnBlock | MixedBlock | None]]:
        """The batch cut into ``(start, stop, block)`` spans (see :meth:`BlockDecoder.spans`: messages
        of ``schema`` first, then of the schemas ``schema_of`` gives for the other (model, version)s);
        a span without a block is to be decoded with :meth:`predictions`."""
        if schema is None:
            return [(0, len(raws), None)]
        return self._block.spans(raws, schema, schema_of=schema_of)

    def predictions(self, raws: Sequence[bytes | None]) -> list[PredictionEvent | BadMessage]:
        """Decode a batch: one event or one :class:`BadMessage` per message, as :meth:`prediction` gives."""
        return self._batch.predictions(raws)

    def prediction(self, raw: bytes | None) -> PredictionEvent:
        event = decode_prediction(raw, self.limits)
        if self.allowed is not None and event.model not in self.allowed:
            raise BadMessage("unknown_model", f"model {event.model!r} is not in allowed_models", raw)
        return event

    def labels(self, raws: Sequence[bytes | None]) -> list[LabelEvent | BadMessage]:
        """Decode a batch of labels: one label event or one :class:`BadMessage` each, as :meth:`label` gives."""
        return self._label_batch.labels(raws)

    def label(self, raw: bytes | None) -> LabelEvent:
        return decode_label(raw, self.limits)


@dataclass(slots=True)
class LabelRecord:
    label: LabelEvent
    partition: int = 0
    timestamp: float | None = None
    #: re-read after a restore (see Record.silent)
    silent: bool = False


class Pipeline:
    """One monitor and one label join, fed in arrival order."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None,
                 join_labels: bool = True) -> None:
        self.settings = settings
        #: without labels, predictions need not wait in the join
        self.join_labels = join_labels
        self.metrics = metrics
        self.monitor = Monitor(settings, metrics)
        labels = settings.labels
        self.join = LabelJoin(
            JoinLimits(labels.retention_events, labels.retention_seconds,
                       labels.early_label_events, labels.early_label_seconds,
                       settings.limits.max_event_time_skew_s, labels.max_head_wait_labels,
                       labels.max_waiting_predictions),
            # matching the rules' globs once per model, not once per joined label
            threshold_for=functools.lru_cache(maxsize=1024)(
                lambda model: settings.rule_for(model).classification_threshold),
            max_models=settings.limits.max_models)
        self._windows: dict[tuple[str, str, str], deque[float]] = {}
        self._skew = settings.limits.max_event_time_skew_s
        self._warnings = RateLimitedLog(log)

    def clamp_event_time(self, ts: float | None, kafka_ts: float | None, topic_kind: str) -> float | None:
        """``ts``, or the Kafka message time when ``ts`` is more than the allowed skew ahead of it.

        An event cannot be logged before it happened, so a time far ahead of the
        message's is wrong; a time far behind it is plausible (a backfill of old
        events, a logger that caught up) and is kept. Counted in
        ``event_time_clamped_total{topic_kind}`` and logged (rate-limited).
        """
        if ts is None or kafka_ts is None or ts - kafka_ts <= self._skew:
            return ts
        self.count_clamped(topic_kind, ts, kafka_ts)
        return kafka_ts

    def _check_fields(self, unknown: tuple[str, ...], topic_kind: str) -> None:
        """Count (and log, rate-limited) an event with fields the input contract does not know."""
        if not unknown:
            return
        if self.metrics:
            self.metrics.unknown_fields.labels(topic_kind).inc()
        self._warnings.log(("unknown_field", topic_kind),
                           f"{topic_kind}: unknown top-level field(s) {', '.join(unknown[:5])} "
                           f"ignored (set input.strict to dead-letter such events)",
                           topic_kind=topic_kind, fields=list(unknown[:5]))

    def count_clamped(self, topic_kind: str, ts: float, used: float, count: int = 1) -> None:
        """Count (and log, rate-limited) event times replaced by a plausible one."""
        if self.metrics:
            self.metrics.event_time_clamped.labels(topic_kind).inc(count)
        self._warnings.log(("clamped", topic_kind),
                           f"{topic_kind}: an event ts more than {self._skew:.0f} s ahead of the "
                           f"Kafka or stream time was replaced by it", topic_kind=topic_kind, ts=ts, used=used)

    def block_schema(self) -> BlockSchema | None:
        """The schema the next batch of predictions most likely has, to decode it as one block.

        That of the last (model, version) seen; None while none is monitored.
        """
        last = self.monitor.last_version()
        return None if last is None else self.monitor.block_schema(*last)

    def schema_of(self, model: str, model_version: str) -> BlockSchema | None:
        """The usual schema of a (model, version) (None: none yet), for the messages of a batch not of
        :meth:`block_schema`'s."""
        return self.monitor.block_schema(model, model_version)

    def process(self, items: Sequence[Record | LabelRecord | RecordBlock]) -> list[Alert]:
        """Feed a batch in arrival order; return its alerts.

        Each :class:`RecordBlock` whose event times need no clamping goes to
        the monitor column-wise, and the records between blocks go record by
        record; with labels, the join takes the block's predictions row by
        row from its columns (event id, prediction, times), in arrival order
        with the labels, and no event object is made for them.
        """
        if not any(item.__class__ is RecordBlock for item in items):
            return self._process_records(items)  # type: ignore[arg-type]
        items = [record for item in items for record in (
            item.records() if item.__class__ is RecordBlock and self._needs_clamping(item)  # type: ignore[arg-type]
            else (item,))]  # type: ignore[union-attr]
        if self.join_labels:
            self._check_events(items)  # type: ignore[arg-type]
            return self._process_joined(items)
        # predictions only: blocks and runs of records in turn (the alerts do not depend on the cuts)
        alerts: list[Alert] = []
        pending: list[Record | LabelRecord] = []
        for item in items:
            if item.__class__ is not RecordBlock:
                pending.append(item)  # type: ignore[arg-type]
            else:
                if pending:
                    alerts += self._process_records(pending)
                    pending = []
                self._check_events((item,))  # type: ignore[arg-type]
                alerts += self.monitor.process_block(item)  # type: ignore[arg-type]
        if pending:
            alerts += self._process_records(pending)
        return alerts

    def _needs_clamping(self, records: RecordBlock) -> bool:
        """Whether any event of the block has a ``ts`` beyond the skew ahead of its Kafka time."""
        kafka = records.timestamps
        if kafka is None:
            return False
        times = records.block.times()
        skew = self._skew
        if None in times or None in kafka:
            return any(ts is not None and k is not None and ts - k > skew for ts, k in zip(times, kafka))
        return bool(np.any(np.array(times, dtype=np.float64) - np.array(kafka, dtype=np.float64) > skew))

    def _process_records(self, items: Sequence[Record | LabelRecord]) -> list[Alert]:
        self._check_events(items)
        if not self.join_labels:
            return self.monitor.process(items)  # type: ignore[arg-type]  # predictions only
        return self._process_joined(items)

    def _check_events(self, items: Sequence[Record | LabelRecord | RecordBlock]) -> None:
        """Clamp event times too far ahead of their Kafka time; count and log unknown fields (a block's
        too, message by message: its times need no clamping)."""
        skew = self._skew
        for item in items:
            if item.__class__ is RecordBlock:
                unknown = item.block.unknown_fields()  # type: ignore[union-attr]
                if unknown is not None:
                    for fields in unknown:
                        if fields:
                            self._check_fields(fields, "predictions")
                continue
            event = item.event if item.__class__ is Record else item.label  # type: ignore[union-attr]
            ts, kafka_ts = event.ts, item.timestamp
            topic_kind = "predictions" if item.__class__ is Record else "labels"
            # the usual event is within the skew and has no unknown field: no call for it
            if ts is not None and kafka_ts is not None and ts - kafka_ts > skew:
                event.ts = self.clamp_event_time(ts, kafka_ts, topic_kind)
            if event.unknown_fields:
                self._check_fields(event.unknown_fields, topic_kind)

    def _process_joined(self, items: Sequence[Record | LabelRecord | RecordBlock]) -> list[Alert]:
        """A checked batch with labels: the join takes every prediction and label in arrival order,
        the monitor the blocks column-wise and the records between them in turn; then the joined
        pairs' alerts and the join's counts."""
        join = self.join
        alerts: list[Alert] = []
        pending: list[Record] = []
        for item in items:
            if item.__class__ is RecordBlock:
                self._join_block(item)  # type: ignore[arg-type]
                if pending:
                    alerts += self.monitor.process(pending)
                    pending = []
                alerts += self.monitor.process_block(item)  # type: ignore[arg-type]
            elif item.__class__ is Record:
                pending.append(item)  # type: ignore[arg-type]
                join.add_prediction(item.event, item.partition, item.timestamp, item.silent)  # type: ignore[union-attr]
            else:
                join.add_label(item.label, item.partition, item.timestamp, item.silent)  # type: ignore[union-attr]
        if pending:
            alerts += self.monitor.process(pending)
        pairs = join.drain()
        if pairs:
            alerts.extend(self._performance(pairs))
        for topic_kind, count in join.take_clamped().items():
            self.count_clamped(topic_kind, float("nan"), float("nan"), count)
        for reason, count in join.take_dropped().items():
            if self.metrics:
                self.metrics.join_dropped.labels(reason).inc(count)
            self._warnings.log(("join_dropped", reason),
                               f"label join: {count} waiting prediction(s) expired early, more than "
                               f"labels.max_waiting_predictions wait over all models", reason=reason)
        if self.metrics:
            self._export_join_metrics(pairs)
        return alerts

    def _join_block(self, records: RecordBlock) -> None:
        """The block's predictions to the join, row by row from its columns (as their records would)."""
        block = records.block
        add = self.join.add_prediction_fields
        partition, quiet = records.partition, records.quiet
        kafka = records.timestamps or itertools.repeat(None)
        if block.__class__ is MixedBlock:
            # several (model, version)s: their predictions in the block's order, as the records'
            parts = block.parts  # type: ignore[union-attr]
            if all(part.schema.prediction == "absent" for part, _ in parts):
                return
            if len({part.schema.model for part, _ in parts}) == 1:
                # one model's versions (a canary): its join state takes the rows at once
                self.join.add_prediction_rows(
                    block.event_ids(), parts[0][0].schema.model, [version for _, version in block.versions()],
                    block.predictions(), block.times(), partition, records.timestamps, quiet)
                return
            for index, (event_id, prediction, ts, fallback, (model, version)) in enumerate(
                    zip(block.event_ids(), block.predictions(), block.times(), kafka,
                        block.versions())):  # type: ignore[union-attr]
                if prediction is not None:
                    add(event_id, model, version, prediction, ts, partition, fallback, index < quiet)
            return
        schema = block.schema
        if schema.prediction == "absent":  # type: ignore[union-attr]
            return  # no message of the block carries a prediction
        self.join.add_prediction_rows(block.event_ids(), schema.model, schema.model_version,  # type: ignore[union-attr]
                                      block.predictions(), block.times(), partition, records.timestamps, quiet)

    def release(self) -> None:
        """Remove every metric series of this pipeline (its partition moved to another member)."""
        self.monitor.release()
        if self.metrics:
            for key in self._windows:
                with contextlib.suppress(KeyError):
                    self.metrics.model_performance.remove(*key)
        self._windows.clear()

    def _performance(self, pairs: list[Pair]) -> list[Alert]:
        groups: dict[tuple[str, str, str], list[tuple[float, Record]]] = {}
        ordered: list[tuple[str, str, str, float, Record]] = []
        for pair in pairs:
            event = PredictionEvent(pair.event_id, pair.model, pair.model_version, pair.label_ts, {}, None)
            record = Record(event, pair.partition, None, pair.silent)
            groups.setdefault((pair.model, pair.model_version, pair.signal), []).append((pair.value, record))
            ordered.append((pair.model, pair.model_version, pair.signal, pair.value, record))
        alerts: list[Alert] = []
        for (model, version, signal), values in groups.items():
            alerts.extend(self.monitor.feed_signal(model, version, signal, values))
        # the version comparison takes the pairs in the join's order, across versions
        alerts.extend(self.monitor.compare_derived(ordered))
        return alerts

    def _export_join_metrics(self, pairs: list[Pair]) -> None:
        metrics = self.metrics
        assert metrics is not None
        known = self.monitor.models()
        outcomes, expired = self.join.take_outcomes()
        for (model, outcome), count in outcomes.items():
            metrics.labels_total.labels(model if model in known else "_unknown", outcome).inc(count)
        for model, count in expired.items():
            metrics.predictions_expired.labels(model if model in known else "_unknown").inc(count)
        touched = set()
        for pair in pairs:
            if pair.label_ts is not None and pair.prediction_ts is not None:
                metrics.label_delay_seconds.observe(max(0.0, pair.label_ts - pair.prediction_ts))
            key = (pair.model, pair.model_version, pair.signal)
            window = self._windows.get(key)
            if window is None:
                if not self.monitor.has_version(pair.model, pair.model_version):
                    continue
                window = self._windows[key] = deque(maxlen=PERFORMANCE_WINDOW)
            window.append(pair.value)
            touched.add(key)
        for key in touched:
            window = self._windows[key]
            metrics.model_performance.labels(*key).set(sum(window) / len(window))
        for key in [k for k in self._windows if not self.monitor.has_version(k[0], k[1])]:
            # the monitor evicted that version: drop its window and its series
            del self._windows[key]
            metrics.model_performance.remove(*key)
        metrics.join_waiting.labels("predictions").set(self.join.pending_predictions())
        metrics.join_waiting.labels("labels").set(self.join.waiting_labels())
