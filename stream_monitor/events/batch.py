"""Decode a batch of prediction messages fast; the one-message decoder stays the oracle.

:func:`stream_monitor.events.decode_prediction` defines what a valid
prediction event is and why a bad one is rejected. This module decodes the
usual message with msgspec typed Structs instead: msgspec checks the types,
refuses ``NaN``/``Infinity`` and out-of-range numbers, invalid UTF-8, string
lengths and fields outside the contract in C, so a good message costs a few
microseconds and no Python work per value.

Anything the typed decode does not accept as plainly valid (a bad message, an
unknown field, a boolean, an RFC 3339 time, a missing ``model_version``...) is handed
to the oracle, message by message. So the rejects, their reasons and details
(the dead-letter headers) are the oracle's by construction, and a message this
module accepts decodes to exactly the event the oracle gives (checked by
``tests/unit/test_batch_decode.py`` over many malformed and edge messages).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

import msgspec

from stream_monitor.errors import BadMessage
from stream_monitor.events import _LATEST_TS, LabelEvent, Limits, PredictionEvent, _timestamp

__all__ = ["BatchDecoder", "LabelBatchDecoder"]

#: integers orjson (the oracle's parser) keeps as int (up to 2**64 - 1); the few above int64 go to the oracle
_INT_RANGE = msgspec.Meta(ge=-(2**63), le=2**63 - 1)
#: feature names checked once; the set is cleared when it grows past this (names are few)
_MAX_KNOWN_NAMES = 100_000


def _struct_types(limits: Limits, booleans: bool) -> type[msgspec.Struct]:
    """The typed shape of a plainly valid prediction message under ``limits``.

    With ``booleans``, JSON booleans are accepted as values (the caller turns
    them into the categories ``"true"``/``"false"``, as the oracle does).
    """
    name = Annotated[str, msgspec.Meta(min_length=1, max_length=limits.max_string_length)]
    text = Annotated[str, msgspec.Meta(max_length=limits.max_string_length)]
    value: Any = float | text | bool | None if booleans else float | text | None
    # feature names are checked in Python against a set of known-good ones: a constrained
    # key type costs more than the whole rest of the decode (msgspec cannot cache such keys)
    fields = [
        ("event_id", name),
        ("model", name),
        ("model_version", name | Annotated[int, _INT_RANGE] | None, None),
        ("ts", float | str | None, None),
        ("features", dict[str, value] | None, None),
        ("prediction", value, None),
    ]
    return msgspec.defstruct("WirePrediction", fields, forbid_unknown_fields=True)


class BatchDecoder:
    """Prediction message bytes to events, in bulk, with the oracle's verdicts.

    ``oracle`` is the one-message decoder (with the model allowlist applied):
    it is called for every message the typed decode does not plainly accept,
    and its event or its :class:`BadMessage` is the answer for that message.

    >>> from stream_monitor.events import decode_prediction
    >>> decoder = BatchDecoder(Limits(), decode_prediction)
    >>> good, bad = decoder.predictions([b'{"event_id": "e1", "model": "m", "features": {"x": 1}}',
    ...                                  b'{"event_id": "e2", "model": "m", "prediction": NaN}'])
    >>> good.features, bad.reason, bad.detail
    ({'x': 1.0}, 'non_finite', 'NaN or Infinity is not a valid value')
    """

    def __init__(self, limits: Limits, oracle: Callable[[bytes | None], PredictionEvent],
                 allowed_models: frozenset[str] | None = None) -> None:
        self.limits = limits
        self._oracle = oracle
        self._allowed = allowed_models
        self._plain = msgspec.json.Decoder(_struct_types(limits, booleans=False))
        self._with_booleans = msgspec.json.Decoder(_struct_types(limits, booleans=True))
        self._known_names: set[str] = set()

    def predictions(self, raws: Sequence[bytes | None]) -> list[PredictionEvent | BadMessage]:
        """One event or one :class:`BadMessage` per message, in order."""
        decode = self._plain.decode
        max_bytes = self.limits.max_message_bytes
        max_features = self.limits.max_features
        allowed = self._allowed
        known = self._known_names
        errors = (msgspec.ValidationError, msgspec.DecodeError)
        out: list[PredictionEvent | BadMessage] = []
        append = out.append
        for raw in raws:
            if raw is None or not 0 < len(raw) <= max_bytes:
                append(self._slow(raw))
                continue
            try:
                wire = decode(raw)
            except errors:
                append(self._maybe_booleans(raw))
                continue
            features = wire.features
            ts = wire.ts
            version = wire.model_version
            if (
                features is None or len(features) > max_features or not features.keys() <= known
                or (ts is not None and (ts.__class__ is not float or not 0.0 <= ts <= _LATEST_TS))
                or version.__class__ is not str
                or (allowed is not None and wire.model not in allowed)
            ):
                append(self._checked(raw, wire))
                continue
            append(PredictionEvent(wire.event_id, wire.model, version, ts,
                                   features, wire.prediction))
        return out

    def _slow(self, raw: bytes | None) -> PredictionEvent | BadMessage:
        try:
            return self._oracle(raw)
        except BadMessage as bad:
            return bad

    def _maybe_booleans(self, raw: bytes) -> PredictionEvent | BadMessage:
        """A message the plain shape refused: booleans as values are common, the rest goes to the oracle."""
        if b"true" not in raw and b"false" not in raw:
            return self._slow(raw)
        try:
            wire = self._with_booleans.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return self._slow(raw)
        if wire.features:
            wire.features = {name: _category(value) for name, value in wire.features.items()}
        wire.prediction = _category(wire.prediction)
        return self._checked(raw, wire)

    def _checked(self, raw: bytes, wire: Any) -> PredictionEvent | BadMessage:
        """The checks the typed shape leaves to Python, for a message that is not the usual kind.

        Any doubt goes to the oracle, which gives the message's first problem in its own order.
        """
        limits = self.limits
        features = wire.features
        if features is None:
            features = {}
        if len(features) > limits.max_features or not self._names_valid(features):
            return self._slow(raw)
        version = wire.model_version
        if version is None:
            version = "unknown"
        elif version.__class__ is int:
            version = str(version)
            if len(version) > limits.max_string_length:
                return self._slow(raw)
        ts = wire.ts
        if ts is not None:
            if ts.__class__ is str:
                try:
                    ts = _timestamp(ts, raw)
                except BadMessage:
                    return self._slow(raw)
            elif not 0.0 <= ts <= _LATEST_TS:
                return self._slow(raw)
        if self._allowed is not None and wire.model not in self._allowed:
            return self._slow(raw)
        return PredictionEvent(wire.event_id, wire.model, version, ts, features, wire.prediction)

    def _names_valid(self, features: dict[str, Any]) -> bool:
        """Every feature name is non-empty and within the string limit (remembered once checked)."""
        known = self._known_names
        if features.keys() <= known:
            return True
        limit = self.limits.max_string_length
        new = [name for name in features if name not in known]
        if not all(0 < len(name) <= limit for name in new):
            return False
        if len(known) + len(new) > _MAX_KNOWN_NAMES:
            known.clear()
        known.update(new)
        return True


def _category(value: Any) -> Any:
    """A JSON boolean value is the category "true"/"false" (as in the oracle)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return value


