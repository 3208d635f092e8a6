"""Bytes per prediction waiting in the label join, measured with tracemalloc.

Run: ``python bench/join_memory.py [n]``. Predictions are decoded from JSON as
in ``run`` (so their strings are fresh objects, not literals), added to a join
with no labels, and the memory the join holds is divided by their number.
Beside it, in the same run, the baseline: the same predictions kept the way
the join kept them before (an ordered dict of event id -> a tuple of version,
prediction, time and partition).
"""

from __future__ import annotations

import sys
import tracemalloc

import orjson

from collections import OrderedDict

from stream_monitor.events import decode_prediction
from stream_monitor.join import JoinLimits, LabelJoin


def _raws(n: int) -> list[bytes]:
    return [orjson.dumps({"event_id": f"7f9c2b1e-{i:08d}", "model": "fraud", "model_version": "3",
                          "ts": 1_764_000_000.0 + i * 0.37, "features": {}, "prediction": (i % 997) / 997})
            for i in range(n)]


def bytes_per_waiting_prediction(n: int) -> float:
    raws = _raws(n)
    join = LabelJoin(JoinLimits(retention_events=n, retention_seconds=1e12))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for raw in raws:
        # decoded here, so the strings and floats the join keeps of an event are traced
        join.add_prediction(decode_prediction(raw))
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert join.pending_predictions() == n
    return held / n


def baseline_bytes_per_waiting_prediction(n: int) -> float:
    """The earlier layout: one tuple of Python objects per waiting prediction."""
    raws = _raws(n)
    pending: OrderedDict[str, tuple[str, float | str | None, float | None, int]] = OrderedDict()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for raw in raws:
        event = decode_prediction(raw)
        pending[event.event_id] = (event.model_version, event.prediction, event.ts, 0)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held / n


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    now = bytes_per_waiting_prediction(count)
    baseline = baseline_bytes_per_waiting_prediction(count)
    print(f"join memory ({count} waiting predictions): {now:.0f} bytes each; "
          f"baseline (tuple per prediction) {baseline:.0f} bytes each; ratio {now / baseline:.2f}")
