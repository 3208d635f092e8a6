"""Decode and validate input events (the input contract in the design notes).

Every way a message can be unusable maps to one bounded ``reason`` (a metric
label and a dead-letter header); :func:`decode_prediction` and
:func:`decode_label` raise :class:`~stream_monitor.errors.BadMessage` with it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from stream_monitor.errors import BadMessage

__all__ = [
    "REJECT_REASONS",
    "Limits",
    "LabelEvent",
    "PredictionEvent",
    "decode_label",
    "decode_prediction",
]

#: Every reason a message can be rejected for. Bounded: these are label values.
REJECT_REASONS = (
    "empty_value",
    "oversize",
    "invalid_utf8",
    "non_finite",
    "invalid_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "nested_value",
    "unknown_model",
    "unknown_field",
)

#: the top-level fields of each event; others are counted (or, strict, rejected)
PREDICTION_FIELDS = frozenset({"event_id", "model", "model_version", "ts", "features", "prediction"})
LABEL_FIELDS = frozenset({"event_id", "model", "label", "ts"})

_NON_FINITE = re.compile(rb"(?<![\"\w])-?(NaN|Infinity)(?![\"\w])")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
#: epoch seconds from 1970 to the end of year 9999; a time in milliseconds lands above it
_LATEST_TS = 253_402_300_799.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one message may carry."""

    max_message_bytes: int = 1_000_000
    max_string_length: int = 1024
    max_features: int = 1024
    #: reject a message with a top-level field the input contract does not know
    strict: bool = False


@dataclass(slots=True)
class PredictionEvent:
    event_id: str
    model: str
    model_version: str
    ts: float | None  # epoch seconds; None means "use the Kafka timestamp"
    features: dict[str, float | str | None]
    prediction: float | str | None
    #: top-level fields the input contract does not know (e.g. "feature" for "features")
    unknown_fields: tuple[str, ...] = ()


@dataclass(slots=True)
class LabelEvent:
    event_id: str
    model: str
    label: float | str
    ts: float | None
    unknown_fields: tuple[str, ...] = ()


def _load_object(raw: bytes | None, limits: Limits) -> dict[str, Any]:
    if not raw:
        raise BadMessage("empty_value", "the message has no value", raw)
    if len(raw) > limits.max_message_bytes:
        raise BadMessage("oversize", f"{len(raw)} bytes exceeds max_message_bytes="
                         f"{limits.max_message_bytes}", raw)
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _classify_json_error(raw, exc) from None
    if not isinstance(document, dict):
        raise BadMessage("not_an_object", f"expected a JSON object, got {type(document).__name__}", raw)
    return document


def _classify_json_error(raw: bytes, exc: orjson.JSONDecodeError) -> BadMessage:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as unicode_error:
        return BadMessage("invalid_utf8", f"not UTF-8 at byte {unicode_error.start}", raw)
    if "infinity" in str(exc) or _NON_FINITE.search(raw):
        return BadMessage("non_finite", "NaN or Infinity is not a valid value", raw)
    return BadMessage("invalid_json", str(exc), raw)


def _required_string(document: dict[str, Any], name: str, raw: bytes, limits: Limits) -> str:
    value = document.get(name)
    if value is None:
        raise BadMessage("missing_field", f"'{name}' is required", raw)
    if not isinstance(value, str):
        raise BadMessage("wrong_type", f"'{name}' must be a string, got {type(value).__name__}", raw)
    if not value:
        raise BadMessage("empty_value", f"'{name}' is empty", raw)
    if len(value) > limits.max_string_length:
        raise BadMessage("oversize", f"'{name}' is longer than {limits.max_string_length}", raw)
    return value


def _timestamp(value: Any, raw: bytes) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadMessage("wrong_type", "'ts' must be epoch seconds or an RFC 3339 string", raw)
    if isinstance(value, (int, float)):
        seconds = float(value)
        if not 0.0 <= seconds <= _LATEST_TS:
            raise BadMessage("wrong_type", f"'ts' {value!r} is not epoch seconds "
                             f"(milliseconds, perhaps?)", raw)
        return seconds
    if isinstance(value, str):
        if not _RFC3339.match(value):
            raise BadMessage("wrong_type", f"'ts' is not RFC 3339: {value[:40]!r}", raw)
        try:
            # Python 3.11 takes at most 6 fractional digits
            text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00").replace("z", "+00:00"))
            return datetime.fromisoformat(text).timestamp()
        except (ValueError, OverflowError):
            raise BadMessage("wrong_type", f"'ts' is not a valid time: {value[:40]!r}", raw) from None
    raise BadMessage("wrong_type", "'ts' must be epoch seconds or an RFC 3339 string", raw)


