"""Drift alerts: the alert contract, its JSON Schema, and a deterministic id.

An alert is a pure function of the input events and their order: no wall
clock, no randomness. ``alert_id`` hashes what identifies the detection, so the
same input gives the same ids in ``replay`` and in ``run``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import resources
from typing import Any

import orjson

__all__ = ["ALERT_SCHEMA", "Alert", "alert_id", "format_alert", "rfc3339"]

#: The JSON Schema every alert value satisfies (shipped as alert.schema.json).
ALERT_SCHEMA: dict[str, Any] = json.loads(
    resources.files("stream_monitor").joinpath("alert.schema.json").read_text(encoding="utf-8"))


def rfc3339(epoch_seconds: float | None) -> str | None:
    """Epoch seconds as an RFC 3339 UTC timestamp with milliseconds.

    >>> rfc3339(1764000000.123)
    '2025-11-24T16:00:00.123Z'
    """
    if epoch_seconds is None:
        return None
    try:
        moment = datetime.fromtimestamp(epoch_seconds, tz=timezone.utc)
    except (ValueError, OverflowError, OSError):
        # a Kafka timestamp can be anything a producer set; an alert must still go out
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_id(model: str, model_version: str, signal: str, detector: str, event_id: str,
             n_seen: int) -> str:
    """A stable id for one detection.

    >>> alert_id("fraud", "3", "feature:amount", "ks", "e-42", 5120)
    '68bf2ad5aa6f958783752882264af084'
    """
    text = "\x1f".join((model, model_version, signal, detector, event_id, str(n_seen)))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Alert:
    """One drift alert, as published on the alerts topic (key ``<model>/<signal>``)."""

    alert_id: str
    model: str
    model_version: str
    signal: str
    detector: str
    event_id: str
    detected_at: str | None
    n_seen: int
    statistic: float
    threshold: float
    p_value: float | None
    severity: str
    reference: str | None
    window: dict[str, int] = field(default_factory=dict)
    partition: int = 0
    #: a version comparison's baseline (``model_version`` is the candidate); other alerts leave it out
    baseline_version: str | None = None

    @property
    def key(self) -> bytes:
        return f"{self.model}/{self.signal}".encode()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["baseline_version"] is None:
            del data["baseline_version"]
        return data

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)


def format_alert(alert: dict[str, Any]) -> str:
    """One readable line for a terminal.

    >>> format_alert({"detected_at": "2025-11-24T16:00:00.123Z", "severity": "warning",
    ...     "model": "fraud", "model_version": "3", "signal": "feature:amount", "detector": "ks",
    ...     "event_id": "e-42", "n_seen": 5120, "statistic": 0.1234, "threshold": 0.0812,
    ...     "p_value": 1e-7})
    '2025-11-24T16:00:00.123Z WARNING  fraud@3 feature:amount ks: statistic 0.1234 > 0.0812 (p=1e-07) at event e-42 after 5120 values'
    """
    p_value = alert.get("p_value")
    p_text = f" (p={p_value:.3g})" if p_value is not None else ""
    return (f"{alert.get('detected_at')} {str(alert.get('severity', '')).upper():8s} "
            f"{alert.get('model')}@{alert.get('model_version')} {alert.get('signal')} "
            f"{alert.get('detector')}: statistic {alert.get('statistic'):.4g} > "
            f"{alert.get('threshold'):.4g}{p_text} at event {alert.get('event_id')} "
            f"after {alert.get('n_seen')} values")
