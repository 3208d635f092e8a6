"""Recovery on assignment: restore a partition's state and agree with the committed offsets.

The changelog holds the state as of input positions S (one per input topic);
the group's committed offsets are C. Every input event must affect the
detectors exactly once, across any number of crashes:

- S <= C (snapshots are rarer than commits): read from S, and the messages
  below C are *silent*: they update the detectors and the join as before,
  but their alerts and dead letters went out before the restart and are not
  produced again.
- S > C (the state was written, the commit did not happen): read from S;
  the alerts of everything below S were delivered before the state was.
- No state (a first start, or a changelog that was deleted): a fresh state
  from C, as a monitor without durable state would do. Logged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING

from stream_monitor.config import Settings
from stream_monitor.metrics import Metrics
from stream_monitor.pipeline import Pipeline
from stream_monitor.state.changelog import ChangelogReader
from stream_monitor.state.store import PartitionStore, StateError, restore_pipeline

__all__ = ["PartitionState", "recover"]

log = logging.getLogger(__name__)


@dataclass
class PartitionState:
    """Everything a member keeps for one input partition it owns."""

    number: int
    pipeline: Pipeline
    store: PartitionStore
    #: topic kind -> the offset to start reading at (None: the committed offset)
    start: dict[str, int | None] = field(default_factory=dict)
    #: topic kind -> messages below this offset are silent (see the module docstring)
    silent_until: dict[str, int] = field(default_factory=dict)
    #: topic kind -> the next offset the state reflects (updated per message)
    positions: dict[str, int] = field(default_factory=dict)
    #: input messages since the last snapshot, and when it was taken (monotonic)
    since_snapshot: int = 0
    snapshot_at: float = field(default_factory=time.monotonic)

    def is_silent(self, kind: str, offset: int) -> bool:
        until = self.silent_until.get(kind)
        return until is not None and offset < until


def recover(settings: Settings, metrics: Metrics | None, reader: ChangelogReader, number: int,
            committed: dict[str, int | None], topics: dict[str, str]) -> PartitionState:
    """Restore input partition ``number`` from the changelog and plan where to read from.

    ``committed`` maps topic kind to the group's committed offset (None: none).
    A changelog that cannot be read raises
    :class:`~stream_monitor.state.changelog.ChangelogError` (the service
    stops: a restart tries again). A state that cannot be restored (corrupt,
    another format, other input topics) is logged as an error and counted, and
    the partition starts afresh from its committed offsets.
    """
    started = time.perf_counter()
    pipeline = Pipeline(settings, metrics, join_labels="labels" in topics)
    records = reader.read(number)
    try:
        restored = restore_pipeline(pipeline, number, records, topics)
        outcome = "restored" if restored.positions else "fresh"
    except (StateError, ValueError, KeyError, TypeError) as exc:
        log.error("state of the partition could not be restored: it starts afresh from the committed "
                  "offsets (its detectors learn a new reference)",
                  extra={"partition": number, "topic": reader.topic, "error": str(exc)})
        pipeline = Pipeline(settings, metrics, join_labels="labels" in topics)
        restored = restore_pipeline(pipeline, number, [], topics)
        outcome = "failed"
    state = PartitionState(number, pipeline, restored.store)
    from_start = str(settings.kafka.properties.get("auto.offset.reset", "earliest")).lower() in (
        "earliest", "smallest", "beginning")
    for kind in topics:
        snapshot = restored.positions.get(kind)
        done = committed.get(kind)
        if snapshot is None:
            # a fresh state reflects nothing of this topic before where reading starts
            state.start[kind] = None
            if done is not None:
                state.positions[kind] = done
            elif from_start:
                state.positions[kind] = OFFSET_BEGINNING
            continue
        state.start[kind] = snapshot
        state.positions[kind] = snapshot
        if done is not None and done > snapshot:
            state.silent_until[kind] = done
    seconds = time.perf_counter() - started
    if metrics is not None:
        metrics.state_restore_seconds.observe(seconds)
        metrics.state_restores.labels(outcome).inc()
        metrics.state_keys.labels(str(number)).set(len(restored.store.slots))
    log.info("partition state " + ("restored" if outcome == "restored" else "starts afresh"), extra={
        "partition": number, "outcome": outcome, "keys": restored.keys, "bytes": restored.bytes_read,
        "snapshot_positions": restored.positions, "committed": committed,
        "silent_until": state.silent_until, "seconds": round(seconds, 3)})
    return state
