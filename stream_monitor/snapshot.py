"""Reference snapshots from training data: ``stream-monitor reference``.

A snapshot holds, per signal, what the detectors need as a reference: for a
numeric column a sample of its values (all of them up to ``max_values``, else
a seeded uniform sample), for a categorical column the count of every
category. It is stamped with an ``id`` (which alerts name in ``reference``,
as ``snapshot:<id>``) and the SHA-256 of its content, so a snapshot edited
after it was written is refused when the config loads:

.. code-block:: json

    {"format": "stream-monitor.reference/1", "id": "fraud-train-2026-11",
     "content_sha256": "9f2c...", "model": "fraud", "source": "train.csv", "rows": 50000,
     "signals": {"feature:amount": [12.5, 3.0, ...], "feature:country": {"FR": 120, "DE": 80}}}

Inputs:

- CSV with a header row. A column whose every non-empty cell is a finite
  number is numeric; any other column is categorical (its cells as text, as
  the event contract reads strings). Empty cells are missing values.
- JSON lines: either prediction events (``features`` and ``prediction``, as
  the monitor reads them; ``--model`` keeps one model's events) or flat
  objects whose fields are the columns. Booleans are the categories
  ``"true"`` and ``"false"``, as in events; ``null`` is missing.
- Parquet, with the optional ``parquet`` extra (pyarrow).

A column named ``prediction`` becomes the ``prediction`` signal and any other
``feature:<column>``; the contract's other fields (``event_id``, ``model``,
``model_version``, ``ts``) and a ``label`` column are never signals.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stream_monitor.detectors.reference import (
    MAX_SNAPSHOT_COUNT,
    MAX_SNAPSHOT_VALUES,
    MIN_SNAPSHOT_VALUES,
    SNAPSHOT_FORMAT,
    content_hash,
)
from stream_monitor.errors import StreamMonitorError

__all__ = ["MAX_CATEGORIES", "SnapshotBuildError", "build_snapshot", "write_snapshot"]

#: fields of the event contract (and a label column) that are never signals
NOT_SIGNALS = frozenset({"event_id", "model", "model_version", "ts", "label"})
#: a categorical column with more distinct values is an identifier, not a signal
MAX_CATEGORIES = 10_000
#: the seed of the sample drawn from a numeric column longer than ``max_values``
SAMPLE_SEED = 0


class SnapshotBuildError(StreamMonitorError):
    """Training data that cannot make a snapshot (unreadable, empty, a missing extra)."""


#: a column is numeric when at most this share of its values is not a number (those are
#: then left out, and counted in the summary); otherwise it is categorical
MAX_NON_NUMERIC_SHARE = 0.01


@dataclass
class _Column:
    numbers: list[float] = field(default_factory=list)
    #: every value as text (the column's categories, if it is categorical)
    texts: Counter[str] = field(default_factory=Counter)
    #: values that are not numbers
    non_numeric: int = 0


@dataclass
class Built:
    """A snapshot and what was left out of it, for the command's summary."""

    snapshot: dict[str, Any]
    #: column -> why it is not in the snapshot
    skipped: dict[str, str]
    #: column -> what was left out of its entry (values not numbers in a numeric column)
    notes: dict[str, str] = field(default_factory=dict)


def signal_name(column: str) -> str:
    return "prediction" if column == "prediction" else f"feature:{column}"


def build_snapshot(path: Path, snapshot_id: str, *, model: str | None = None,
                   columns: Sequence[str] | None = None, categorical: Sequence[str] = (),
                   max_values: int = MAX_SNAPSHOT_VALUES) -> Built:
    """Read training data at ``path`` and return its stamped snapshot.

    ``columns`` keeps only these columns; ``categorical`` names columns that are
    categorical even though their values are numbers (codes).
    """
    if not snapshot_id:
        raise SnapshotBuildError("--id must not be empty")
    if not MIN_SNAPSHOT_VALUES <= max_values <= MAX_SNAPSHOT_VALUES:
        raise SnapshotBuildError(f"--max-values must be between {MIN_SNAPSHOT_VALUES} and "
                                 f"{MAX_SNAPSHOT_VALUES}, got {max_values}")
    wanted = None if columns is None else set(columns)
    table: dict[str, _Column] = {}
    rows = 0
    for row in _rows(path, model):
        rows += 1
        for name, value in row.items():
            if name in NOT_SIGNALS or (wanted is not None and name not in wanted):
                continue
            _add(table.setdefault(name, _Column()), value)
    if rows == 0:
        raise SnapshotBuildError(f"{path.name}: no rows" + (f" of model {model!r}" if model else ""))
    for option, names in (("--columns", wanted or ()), ("--categorical", categorical)):
        if missing := sorted(set(names) - table.keys()):
            raise SnapshotBuildError(f"{option}: {path.name} has no column(s) {', '.join(map(repr, missing))} "
                                     f"(its columns: {', '.join(sorted(table)) or 'none'})")
    signals: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    notes: dict[str, str] = {}
    for name in sorted(table):
        entry, note = _entry(table[name], max_values, name in categorical)
        if entry is None:
            skipped[name] = note
        else:
            signals[signal_name(name)] = entry
            if note:
                notes[name] = note
    if not signals:
        raise SnapshotBuildError(f"{path.name}: no column can be a reference: "
                                 + "; ".join(f"{name}: {why}" for name, why in skipped.items()))
    snapshot = {"format": SNAPSHOT_FORMAT, "id": snapshot_id, "content_sha256": content_hash(signals),
                "model": model, "source": path.name, "rows": rows, "signals": signals}
    return Built(snapshot, skipped, notes)


