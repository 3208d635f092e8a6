"""File replay: the same decode -> route -> detect path as ``run``, over JSON lines.

The events file is read as one ordered stream (like one partition, numbered
0). With a labels file, the two are merged by event time (each file is taken
to be in event-time order, as a log is; a line without ``ts`` keeps the time
of the line before it; on a tie the prediction comes first), then go through
the same label join as in ``run``. There is no Kafka message time to check a
``ts`` against, so each file keeps a robust clock
(:class:`~stream_monitor.join.EventClock`): a ``ts`` more than
``limits.max_event_time_skew_s`` ahead of it takes the clock's time (counted
in ``event_time_clamped_total``), so one bad line never reorders the merge or
moves the join's clock. Bad lines are counted by reason and
reported, never fatal.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from stream_monitor.config import Settings
from stream_monitor.errors import BadMessage
from stream_monitor.events import PredictionEvent
from stream_monitor.join import EventClock
from stream_monitor.metrics import Metrics
from stream_monitor.monitor import Record, RecordBlock
from stream_monitor.pipeline import Decoder, LabelRecord, Pipeline

__all__ = ["ReplaySummary", "replay"]


@dataclass
class ReplaySummary:
    lines: int = 0
    events: int = 0
    labels: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    alerts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    label_outcomes: Counter[str] = field(default_factory=Counter)
    #: event times clamped to the file's clock, per topic kind
    clamped: Counter[str] = field(default_factory=Counter)

    def render(self) -> str:
        lines = [f"replay: {self.lines} lines, {self.events} events, {self.labels} labels, "
                 f"{sum(self.rejected.values())} rejected, {sum(self.alerts.values())} alerts"]
        for reason, count in sorted(self.rejected.items()):
            lines.append(f"  rejected {reason}: {count}")
        for topic_kind, count in sorted(self.clamped.items()):
            lines.append(f"  event times clamped {topic_kind}: {count}")
        for outcome, count in sorted(self.label_outcomes.items()):
            lines.append(f"  labels {outcome}: {count}")
        for (model, signal, detector), count in sorted(self.alerts.items()):
            lines.append(f"  alerts {model} {signal} {detector}: {count}")
        return "\n".join(lines)


def _read(path: Path, kind: int, pipeline: Pipeline, summary: ReplaySummary,
          ) -> Iterator[tuple[float, int, int, Record | LabelRecord]]:
    settings = pipeline.settings
    decoder = Decoder(settings)
    clock = EventClock(settings.limits.max_event_time_skew_s)
    topic_kind = "predictions" if kind == 0 else "labels"
    last_ts = float("-inf")
    chunk = max(1, settings.consumer.batch_size)
    with open(path, "rb") as handle:
        number = -1
        for lines in iter(lambda: list(itertools.islice(handle, chunk)), []):
            summary.lines += len(lines)
            raws = [line.rstrip(b"\r\n") for line in lines]
            decoded = decoder.predictions(raws) if kind == 0 else decoder.labels(raws)
            for outcome in decoded:
                number += 1
                if isinstance(outcome, BadMessage):
                    summary.rejected[outcome.reason] += 1
                    continue
                item: Record | LabelRecord
                if kind == 0:
                    ts, item = outcome.ts, Record(outcome, 0, None)  # type: ignore[arg-type]
                    summary.events += 1
                else:
                    ts, item = outcome.ts, LabelRecord(outcome, 0, None)  # type: ignore[arg-type]
                    summary.labels += 1
                if ts is not None:
                    used, clamped = clock.observe(ts)
                    if clamped:
                        summary.clamped[topic_kind] += 1
                        pipeline.count_clamped(topic_kind, ts, used)
                        outcome.ts = used
                    last_ts = used
                yield last_ts, kind, number, item


def _predictions_only(path: Path, pipeline: Pipeline, summary: ReplaySummary,
                      process: Callable[[Sequence[Record | RecordBlock]], None]) -> None:
    """Predictions without labels, a chunk of lines at a time: its spans of the usual schema as
    blocks (no event object per line), the other lines one by one, in batches, as :func:`_read`
    takes them."""
    settings = pipeline.settings
    decoder = Decoder(settings)
    clock = EventClock(settings.limits.max_event_time_skew_s)
    chunk = max(1, settings.consumer.batch_size)
    pending: list[Record] = []
    with open(path, "rb") as handle:
        for raws in _chunks(handle, chunk):
            summary.lines += len(raws)
            for start, stop, block in decoder.spans(raws, pipeline.block_schema()):
                if block is not None and clock.observe_all(block.times()):
                    if pending:
                        process(pending)
                        pending = []
                    summary.events += len(block)
                    process([RecordBlock(block)])
                else:
                    pending = _records(decoder.predictions(raws[start:stop]), pipeline, clock, summary,
                                       pending, chunk, process)
    if pending:
        process(pending)


#: bytes read from a file at a time (lines are cut out of them in C)
_READ_BYTES = 1 << 22


def _chunks(handle: BinaryIO, size: int) -> Iterator[list[bytes]]:
    """The file's lines without their line ends, ``size`` at a time (the last chunk may be shorter).

    The same lines as iterating over the file and stripping ``\\r\\n`` from
    each, cut from large reads instead of one call per line.

    >>> import io
    >>> list(_chunks(io.BytesIO(b"a\\r\\nb\\n\\nc"), 2))
    [[b'a', b'b'], [b'', b'c']]
    """
    lines: list[bytes] = []
    rest = b""
    while True:
        data = handle.read(_READ_BYTES)
        if not data:
            break
        data = rest + data
        cut = data.split(b"\n")
        rest = cut.pop()
        if b"\r" in data:
            cut = [line.rstrip(b"\r\n") for line in cut]
        lines.extend(cut)
        while len(lines) >= size:
            yield lines[:size]
            del lines[:size]
    if rest:
        lines.append(rest.rstrip(b"\r\n"))
    while lines:
        yield lines[:size]
        del lines[:size]


def _records(outcomes: list[PredictionEvent | BadMessage], pipeline: Pipeline, clock: EventClock,
             summary: ReplaySummary, pending: list[Record], chunk: int,
             process: Callable[[Sequence[Record | RecordBlock]], None]) -> list[Record]:
    """Decoded lines as records, processed in batches of ``chunk``; returns the records still pending."""
    for outcome in outcomes:
        if isinstance(outcome, BadMessage):
            summary.rejected[outcome.reason] += 1
            continue
        summary.events += 1
        if outcome.ts is not None:
            used, clamped = clock.observe(outcome.ts)
            if clamped:
                summary.clamped["predictions"] += 1
                pipeline.count_clamped("predictions", outcome.ts, used)
                outcome.ts = used
        pending.append(Record(outcome, 0, None))
        if len(pending) >= chunk:
            process(pending)
            pending = []
    return pending


def replay(settings: Settings, events_path: Path, alerts_out: BinaryIO,
           metrics: Metrics | None = None, labels_path: Path | None = None) -> ReplaySummary:
    """Run the monitor over JSON-lines files; write alerts as JSON lines."""
    pipeline = Pipeline(settings, metrics, join_labels=labels_path is not None)
    summary = ReplaySummary()
    batch_size = settings.consumer.batch_size
    batch: list[Record | LabelRecord] = []

    def emit(items: Sequence[Record | LabelRecord | RecordBlock]) -> None:
        for alert in pipeline.process(items):
            alerts_out.write(alert.to_json() + b"\n")
            summary.alerts[(alert.model, alert.signal, alert.detector)] += 1

    def flush() -> None:
        emit(batch)
        batch.clear()

    if labels_path is None:
        _predictions_only(events_path, pipeline, summary, emit)
        summary.label_outcomes.update(pipeline.join.totals)
        return summary
    streams = [_read(events_path, 0, pipeline, summary), _read(labels_path, 1, pipeline, summary)]
    for _, _, _, item in heapq.merge(*streams, key=lambda entry: entry[:3]):
        batch.append(item)
        if len(batch) >= batch_size:
            flush()
    flush()
    summary.label_outcomes.update(pipeline.join.totals)
    return summary
