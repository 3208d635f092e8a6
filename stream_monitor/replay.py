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
reported, never fatal: the summary keeps the first few line numbers of each
reason, and ``rejected_out`` gets every rejected line (file, line number,
reason, the raw line) as JSON lines. A ``progress`` callback hears the bytes
read; a ``trace`` records each detector's statistic for the backtest report
(:mod:`stream_monitor.backtest`).
"""

from __future__ import annotations

import base64
import heapq
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from stream_monitor.alerts import Alert
from stream_monitor.config import Settings
from stream_monitor.errors import BadMessage
from stream_monitor.events import PredictionEvent
from stream_monitor.events.batch import ColumnBlock, MixedBlock, PredictionBlock, block_counts
from stream_monitor.join import EventClock
from stream_monitor.metrics import Metrics
from stream_monitor.monitor import Record, RecordBlock
from stream_monitor.pipeline import Decoder, LabelRecord, Pipeline

if TYPE_CHECKING:
    from stream_monitor.backtest.trace import StatisticTrace

__all__ = ["RejectedLine", "ReplaySummary", "replay"]

#: rejected lines kept per reason in the summary (``rejected_out`` gets them all)
EXAMPLES_PER_REASON = 5
#: characters of a rejected line kept in the summary's examples
EXAMPLE_CHARS = 300


@dataclass(frozen=True, slots=True)
class RejectedLine:
    """One line that could not be used: where it is, why, and (the start of) what it says."""

    file: str
    line: int
    reason: str
    detail: str
    raw: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "reason": self.reason, "detail": self.detail,
                "raw": self.raw}


def _raw_fields(raw: bytes | None) -> dict[str, str]:
    """The raw line as JSON can carry it: text when it is UTF-8, else base64 (nothing is lost)."""
    if raw is None:
        return {"raw": ""}
    try:
        return {"raw": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"raw": raw.decode("utf-8", "replace"), "raw_base64": base64.b64encode(raw).decode("ascii")}


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
    #: prediction events per (model, model_version)
    events_by_model: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: the first :data:`EXAMPLES_PER_REASON` rejected lines of each reason
    rejected_lines: dict[str, list[RejectedLine]] = field(default_factory=dict)
    #: values not fed to a detector, per (model, reason): ``missing`` (null), ``kind_mismatch``,
    #: ``signal_cap`` (a signal beyond limits.max_signals_per_model), ``model_cap`` (events)
    skipped: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: wall-clock seconds the replay took (for events/s; detection never reads the clock); not
    #: compared, so two replays of the same input have equal summaries
    seconds: float = field(default=0.0, compare=False)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def reject(self, path: Path, line: int, bad: BadMessage, out: BinaryIO | None) -> None:
        """Count one rejected line (1-based ``line`` of ``path``), keep it as an example, write it out."""
        reason = bad.reason
        self.rejected[reason] += 1
        examples = self.rejected_lines.setdefault(reason, [])
        fields = None
        if len(examples) < EXAMPLES_PER_REASON:
            fields = _raw_fields(bad.raw)
            examples.append(RejectedLine(str(path), line, reason, bad.detail, fields["raw"][:EXAMPLE_CHARS]))
        if out is not None:
            fields = fields or _raw_fields(bad.raw)
            out.write(orjson.dumps({"file": str(path), "line": line, "reason": reason, "detail": bad.detail,
                                    **fields}) + b"\n")

    def where(self, reason: str) -> str:
        """Where the first rejected lines of ``reason`` are, e.g. ``events.jsonl lines 3, 9, ...``."""
        examples = self.rejected_lines.get(reason, [])
        files: dict[str, list[str]] = {}
        for example in examples:
            files.setdefault(example.file, []).append(str(example.line))
        more = ", ..." if self.rejected[reason] > len(examples) else ""
        return "; ".join(f"{file} line{'s' if len(numbers) > 1 or more else ''} {', '.join(numbers)}"
                         for file, numbers in files.items()) + more

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain data (``replay --summary-json``)."""
        return {
            "lines": self.lines, "events": self.events, "labels": self.labels,
            "seconds": round(self.seconds, 3), "events_per_second": round(self.events_per_second, 1),
            "events_by_model": [{"model": model, "model_version": version, "events": count}
                                for (model, version), count in sorted(self.events_by_model.items())],
            "rejected": {reason: {"count": count,
                                  "lines": [example.line for example in self.rejected_lines.get(reason, [])],
                                  "examples": [example.to_dict()
                                               for example in self.rejected_lines.get(reason, [])]}
                         for reason, count in sorted(self.rejected.items())},
            "skipped": [{"model": model, "reason": reason, "values": count}
                        for (model, reason), count in sorted(self.skipped.items())],
            "event_times_clamped": dict(sorted(self.clamped.items())),
            "label_outcomes": dict(sorted(self.label_outcomes.items())),
            "alerts": [{"model": model, "signal": signal, "detector": detector, "alerts": count}
                       for (model, signal, detector), count in sorted(self.alerts.items())],
        }

    def render(self) -> str:
        lines = [f"replay: {self.lines} lines, {self.events} events, {self.labels} labels, "
                 f"{sum(self.rejected.values())} rejected, {sum(self.alerts.values())} alerts"]
        if self.seconds > 0:
            lines.append(f"  {self.seconds:.2f} s, {self.events_per_second:,.0f} events/s")
        for (model, version), count in sorted(self.events_by_model.items()):
            lines.append(f"  events {model}@{version}: {count}")
        for reason, count in sorted(self.rejected.items()):
            lines.append(f"  rejected {reason}: {count} ({self.where(reason)})")
        for (model, reason), count in sorted(self.skipped.items()):
            lines.append(f"  values skipped {model} {reason}: {count}")
        for topic_kind, count in sorted(self.clamped.items()):
            lines.append(f"  event times clamped {topic_kind}: {count}")
        for outcome, count in sorted(self.label_outcomes.items()):
            lines.append(f"  labels {outcome}: {count}")
        for (model, signal, detector), count in sorted(self.alerts.items()):
            lines.append(f"  alerts {model} {signal} {detector}: {count}")
        return "\n".join(lines)


