"""One input partition's state as changelog records, and back.

A partition's state is its :class:`~stream_monitor.pipeline.Pipeline`: one
record per (model, model_version) of the monitor (every signal's detectors
and counters), one per model of the label join, one per model with version
comparisons (``c/<model>``; a state written before them has none, and its
models start comparing afresh), and a ``meta`` record with
the input positions the state reflects and the small counters beside the keys.

A snapshot writes only the keys changed since the previous one, each into the
other of its two slots (``<key>#<slot>.<part>``; a big state is split into
parts that fit a Kafka message), and then the ``meta`` record, which names
the slot, snapshot id and part count of every live key. The meta record is
produced only after every key record of the snapshot is delivered, so a crash
part-way through a snapshot leaves the previous meta naming the previous,
complete slots: a restore never mixes two snapshots. Keys evicted since the
previous snapshot, and parts left over from a bigger earlier state, are
removed by tombstones after the meta record.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stream_monitor.pipeline import Pipeline
from stream_monitor.state import codec

__all__ = ["FORMAT_VERSION", "META_KEY", "PART_BYTES", "PartitionStore", "Restored", "StateError",
           "restore_pipeline"]

log = logging.getLogger(__name__)

#: the layout of changelog records; a restore refuses another one
FORMAT_VERSION = 1
META_KEY = b"meta"
#: a key's state is split into parts of at most this many bytes (Kafka's default
#: message limit is 1 MB)
PART_BYTES = 512 * 1024

#: a record: (key, value); a value of None is a tombstone
Record = tuple[bytes, bytes | None]


class StateError(Exception):
    """A changelog partition that does not hold a state this version can restore."""


def _monitor_key(model: str, model_version: str) -> str:
    return f"m/{model}\x1f{model_version}"


def _join_key(model: str) -> str:
    return f"j/{model}"


def _compare_key(model: str) -> str:
    return f"c/{model}"


def _part_key(key: str, slot: int, part: int) -> bytes:
    return f"{key}#{slot}.{part}".encode()


@dataclass
class PartitionStore:
    """The snapshot bookkeeping of one input partition: which slot holds each key's state."""

    partition: int
    #: the last snapshot written (0: none yet)
    snapshot_id: int = 0
    #: key -> (slot, snapshot id, parts) as named by the last meta record
    slots: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    #: parts each (key, slot) holds on the topic, so leftovers get tombstones
    parts: dict[tuple[str, int], int] = field(default_factory=dict)
    #: bytes of the records produced by the last snapshot
    last_bytes: int = 0

    def snapshot(self, pipeline: Pipeline, positions: dict[str, int],
                 topics: dict[str, str]) -> tuple[list[Record], list[Record]]:
        """The records of a new snapshot: (key records, then meta and tombstones).

        The first list must be delivered before the second is produced.
        ``positions`` are the next input offsets per topic kind that the state
        reflects.
        """
        monitor, join = pipeline.monitor, pipeline.join
        monitor_dirty, monitor_evicted = monitor.take_changes()
        join_dirty, join_evicted = join.take_changes()
        compare_dirty, compare_removed = monitor.comparison_changes()
        self.snapshot_id += 1
        sid = self.snapshot_id
        keys: list[Record] = []
        stale: list[Record] = []
        changed = [(_monitor_key(*key), lambda key=key: monitor.version_state(key))
                   for key in sorted(monitor_dirty)]
        changed += [(_join_key(model), lambda model=model: join.model_state(model))
                    for model in sorted(join_dirty)]
        changed += [(_compare_key(model), lambda model=model: monitor.comparison_state(model))
                    for model in sorted(compare_dirty)]
        for key, state_of in changed:
            blob = codec.encode(state_of())
            parts = [blob[i:i + PART_BYTES] for i in range(0, len(blob), PART_BYTES)] or [b""]
            old = self.slots.get(key)
            slot = 0 if old is None else 1 - old[0]
            for number, chunk in enumerate(parts):
                keys.append((_part_key(key, slot, number),
                             codec.encode([FORMAT_VERSION, sid, number, len(parts), chunk])))
            previous_in_slot = self.parts.get((key, slot), 0)
            stale += [(_part_key(key, slot, n), None) for n in range(len(parts), previous_in_slot)]
            self.parts[(key, slot)] = len(parts)
            self.slots[key] = (slot, sid, len(parts))
        gone = [_monitor_key(*key) for key in monitor_evicted] + [_join_key(m) for m in join_evicted]
        gone += [_compare_key(model) for model in compare_removed]
        for key in gone:
            if self.slots.pop(key, None) is None:
                continue
            for slot in (0, 1):
                stale += [(_part_key(key, slot, n), None)
                          for n in range(self.parts.pop((key, slot), 0))]
        meta = {
            "format": FORMAT_VERSION, "snapshot_id": sid, "partition": self.partition,
            "positions": dict(positions), "topics": dict(topics),
            "monitor": monitor.meta_state(), "join": join.meta_state(),
            "keys": {key: list(entry) for key, entry in self.slots.items()},
        }
        tail = [(META_KEY, codec.encode(meta)), *stale]
        self.last_bytes = sum(len(k) + len(v or b"") for k, v in (*keys, *tail))
        return keys, tail


