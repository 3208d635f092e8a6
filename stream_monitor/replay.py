"""File replay: the same decode -> route -> detect path as ``run``, over JSON lines.

The input file is read as one ordered stream (like one partition, numbered
0). Bad lines are counted by reason and reported, never fatal.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from stream_monitor.config import Settings
from stream_monitor.errors import BadMessage
from stream_monitor.events import Limits, decode_prediction
from stream_monitor.metrics import Metrics
from stream_monitor.monitor import Monitor, Record

__all__ = ["ReplaySummary", "replay"]


@dataclass
class ReplaySummary:
    lines: int = 0
    events: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    alerts: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def render(self) -> str:
        lines = [f"replay: {self.lines} lines, {self.events} events, "
                 f"{sum(self.rejected.values())} rejected, {sum(self.alerts.values())} alerts"]
        for reason, count in sorted(self.rejected.items()):
            lines.append(f"  rejected {reason}: {count}")
        for (model, signal, detector), count in sorted(self.alerts.items()):
            lines.append(f"  alerts {model} {signal} {detector}: {count}")
        return "\n".join(lines)


def replay(settings: Settings, events_path: Path, alerts_out: BinaryIO,
           metrics: Metrics | None = None) -> ReplaySummary:
    """Run the monitor over a JSON-lines file of prediction events; write alerts as JSON lines."""
    limits = Limits(settings.limits.max_message_bytes, settings.limits.max_string_length,
                    settings.limits.max_features)
    allowed = set(settings.allowed_models) if settings.allowed_models is not None else None
    monitor = Monitor(settings, metrics)
    summary = ReplaySummary()
    batch_size = settings.consumer.batch_size
    batch: list[Record] = []

    def flush() -> None:
        for alert in monitor.process(batch):
            alerts_out.write(alert.to_json() + b"\n")
            summary.alerts[(alert.model, alert.signal, alert.detector)] += 1
        batch.clear()

    with open(events_path, "rb") as handle:
        for line in handle:
            summary.lines += 1
            raw = line.rstrip(b"\r\n")
            try:
                event = decode_prediction(raw, limits)
                if allowed is not None and event.model not in allowed:
                    raise BadMessage("unknown_model", f"model {event.model!r} is not allowed", raw)
            except BadMessage as bad:
                summary.rejected[bad.reason] += 1
                continue
            summary.events += 1
            batch.append(Record(event, 0, None))
            if len(batch) >= batch_size:
                flush()
    flush()
    return summary