def _read(path: Path, kind: int, pipeline: Pipeline, summary: ReplaySummary, rejected_out: BinaryIO | None,
          progress: Callable[[int], None] | None) -> Iterator[tuple[float, int, int, Record | LabelRecord]]:
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
            if progress is not None:
                progress(sum(map(len, lines)))
            raws = [line.rstrip(b"\r\n") for line in lines]
            decoded = decoder.predictions(raws) if kind == 0 else decoder.labels(raws)
            for outcome in decoded:
                number += 1
                if isinstance(outcome, BadMessage):
                    summary.reject(path, number + 1, outcome, rejected_out)
                    continue
                item: Record | LabelRecord
                if kind == 0:
                    ts, item = outcome.ts, Record(outcome, 0, None)  # type: ignore[arg-type]
                    summary.events += 1
                    summary.events_by_model[(outcome.model, outcome.model_version)] += 1  # type: ignore[union-attr]
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
                      process: Callable[[Sequence[Record | RecordBlock]], None],
                      rejected_out: BinaryIO | None = None, progress: Callable[[int], None] | None = None,
                      ) -> None:
    """Predictions without labels, a chunk of lines at a time: its spans of the usual schema as
    blocks (no event object per line), the other lines one by one, in batches, as :func:`_read`
    takes them."""
    settings = pipeline.settings
    decoder = Decoder(settings)
    clock = EventClock(settings.limits.max_event_time_skew_s)
    chunk = max(1, settings.consumer.batch_size)
    pending: list[Record] = []
    first_line = 1
    with open(path, "rb") as handle:
        for raws in _chunks(handle, chunk):
            summary.lines += len(raws)
            if progress is not None:
                progress(sum(map(len, raws)) + len(raws))
            for start, stop, block in decoder.spans(raws, pipeline.block_schema(), pipeline.schema_of):
                if block is not None:
                    if pending:
                        process(pending)
                        pending = []
                    for hole in block.holes:  # a rejected line the block leaves out
                        _records(decoder.predictions([raws[start + hole]]), pipeline, clock, summary, [], chunk,
                                 process, path, first_line + start + hole, rejected_out)
                    _block_pieces(block, start, first_line, pipeline, clock, summary, chunk, process, path,
                                  rejected_out)
                else:
                    pending = _records(decoder.predictions(raws[start:stop]), pipeline, clock, summary,
                                       pending, chunk, process, path, first_line + start, rejected_out)
            first_line += len(raws)
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