def write_snapshot(snapshot: dict[str, Any], out: Path) -> None:
    """Write the snapshot as JSON (through a temporary file: never half a snapshot)."""
    if not out.parent.is_dir():
        raise SnapshotBuildError(f"--out: the folder {out.parent} does not exist")
    temporary = out.with_name(out.name + ".tmp")
    temporary.write_bytes(orjson.dumps(snapshot))
    temporary.replace(out)


def _add(column: _Column, value: Any) -> None:
    if value is None or value == "":
        return
    if isinstance(value, bool):
        column.texts["true" if value else "false"] += 1
        column.non_numeric += 1
        return
    if isinstance(value, (int, float)):
        number: float | None = float(value) if math.isfinite(value) else None
        text = _number_text(value)
    elif isinstance(value, str):
        number, text = _parse_number(value), value
    else:
        number, text = None, orjson.dumps(value).decode()
    column.texts[text] += 1
    if number is None:
        column.non_numeric += 1
    else:
        column.numbers.append(number)


def _parse_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _number_text(value: int | float) -> str:
    return str(int(value)) if isinstance(value, int) else repr(value)


def _entry(column: _Column, max_values: int,
           categorical: bool) -> tuple[list[float] | dict[str, int] | None, str]:
    total = len(column.numbers) + column.non_numeric
    if not categorical and column.non_numeric <= MAX_NON_NUMERIC_SHARE * total:
        values = np.asarray(column.numbers, dtype=np.float64)
        if len(values) < MIN_SNAPSHOT_VALUES:
            return None, f"{len(values)} values, a numeric reference needs at least {MIN_SNAPSHOT_VALUES}"
        if len(values) > max_values:
            keep = np.sort(np.random.default_rng(SAMPLE_SEED).choice(len(values), max_values, replace=False))
            values = values[keep]
        note = f"{column.non_numeric} values that are not numbers left out" if column.non_numeric else ""
        return values.tolist(), note
    if len(column.texts) > MAX_CATEGORIES:
        return None, (f"{len(column.texts)} distinct values (an identifier?); at most {MAX_CATEGORIES} "
                      f"categories are kept: leave it out with --columns")
    counts = dict(column.texts)
    total = sum(counts.values())
    if total < 2:
        return None, "fewer than 2 values"
    if total > MAX_SNAPSHOT_COUNT:
        # the shares are what matters: scale the counts down, keeping every category seen
        factor = MAX_SNAPSHOT_COUNT / total
        counts = {category: max(1, math.floor(count * factor)) for category, count in counts.items()}
        while sum(counts.values()) > MAX_SNAPSHOT_COUNT:
            largest = max(counts, key=counts.__getitem__)
            counts[largest] -= sum(counts.values()) - MAX_SNAPSHOT_COUNT
    return dict(sorted(counts.items())), ""


# -- readers --------------------------------------------------------------------


def _rows(path: Path, model: str | None) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        raise SnapshotBuildError(f"--input: file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _csv_rows(path)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        yield from _jsonl_rows(path, model)
    elif suffix in (".parquet", ".pq"):
        yield from _parquet_rows(path)
    else:
        raise SnapshotBuildError(f"--input: {path.name}: unknown format (expected .csv, .jsonl or .parquet)")


def _csv_rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise SnapshotBuildError(f"{path.name}: no header row")
        try:
            for row in reader:
                yield {name: value for name, value in row.items() if name is not None}
        except (csv.Error, UnicodeDecodeError) as exc:
            raise SnapshotBuildError(f"{path.name}: line {reader.line_num}: {exc}") from None


def _jsonl_rows(path: Path, model: str | None) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise SnapshotBuildError(f"{path.name}: line {number} is not JSON: {exc}") from None
            if not isinstance(item, dict):
                raise SnapshotBuildError(f"{path.name}: line {number} is not a JSON object")
            if isinstance(item.get("features"), dict):
                if model is not None and item.get("model") != model:
                    continue
                row = dict(item["features"])
                if "prediction" in item:
                    row["prediction"] = item["prediction"]
                yield row
            elif model is None or item.get("model", model) == model:
                yield item


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise SnapshotBuildError("reading Parquet needs pyarrow: pip install 'stream-monitor[parquet]'") from None
    try:
        table = parquet.ParquetFile(path)
        for batch in table.iter_batches():
            yield from batch.to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
        raise SnapshotBuildError(f"{path.name}: cannot read Parquet: {exc}") from None


def summary_lines(built: Built, out: Path) -> Iterable[str]:
    snapshot = built.snapshot
    signals = snapshot["signals"]
    numeric = sum(isinstance(entry, list) for entry in signals.values())
    yield (f"reference {snapshot['id']!r}: {len(signals)} signals ({numeric} numeric, "
           f"{len(signals) - numeric} categorical) from {snapshot['rows']} rows of {snapshot['source']}")
    yield f"content sha256 {snapshot['content_sha256']}"
    for column, note in built.notes.items():
        yield f"{column!r}: {note}"
    for column, why in built.skipped.items():
        yield f"left out {column!r}: {why}"
    yield f"written to {out}"