class LabelBatchDecoder:
    """Label message bytes to label events, in bulk, with the oracle's verdicts (as :class:`BatchDecoder`).

    >>> from stream_monitor.events import decode_label
    >>> decoder = LabelBatchDecoder(Limits(), decode_label)
    >>> [getattr(o, "label", None) or o.reason for o in decoder.labels(
    ...     [b'{"event_id": "e1", "model": "m", "label": true}', b'{"event_id": "e2", "model": "m"}'])]
    [1.0, 'missing_field']
    """

    def __init__(self, limits: Limits, oracle: Callable[[bytes | None], LabelEvent]) -> None:
        self.limits = limits
        self._oracle = oracle
        name = Annotated[str, msgspec.Meta(min_length=1, max_length=limits.max_string_length)]
        text = Annotated[str, msgspec.Meta(max_length=limits.max_string_length)]
        wire = msgspec.defstruct("WireLabel", [("event_id", name), ("model", name), ("label", float | text | bool),
                                               ("ts", float | None, None)], forbid_unknown_fields=True)
        self._decode = msgspec.json.Decoder(wire).decode

    def labels(self, raws: Sequence[bytes | None]) -> list[LabelEvent | BadMessage]:
        """One label event or one :class:`BadMessage` per message, in order."""
        decode = self._decode
        max_bytes = self.limits.max_message_bytes
        errors = (msgspec.ValidationError, msgspec.DecodeError)
        out: list[LabelEvent | BadMessage] = []
        for raw in raws:
            if raw is None or not 0 < len(raw) <= max_bytes:
                out.append(self._slow(raw))
                continue
            try:
                wire = decode(raw)
            except errors:
                # an RFC 3339 time, an unknown field, a bad message...: the oracle decides
                out.append(self._slow(raw))
                continue
            ts = wire.ts
            if ts is not None and not 0.0 <= ts <= _LATEST_TS:
                out.append(self._slow(raw))
                continue
            label = wire.label
            if label.__class__ is bool:
                label = float(label)  # a boolean label is the class 1/0
            out.append(LabelEvent(wire.event_id, wire.model, label, ts))
        return out

    def _slow(self, raw: bytes | None) -> LabelEvent | BadMessage:
        try:
            return self._oracle(raw)
        except BadMessage as bad:
            return bad