def _block_pieces(block: PredictionBlock | ColumnBlock | MixedBlock, start: int, first_line: int, pipeline: Pipeline,
                  clock: EventClock, summary: ReplaySummary, chunk: int,
                  process: Callable[[Sequence[Record | RecordBlock]], None], path: Path,
                  rejected_out: BinaryIO | None) -> None:
    """A block (its lines from ``start`` of the chunk that begins at line ``first_line``) processed in
    pieces the clock takes at once; a line whose time the clock clamps goes on its own between them."""
    times = block.times()
    done = 0
    while done < len(block):
        taken = clock.observe_prefix(times[done:])
        if taken:
            piece = block if taken == len(block) else block.part(done, done + taken)
            summary.events += taken
            for key, count in block_counts(piece):
                summary.events_by_model[key] += count
            process([RecordBlock(piece)])
            done += taken
        if done < len(block):
            left_out = set(block.holes)
            lines = [index for index in range(start, start + len(block) + len(left_out))
                     if index - start not in left_out]
            pending = _records([block.event(done)], pipeline, clock, summary, [], chunk, process, path,
                               first_line + lines[done], rejected_out)
            process(pending)
            done += 1


def _records(outcomes: list[PredictionEvent | BadMessage], pipeline: Pipeline, clock: EventClock,
             summary: ReplaySummary, pending: list[Record], chunk: int,
             process: Callable[[Sequence[Record | RecordBlock]], None], path: Path, first_line: int,
             rejected_out: BinaryIO | None) -> list[Record]:
    """Decoded lines (the first is line ``first_line`` of ``path``) as records, processed in batches
    of ``chunk``; returns the records still pending."""
    for number, outcome in enumerate(outcomes, first_line):
        if isinstance(outcome, BadMessage):
            summary.reject(path, number, outcome, rejected_out)
            continue
        summary.events += 1
        summary.events_by_model[(outcome.model, outcome.model_version)] += 1
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
           metrics: Metrics | None = None, labels_path: Path | None = None, *,
           rejected_out: BinaryIO | None = None, progress: Callable[[int], None] | None = None,
           trace: StatisticTrace | None = None, summary: ReplaySummary | None = None) -> ReplaySummary:
    """Run the monitor over JSON-lines files; write alerts as JSON lines.

    ``rejected_out`` gets one JSON line per rejected line; ``progress`` is called
    with the bytes read as the files are read; ``trace`` records every detector's
    statistic and threshold over the event index, and the alerts (for the report).
    None of them changes the alerts. The counts go into ``summary`` (a new one by
    default), which is returned.
    """
    started = time.perf_counter()
    pipeline = Pipeline(settings, metrics, join_labels=labels_path is not None)
    pipeline.monitor.trace = trace
    pipeline.monitor.skipped = Counter()
    summary = ReplaySummary() if summary is None else summary
    batch_size = settings.consumer.batch_size
    batch: list[Record | LabelRecord] = []
    alerts: list[Alert] | None = None if trace is None else trace.alerts

    def emit(items: Sequence[Record | LabelRecord | RecordBlock]) -> None:
        for alert in pipeline.process(items):
            alerts_out.write(alert.to_json() + b"\n")
            summary.alerts[(alert.model, alert.signal, alert.detector)] += 1
            if alerts is not None:
                alerts.append(alert)

    def flush() -> None:
        emit(batch)
        batch.clear()

    if labels_path is None:
        _predictions_only(events_path, pipeline, summary, emit, rejected_out, progress)
    else:
        streams = [_read(events_path, 0, pipeline, summary, rejected_out, progress),
                   _read(labels_path, 1, pipeline, summary, rejected_out, progress)]
        for _, _, _, item in heapq.merge(*streams, key=lambda entry: entry[:3]):
            batch.append(item)
            if len(batch) >= batch_size:
                flush()
        flush()
    summary.label_outcomes.update(pipeline.join.totals)
    summary.skipped.update(pipeline.monitor.skipped or {})
    summary.seconds = time.perf_counter() - started
    return summary
