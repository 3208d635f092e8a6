"""Reference snapshots and the reference parameters a model rule gives its detectors.

A snapshot is a JSON file mapping a signal name to its reference: a list of
numbers for a numeric signal (``"feature:amount": [12.5, 3.0, ...]``) or an
object of category counts for a categorical one
(``"feature:country": {"FR": 120, "DE": 80}``). ``stream-monitor reference``
writes it *stamped*: that mapping under ``signals``, beside its ``id``, the
SHA-256 of the mapping (``content_sha256``) and where it came from (see
:mod:`stream_monitor.snapshot`); a plain mapping is read too.
:func:`load_snapshot` reads and validates one (a stamped snapshot whose content
no longer matches its hash is refused), so a bad snapshot is refused when the
config loads, naming what is wrong, instead of when the first event arrives.

:func:`reference_params` turns a rule's ``reference`` setting into the
parameters of one detector: the snapshot's values or counts (with its id) for
the detectors that take one, and the warm-up size for those that learn their
reference from the stream (also used after a detection, when a detector
re-learns its reference from post-change data).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stream_monitor.detectors.base import Detector

__all__ = ["MAX_SNAPSHOT_VALUES", "SNAPSHOT_FORMAT", "SnapshotError", "WARMUP_BOUNDS", "content_hash",
           "load_snapshot", "reference_params", "snapshot_id"]

#: the ``format`` of a stamped snapshot
SNAPSHOT_FORMAT = "stream-monitor.reference/1"

#: most values a numeric snapshot entry may hold (the KS test's largest reference)
MAX_SNAPSHOT_VALUES = 100_000
#: most counts a categorical snapshot entry may add up to
MAX_SNAPSHOT_COUNT = 1_000_000
#: a rule's ``reference.warmup`` (when not 0) must lie in this range: the sizes
#: every warm-up detector accepts (``ks`` allows at most 100,000; below 500 the
#: calibrated ``page_hinkley`` cannot reach a model's false-alarm target, its
#: reference being too uncertain)
WARMUP_BOUNDS = (500, 100_000)
#: fewest values a numeric snapshot entry must hold: what a warm-up must hold,
#: for the same reason
MIN_SNAPSHOT_VALUES = WARMUP_BOUNDS[0]

Snapshot = dict[str, "list[float] | dict[str, int]"]


class SnapshotError(ValueError):
    """A reference snapshot cannot be read or holds a value of the wrong type."""


def content_hash(signals: Mapping[str, Any]) -> str:
    """The SHA-256 of a snapshot's signals, as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(signals, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _read(path: str | Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise SnapshotError(f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"{path} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def _stamped(path: str | Path, data: dict[str, Any]) -> bool:
    """Whether ``data`` is a stamped snapshot (checked: id, format and content hash)."""
    if "format" not in data:
        return False
    if data["format"] != SNAPSHOT_FORMAT:
        raise SnapshotError(f"{path}: snapshot format {data['format']!r}, this version reads {SNAPSHOT_FORMAT!r}")
    if not isinstance(data.get("id"), str) or not data["id"]:
        raise SnapshotError(f"{path}: a stamped snapshot needs a non-empty 'id'")
    if not isinstance(data.get("signals"), dict):
        raise SnapshotError(f"{path}: 'signals' must be a JSON object of signal name -> reference")
    try:
        digest = content_hash(data["signals"])
    except ValueError as exc:
        raise SnapshotError(f"{path}: {exc}") from None
    if digest != data.get("content_sha256"):
        raise SnapshotError(f"{path}: its signals do not match its content_sha256 (edited after "
                            f"'stream-monitor reference' wrote it?): write it again")
    return True


def load_snapshot(path: str | Path) -> Snapshot:
    """Read and validate a snapshot file; :class:`SnapshotError` says what is wrong."""
    data = _read(path)
    if not isinstance(data, dict):
        raise SnapshotError(f"{path} must hold a JSON object of signal name -> reference, "
                            f"not {type(data).__name__}")
    if _stamped(path, data):
        data = data["signals"]
    if not data:
        raise SnapshotError(f"{path} holds no signal")
    return {str(signal): _check_entry(signal, value) for signal, value in data.items()}


def snapshot_id(path: str | Path) -> str | None:
    """The id a stamped snapshot carries (None for a plain mapping)."""
    data = _read(path)
    return data["id"] if isinstance(data, dict) and _stamped(path, data) else None


def _check_entry(signal: str, value: Any) -> list[float] | dict[str, int]:
    if isinstance(value, list):
        if not MIN_SNAPSHOT_VALUES <= len(value) <= MAX_SNAPSHOT_VALUES:
            raise SnapshotError(f"{signal!r}: a numeric reference needs between {MIN_SNAPSHOT_VALUES} and "
                                f"{MAX_SNAPSHOT_VALUES} values, got {len(value)}")
        for position, number in enumerate(value):
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
                raise SnapshotError(f"{signal!r}[{position}]: must be a finite number, got {number!r}")
        return [float(number) for number in value]
    if isinstance(value, dict):
        total = 0
        for category, count in value.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise SnapshotError(f"{signal!r}[{category!r}]: a category count must be an integer >= 0, "
                                    f"got {count!r}")
            total += count
        if not 2 <= total <= MAX_SNAPSHOT_COUNT:
            raise SnapshotError(f"{signal!r}: category counts must add up to between 2 and "
                                f"{MAX_SNAPSHOT_COUNT}, got {total}")
        return {str(category): int(count) for category, count in value.items()}
    raise SnapshotError(f"{signal!r}: must be a list of numbers (numeric) or an object of category counts "
                        f"(categorical), got {type(value).__name__}")


def reference_params(
    detector: type[Detector] | None,
    kind: str,
    *,
    warmup: int = 0,
    snapshot: Mapping[str, Any] | None = None,
    snapshot_id: str | None = None,
    signal: str = "",
) -> dict[str, Any]:
    """The reference parameters of one detector of ``signal`` under a rule's ``reference``.

    ``warmup`` (0: the detector's default) sets ``warmup`` or
    ``reference_size``; a snapshot entry for ``signal`` of the right shape sets
    ``reference_values`` (numeric) or ``reference_counts`` (categorical) and
    ``reference_id``. A detector that takes neither gets nothing.
    """
    accepted = getattr(detector, "reference_params", ())
    params: dict[str, Any] = {}
    entry = None if snapshot is None else snapshot.get(signal)
    if kind == "numeric" and isinstance(entry, list) and "reference_values" in accepted:
        params["reference_values"] = entry
        params["reference_id"] = snapshot_id
    elif kind == "categorical" and isinstance(entry, dict) and "reference_counts" in accepted:
        params["reference_counts"] = entry
        params["reference_id"] = snapshot_id
    if warmup:
        for size in ("reference_size", "warmup"):
            if size in accepted:
                params[size] = warmup
                break
    return params