def _unknown_fields(document: dict[str, Any], known: frozenset[str], raw: bytes,
                   limits: Limits) -> tuple[str, ...]:
    """Top-level fields outside the contract, sorted; in strict mode, the reason to reject."""
    if document.keys() <= known:
        return ()  # the usual case, checked without a Python loop
    unknown = tuple(sorted(name[:64] for name in document if name not in known))
    if unknown and limits.strict:
        raise BadMessage("unknown_field", f"unknown field(s) {', '.join(map(repr, unknown[:5]))} "
                         f"(input.strict is on; known: {', '.join(sorted(known))})", raw)
    return unknown


def _scalar(name: str, value: Any, raw: bytes, limits: Limits) -> float | str | None:
    """A feature or prediction value: number, string, bool (as a category) or None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        number = float(value)
        if not math.isfinite(number):
            raise BadMessage("non_finite", f"'{name}' is not finite", raw)
        return number
    if isinstance(value, str):
        if len(value) > limits.max_string_length:
            raise BadMessage("oversize", f"'{name}' is longer than {limits.max_string_length}", raw)
        return value
    if isinstance(value, (dict, list)):
        raise BadMessage("nested_value", f"'{name}' must be a scalar, got {type(value).__name__}", raw)
    raise BadMessage("wrong_type", f"'{name}' has an unsupported type", raw)


def decode_prediction(raw: bytes | None, limits: Limits = Limits()) -> PredictionEvent:
    """Decode one prediction event; raise :class:`BadMessage` when it is unusable.

    >>> event = decode_prediction(b'{"event_id": "e1", "model": "fraud", '
    ...     b'"features": {"amount": 12.5, "country": "DE", "promo": true}, "prediction": 0.87}')
    >>> event.model_version, event.features, event.prediction
    ('unknown', {'amount': 12.5, 'country': 'DE', 'promo': 'true'}, 0.87)
    >>> decode_prediction(b'{"event_id": "e1", "model": "fraud", "prediction": NaN}')
    Traceback (most recent call last):
    ...
    stream_monitor.errors.BadMessage: non_finite: NaN or Infinity is not a valid value
    """
    document = _load_object(raw, limits)
    assert raw is not None
    event_id = _required_string(document, "event_id", raw, limits)
    model = _required_string(document, "model", raw, limits)
    version_value = document.get("model_version")
    if version_value is None:
        model_version = "unknown"
    elif isinstance(version_value, (str, int)) and not isinstance(version_value, bool):
        model_version = str(version_value)
        if not model_version:
            raise BadMessage("empty_value", "'model_version' is empty", raw)
        if len(model_version) > limits.max_string_length:
            raise BadMessage("oversize", "'model_version' is too long", raw)
    else:
        raise BadMessage("wrong_type", "'model_version' must be a string", raw)
    features_value = document.get("features", {})
    if features_value is None:
        features_value = {}
    if not isinstance(features_value, dict):
        raise BadMessage("wrong_type", "'features' must be an object", raw)
    if len(features_value) > limits.max_features:
        raise BadMessage("oversize", f"more than {limits.max_features} features", raw)
    features: dict[str, float | str | None] = {}
    for name, value in features_value.items():
        if not name:
            raise BadMessage("empty_value", "a feature has an empty name", raw)
        if len(name) > limits.max_string_length:
            raise BadMessage("oversize", "a feature name is too long", raw)
        features[name] = _scalar(f"features.{name}", value, raw, limits)
    prediction = _scalar("prediction", document.get("prediction"), raw, limits)
    ts = _timestamp(document.get("ts"), raw)
    unknown = _unknown_fields(document, PREDICTION_FIELDS, raw, limits)
    return PredictionEvent(event_id, model, model_version, ts, features, prediction, unknown)


def decode_label(raw: bytes | None, limits: Limits = Limits()) -> LabelEvent:
    """Decode one label event; raise :class:`BadMessage` when it is unusable.

    A JSON boolean label is the class 1/0: ``true`` decodes to ``1.0``.

    >>> decode_label(b'{"event_id": "e1", "model": "fraud", "label": 1, "ts": "2025-11-24T16:00:00Z"}')
    LabelEvent(event_id='e1', model='fraud', label=1.0, ts=1764000000.0, unknown_fields=())
    """
    document = _load_object(raw, limits)
    assert raw is not None
    event_id = _required_string(document, "event_id", raw, limits)
    model = _required_string(document, "model", raw, limits)
    if "label" not in document or document["label"] is None:
        raise BadMessage("missing_field", "'label' is required", raw)
    value = document["label"]
    # a boolean label is the class 1/0 (a boolean feature stays a category)
    label = float(value) if isinstance(value, bool) else _scalar("label", value, raw, limits)
    assert label is not None
    ts = _timestamp(document.get("ts"), raw)
    return LabelEvent(event_id, model, label, ts, _unknown_fields(document, LABEL_FIELDS, raw, limits))