@dataclass
class Restored:
    """What a restore found: the positions the state reflects, or nothing (a fresh start)."""

    store: PartitionStore
    positions: dict[str, int] = field(default_factory=dict)
    keys: int = 0
    bytes_read: int = 0


def restore_pipeline(pipeline: Pipeline, partition: int, records: Iterable[Record],
                     topics: dict[str, str]) -> Restored:
    """Load a partition's latest complete snapshot into a fresh ``pipeline``.

    ``records`` are the changelog partition's records in offset order (a
    compacted topic may have dropped older values of a key; tombstones delete).
    With no meta record the pipeline stays fresh. Raises :class:`StateError`
    when the meta record names parts that are missing or of another snapshot,
    or the input topics changed (the positions would mean nothing).
    """
    latest: dict[bytes, bytes] = {}
    size = 0
    for key, value in records:
        if value is None:
            latest.pop(key, None)
        else:
            latest[key] = value
            size += len(key) + len(value)
    store = PartitionStore(partition)
    raw_meta = latest.get(META_KEY)
    if raw_meta is None:
        return Restored(store, bytes_read=size)
    meta = codec.decode(raw_meta)
    if meta.get("format") != FORMAT_VERSION:
        raise StateError(f"state format {meta.get('format')!r}, this version reads {FORMAT_VERSION}")
    if meta["topics"] != topics:
        raise StateError(f"the state was taken reading the topics {meta['topics']}, now {topics}")
    states: list[tuple[str, Any]] = []
    for key, (slot, sid, parts) in meta["keys"].items():
        chunks = []
        for number in range(parts):
            raw = latest.get(_part_key(key, slot, number))
            if raw is None:
                raise StateError(f"state of {key!r}: part {number} of {parts} is missing")
            fmt, part_sid, part_number, part_count, chunk = codec.decode(raw)
            if (fmt, part_sid, part_number, part_count) != (FORMAT_VERSION, sid, number, parts):
                raise StateError(f"state of {key!r}: part {number} is of snapshot {part_sid}, "
                                 f"the meta record names snapshot {sid}")
            chunks.append(chunk)
        states.append((key, codec.decode(b"".join(chunks))))
    pipeline.monitor.load_meta_state(meta["monitor"])
    pipeline.join.load_meta_state(meta["join"])
    for key, state in states:
        if key.startswith("m/"):
            pipeline.monitor.load_version_state(state)
        elif key.startswith("j/"):
            pipeline.join.load_model_state(state)
    # comparisons after the versions they compare
    for key, state in states:
        if key.startswith("c/"):
            pipeline.monitor.load_comparison_state(state)
    pipeline.monitor.restored_comparisons()
    # what was just loaded is not a change to write again
    pipeline.monitor.take_changes()
    pipeline.monitor.comparison_changes()
    pipeline.join.take_changes()
    store.snapshot_id = int(meta["snapshot_id"])
    store.slots = {key: (int(s), int(i), int(p)) for key, (s, i, p) in meta["keys"].items()}
    for record_key in latest:
        # every part on the topic, named or left over, so a later snapshot can remove leftovers
        name, _, place = record_key.decode(errors="replace").rpartition("#")
        slot, _, number = place.partition(".")
        if name and slot in ("0", "1") and number.isdigit():
            store.parts[(name, int(slot))] = max(store.parts.get((name, int(slot)), 0), int(number) + 1)
    positions = {str(k): int(v) for k, v in meta["positions"].items()}
    return Restored(store, positions, len(states), size)
