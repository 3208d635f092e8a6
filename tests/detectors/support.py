"""Helpers shared by the detector tests."""

from __future__ import annotations

from typing import Any

import numpy as np


def river_indices(detector: Any, values: np.ndarray) -> list[int]:
    """Positions where a river drift detector flags drift, fed one value at a time."""
    found = []
    for position, value in enumerate(values.tolist()):
        detector.update(value)
        if detector.drift_detected:
            found.append(position)
    return found


def one_at_a_time(detector: Any, values: np.ndarray) -> list:
    """``(position, detection)`` pairs from feeding ``update_one`` value by value."""
    found = []
    for position, value in enumerate(values):
        detection = detector.update_one(value)
        if detection is not None:
            found.append((position, detection))
    return found


def strip(pairs: list) -> list:
    """Every field of ``(position, detection)`` pairs except the batch-relative index."""
    return [(p, d.n_seen, d.statistic, d.threshold, dict(d.window), d.reference) for p, d in pairs]
