"""Detection delays over ten seeds for issue 9's blind-spot cases, beside the clean stream.

Usage::

    .venv/bin/python bench/never_blind.py

Each case is built by the helpers of ``tests/unit/test_never_blind.py`` and run
through ``replay``; a delay is the events from the change to the first alert
(None: not detected). The huge-value case prints the clean stream's delay
beside it, the far-future case the boolean-label case's (same error process).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))
import test_never_blind as cases  # noqa: E402

SEEDS = range(10, 20)


def _delay(alert, change: int, offset: int = 0) -> int | None:
    return None if alert is None else alert["n_seen"] + offset - change


def main() -> None:
    rows: dict[str, list] = {name: [] for name in (
        "boolean labels, error 5%->25%", "far-future ts, then the same rise",
        "'N/A' first, then +2 sd", "+1 sd, clean stream", "+1 sd, 1.7e308 in the warm-up",
        "400 categories collapse onto one")}
    names = list(rows)
    for seed in SEEDS:
        folder = Path(tempfile.mkdtemp())
        events, labels = cases._classification(seed, 12_000, 6000, 0.05, 0.25, 500, bool_labels=True)
        rows[names[0]].append(_delay(cases._first(cases._replay(folder, events, labels), "fraud",
                                                  "performance:error_rate"), 6000))
        events, labels = cases._classification(
            seed, 12_000, 6000, 0.05, 0.25, 500, bool_labels=False,
            ts_of=lambda i: 253_402_300_000.0 if i == 100 else cases.T0 + i)
        rows[names[1]].append(_delay(cases._first(cases._replay(folder, events, labels), "fraud",
                                                  "performance:error_rate"), 6000))
        alerts = cases._replay(folder, cases._numeric_events(seed, 6000, 4000, 2.0, first_value="N/A"))
        rows[names[2]].append(_delay(cases._first(alerts, "fraud", "feature:amount"), 4000, 1))
        alerts = cases._replay(folder, cases._numeric_events(seed, 8000, 5000, 1.0))
        rows[names[3]].append(_delay(cases._first(alerts, "fraud", "feature:amount"), 5000))
        alerts = cases._replay(folder, cases._numeric_events(seed, 8000, 5000, 1.0, at=50, injected=1.7e308))
        rows[names[4]].append(_delay(cases._first(alerts, "fraud", "feature:amount"), 5000))
        codes = np.random.default_rng(seed).integers(0, 400, 8000)
        events = [{"event_id": f"e{i}", "model": "fraud", "ts": cases.T0 + i,
                   "features": {"city": "v0" if i >= 5000 else f"v{codes[i]}"}} for i in range(8000)]
        alerts = cases._replay(folder, events)
        rows[names[5]].append(_delay(cases._first(alerts, "fraud", "feature:city"), 5000))
    width = max(map(len, rows))
    print(f"{'case':<{width}}  delays over seeds {SEEDS.start}-{SEEDS.stop - 1} (events after the change)")
    for name, delays in rows.items():
        found = [d for d in delays if d is not None]
        spread = f"{min(found)}-{max(found)}" if found else "-"
        print(f"{name:<{width}}  {spread:>7}  {delays}")


if __name__ == "__main__":
    main()
