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

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
from msgspec.structs import astuple

from stream_monitor.errors import BadMessage
from stream_monitor.events import _LATEST_TS, LabelEvent, Limits, PredictionEvent, _timestamp

__all__ = ["BatchDecoder", "BlockDecoder", "BlockSchema", "ColumnBlock", "LabelBatchDecoder", "MixedBlock",
           "PredictionBlock", "block_counts", "native_decoder"]

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


@dataclass(frozen=True, slots=True)
class BlockSchema:
    """The shape one (model, model_version)'s usual message has, as its signals were learned.

    ``numeric`` and ``categorical`` are the features monitored with that kind,
    ``ignored`` those carried but not monitored (the cap, the rule's selection);
    ``prediction`` is the prediction signal's kind, "ignored", or "absent" (none
    seen yet: a message with a prediction must start its signal, value by value).
    """

    model: str
    model_version: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    prediction: str = "absent"

    @property
    def width(self) -> int:
        """The number of features a message of this schema carries."""
        return len(self.numeric) + len(self.categorical) + len(self.ignored)


class PredictionBlock:
    """A batch of plainly valid messages of one schema, kept column-wise (no event objects).

    :meth:`columns` gives each feature's values in message order (a float or
    None for a numeric feature, a string or None for a categorical one), all
    at once; :meth:`event` builds one message's :class:`PredictionEvent` when
    it is needed (an alert's event, the label join, a fallback).

    ``holes`` are the positions, within the span of messages the block was cut
    from, of the messages it leaves out: each one the one-message decoder
    rejects (its dead letter is the caller's to send). The block's messages
    are the span's others, in order.
    """

    __slots__ = ("schema", "raws", "_wires", "_oracle", "holes")

    def __init__(self, schema: BlockSchema, raws: Sequence[bytes], wires: list[Any],
                 oracle: Callable[[bytes | None], PredictionEvent], holes: tuple[int, ...] = ()) -> None:
        self.schema = schema
        self.raws = raws
        self._wires = wires
        self._oracle = oracle
        self.holes = holes

    def __len__(self) -> int:
        return len(self._wires)

    def columns(self) -> list[tuple[Any, ...]]:
        """One tuple of values per feature, in the schema's order (numeric, categorical, ignored)."""
        if not self._wires:
            return [() for _ in range(self.schema.width)]
        return list(zip(*map(astuple, map(_FEATURES, self._wires))))

    def predictions(self) -> list[Any]:
        return list(map(_PREDICTION, self._wires))

    def prediction_column(self) -> Sequence[Any]:
        """The predictions as the monitor takes them (here the values of :meth:`predictions`)."""
        return self.predictions()

    def part(self, start: int, stop: int) -> PredictionBlock:
        """The block of its messages ``start`` to ``stop`` (no holes)."""
        return PredictionBlock(self.schema, self.raws[start:stop], self._wires[start:stop], self._oracle)

    def event_ids(self) -> list[str]:
        return list(map(_EVENT_ID, self._wires))

    def times(self) -> list[float | None]:
        """Each message's ``ts`` (None: the Kafka timestamp is used)."""
        return list(map(_TS, self._wires))

    def event(self, index: int) -> PredictionEvent:
        """The message's event, as the one-message decoder gives it (its own decode of the bytes)."""
        return self._oracle(self.raws[index])

    def events(self) -> list[PredictionEvent]:
        return [self._oracle(raw) for raw in self.raws]

    def unknown_fields(self) -> None:
        """None: the typed shape takes no field outside the contract."""
        return None


class ColumnBlock:
    """A block decoded by the compiled decoder: the numeric features one float64 matrix.

    The same interface as :class:`PredictionBlock`, but :meth:`columns` gives a
    numeric feature as a float64 array (NaN where the message has null: a JSON
    number is never NaN) and :meth:`prediction_column` a numeric prediction too.
    """

    __slots__ = ("schema", "raws", "_numeric", "_categorical", "_event_ids", "_times", "_prediction", "_oracle",
                 "holes", "_unknown")

    def __init__(self, schema: BlockSchema, raws: Sequence[bytes], decoded: tuple[Any, ...],
                 oracle: Callable[[bytes | None], PredictionEvent], start: int = 0, stop: int | None = None,
                 holes: tuple[int, ...] = (), rows: Sequence[int] | None = None) -> None:
        """The messages ``raws[start:stop]`` but the ``holes`` (positions from ``start``) of the
        compiled decoder's answer ``decoded`` for ``raws``; with ``rows``, the messages at those
        indices of ``raws`` (ascending) instead, and ``holes`` is only kept."""
        numeric, categorical, event_ids, times, prediction, _fits, unknown = decoded
        stop = len(raws) if stop is None else stop
        if rows is None and holes:
            left_out = set(holes)
            rows = [start + index for index in range(stop - start) if index not in left_out]
        if rows is not None and len(rows) and rows[-1] - rows[0] + 1 == len(rows):
            start, stop, rows = rows[0], rows[-1] + 1, None  # consecutive: views, no copy
        whole = rows is None and start == 0 and stop == len(raws)
        self.schema = schema
        self.holes = holes
        self._numeric = np.frombuffer(numeric, dtype=np.float64).reshape(len(schema.numeric), len(raws))
        if schema.prediction == "numeric":
            prediction = np.frombuffer(prediction, dtype=np.float64)
        if whole:
            self.raws = raws
        elif rows is None:
            self.raws = raws[start:stop]
            self._numeric = self._numeric[:, start:stop]
            categorical = [column[start:stop] for column in categorical]
            event_ids, times = event_ids[start:stop], times[start:stop]
            if prediction is not None:
                prediction = prediction[start:stop]
            if unknown is not None:
                unknown = unknown[start:stop]
        else:
            take = _taker(rows)
            self.raws = list(take(raws))
            self._numeric = self._numeric[:, rows]  # a copy, each feature's row contiguous
            categorical = [list(take(column)) for column in categorical]
            event_ids, times = list(take(event_ids)), list(take(times))
            if isinstance(prediction, np.ndarray):
                prediction = prediction[rows]
            elif prediction is not None:
                prediction = list(take(prediction))
            if unknown is not None:
                unknown = list(take(unknown))
        self._categorical, self._event_ids, self._times, self._prediction = categorical, event_ids, times, prediction
        #: each message's top-level fields outside the contract (None: none), or None when no message has any
        self._unknown = unknown if unknown is None or any(unknown) else None
        self._oracle = oracle

    def __len__(self) -> int:
        return len(self.raws)

    def columns(self) -> list[Sequence[Any]]:
        """One column per feature of the schema's numeric and categorical ones (the ignored are not kept)."""
        return [*self._numeric, *self._categorical]

    def predictions(self) -> list[Any]:
        prediction = self._prediction
        if prediction is None:
            return [None] * len(self.raws)
        if isinstance(prediction, np.ndarray):
            return [None if value != value else value for value in prediction.tolist()]
        return list(prediction)

    def prediction_column(self) -> Sequence[Any]:
        """A numeric prediction as a float64 array (NaN: none), else the values of :meth:`predictions`."""
        return self._prediction if isinstance(self._prediction, np.ndarray) else self.predictions()

    def part(self, start: int, stop: int) -> ColumnBlock:
        """The block of its messages ``start`` to ``stop`` (no holes; views of its columns)."""
        part = object.__new__(ColumnBlock)
        part.schema, part.holes, part._oracle = self.schema, (), self._oracle
        part.raws = self.raws[start:stop]
        part._numeric = self._numeric[:, start:stop]
        part._categorical = [column[start:stop] for column in self._categorical]
        part._event_ids, part._times = self._event_ids[start:stop], self._times[start:stop]
        part._prediction = None if self._prediction is None else self._prediction[start:stop]
        part._unknown = None if self._unknown is None else self._unknown[start:stop]
        return part

    def event_ids(self) -> list[str]:
        return list(self._event_ids)

    def times(self) -> list[float | None]:
        """Each message's ``ts`` (None: the Kafka timestamp is used)."""
        return list(self._times)

    def event(self, index: int) -> PredictionEvent:
        """The message's event, as the one-message decoder gives it (its own decode of the bytes)."""
        return self._oracle(self.raws[index])

    def events(self) -> list[PredictionEvent]:
        return [self._oracle(raw) for raw in self.raws]

    def unknown_fields(self) -> list[tuple[str, ...] | None] | None:
        """Each message's top-level fields outside the contract, as the one-message decoder names them
        (None: none); None when no message of the block has any."""
        return self._unknown


class MixedBlock:
    """Consecutive messages of several schemas, each schema's share one block.

    A partition carries several models, or two versions of one (a canary, an
    A/B split), their messages interleaved. ``parts`` are ``(block, positions)``
    pairs: ``positions`` (ascending int array) are the places of the block's
    messages among the span's messages, which are the parts' together. The
    same interface as a block, in the span's order; ``holes`` as a block's.
    """

    __slots__ = ("parts", "holes", "_owner", "_index")

    #: no single schema: each part has its own
    schema = None

    def __init__(self, parts: list[tuple[PredictionBlock | ColumnBlock, np.ndarray]],
                 holes: tuple[int, ...] = ()) -> None:
        self.parts = parts
        self.holes = holes
        count = sum(len(block) for block, _ in parts)
        owner = np.full(count, -1, dtype=np.intp)
        index = np.zeros(count, dtype=np.intp)
        for number, (block, positions) in enumerate(parts):
            owner[positions] = number
            index[positions] = np.arange(len(block))
        assert owner.min(initial=0) >= 0, "the parts' positions must cover the span"
        self._owner, self._index = owner, index

    def __len__(self) -> int:
        return len(self._owner)

    def owner(self, index: int) -> int:
        """The number of the part holding the message at ``index``."""
        return int(self._owner[index])

    def _in_order(self, values_of: Callable[[PredictionBlock | ColumnBlock], Sequence[Any]]) -> list[Any]:
        out: list[Any] = [None] * len(self._owner)
        for block, positions in self.parts:
            for position, value in zip(positions.tolist(), values_of(block)):
                out[position] = value
        return out

    def predictions(self) -> list[Any]:
        return self._in_order(lambda block: block.predictions())

    def event_ids(self) -> list[str]:
        return self._in_order(lambda block: block.event_ids())

    def times(self) -> list[float | None]:
        """Each message's ``ts`` (None: the Kafka timestamp is used)."""
        return self._in_order(lambda block: block.times())

    def versions(self) -> list[tuple[str, str]]:
        """Each message's (model, model_version)."""
        return self._in_order(lambda block: [(block.schema.model, block.schema.model_version)] * len(block))

    def counts(self) -> list[tuple[tuple[str, str], int]]:
        """How many messages each (model, model_version) has."""
        return [((block.schema.model, block.schema.model_version), len(block)) for block, _ in self.parts]

    def part(self, start: int, stop: int) -> MixedBlock | PredictionBlock | ColumnBlock:
        """The messages ``start`` to ``stop`` (no holes); one block when they are of one schema."""
        parts = []
        for block, positions in self.parts:
            low, high = np.searchsorted(positions, (start, stop)).tolist()
            if low < high:
                parts.append((block.part(low, high), positions[low:high] - start))
        return parts[0][0] if len(parts) == 1 else MixedBlock(parts)

    def event(self, index: int) -> PredictionEvent:
        """The message's event, as the one-message decoder gives it (its own decode of the bytes)."""
        return self.parts[self._owner[index]][0].event(int(self._index[index]))

    def unknown_fields(self) -> list[tuple[str, ...] | None] | None:
        """Each message's top-level fields outside the contract (None: none); None when none has any."""
        if all(block.unknown_fields() is None for block, _ in self.parts):
            return None
        return self._in_order(lambda block: block.unknown_fields() or [None] * len(block))

    def events(self) -> list[PredictionEvent]:
        return self._in_order(lambda block: block.events())


def block_counts(block: PredictionBlock | ColumnBlock | MixedBlock) -> list[tuple[tuple[str, str], int]]:
    """How many messages each (model, model_version) of a block has."""
    if isinstance(block, MixedBlock):
        return block.counts()
    return [((block.schema.model, block.schema.model_version), len(block))]


def _taker(rows: Sequence[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """``itemgetter(*rows)`` that always gives a tuple."""
    if len(rows) > 1:
        return itemgetter(*rows)
    return lambda sequence: tuple(sequence[row] for row in rows)


def native_decoder() -> Any:
    """The compiled block decoder's module (``stream_monitor_decode``), or None.

    It is built and installed by ``make`` (``stream_monitor/_decode_rs``); without
    it, or with ``STREAM_MONITOR_NATIVE_DECODE=0``, blocks are decoded with msgspec
    (the same blocks, more slowly).
    """
    if os.environ.get("STREAM_MONITOR_NATIVE_DECODE", "1") == "0":
        return None
    try:
        import stream_monitor_decode
    except ImportError:
        return None
    return stream_monitor_decode


_FEATURES, _PREDICTION, _TS = attrgetter("features"), attrgetter("prediction"), attrgetter("ts")
_EVENT_ID = attrgetter("event_id")
#: the schema decoders kept (one per (model, version, signal set) in use)
_MAX_BLOCK_DECODERS = 64


class BlockDecoder:
    """Messages of known schemas decoded into blocks: by the compiled decoder into a
    :class:`ColumnBlock` when it is built, else in one msgspec call into a :class:`PredictionBlock`.

    The typed shape is stricter than the input contract: every feature of the
    schema present (a number or null for a numeric one, a string or null for a
    categorical one), no other feature or field, the model and version the
    schema's, ``ts`` a number in range or absent (the compiled decoder also takes
    a boolean as the category "true"/"false" and ``ts`` as an RFC 3339 string in
    its plain forms, with the oracle's values). A message not of that shape
    is decoded on its own by :class:`BatchDecoder` (whose verdicts are the
    oracle's): so a block only ever holds messages the oracle accepts, with
    the values it gives.
    """

    def __init__(self, limits: Limits, oracle: Callable[[bytes | None], PredictionEvent],
                 allowed_models: frozenset[str] | None = None) -> None:
        self.limits = limits
        self._oracle = oracle
        self._allowed = allowed_models
        #: schema -> (decode a JSON array of messages, decode one message)
        self._decoders: dict[BlockSchema, tuple[Any, Any]] = {}
        #: schema -> batches left to skip: its last split found nothing to make a block of
        self._backoff: dict[BlockSchema, int] = {}
        #: schema -> its cuts in a row that found nothing to make a block of
        self._failures: dict[BlockSchema, int] = {}
        self._native = native_decoder()
        #: schema -> the compiled decoder's schema (None: that schema is not for it)
        self._native_schemas: dict[BlockSchema, Any] = {}
        #: schemas whose last batch also held messages of other schemas
        self._mixed: set[BlockSchema] = set()

    def block(self, raws: Sequence[bytes | None], schema: BlockSchema) -> PredictionBlock | ColumnBlock | None:
        """The messages as one block of ``schema``, or None when any is not plainly of it."""
        if not raws or None in raws or (self._allowed is not None and schema.model not in self._allowed):
            return None
        decode = self._decoders.get(schema) or self._decoder(schema)
        if self._native is not None and decode[0] is not _refuse:
            native = self._native_schema(schema)
            decoded = None if native is None else native.decode(raws if isinstance(raws, list) else list(raws), False)
            if decoded is not None:
                return ColumnBlock(schema, raws, decoded, self._oracle)  # type: ignore[arg-type]
        lengths = list(map(len, raws))  # type: ignore[arg-type]
        if min(lengths) == 0 or max(lengths) > self.limits.max_message_bytes:
            return None  # an empty value, or one too long: the oracle says which
        try:
            wires = decode[0](b"[" + b",".join(raws) + b"]")  # type: ignore[arg-type]
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        if len(wires) != len(raws):
            return None  # a message that was itself several values joined by commas
        if not _times_valid(wires):
            return None
        return PredictionBlock(schema, raws, wires, self._oracle)  # type: ignore[arg-type]

    def spans(self, raws: Sequence[bytes | None], schema: BlockSchema, shortest: int | None = None,
              schema_of: Callable[[str, str], BlockSchema | None] | None = None,
              ) -> list[tuple[int, int, PredictionBlock | ColumnBlock | MixedBlock | None]]:
        """The messages cut into consecutive ``(start, stop, block)`` spans, in order.

        A span with a block holds at least ``shortest`` messages of known schemas
        (by default a quarter of the batch, and 64: each span costs one call of
        every detector); a span without one (None) is to be decoded message by message.

        The messages of ``schema`` are taken first. With ``schema_of`` (the
        usual schema of a (model, version), None when it has none), the other
        messages of the batch are tried against the schemas of the other
        models and versions they carry, a few at most: a partition whose
        models (or a canary's two versions) are interleaved still goes in
        blocks, a :class:`MixedBlock` where a span holds several schemas.

        A batch of one schema is one span; a batch with a few messages of no
        known schema is cut around them, but for messages the one-message decoder rejects: those
        stay inside a span, as its block's ``holes`` (the caller sends their
        dead letters), so bad messages spread through a stream do not cut it
        into pieces too short for blocks. A schema whose last cut found no span is not tried
        for the next batches (a partition of models none of which has a schema yet, say).
        """
        count = len(raws)
        skip = self._backoff.get(schema, 0)
        if skip:
            self._backoff[schema] = skip - 1
            return [(0, count, None)]
        if not raws or (self._allowed is not None and schema.model not in self._allowed):
            return [(0, count, None)]
        shortest = max(64, count // 4) if shortest is None else shortest
        listed = raws if isinstance(raws, list) else list(raws)
        # a schema whose last batch held other schemas' messages is read screening them out first
        fits, make = self._fit(schema, listed, screen=schema in self._mixed)
        if fits.all():
            self._mixed.discard(schema)
            return [(0, count, make(None, ()))]
        # each schema tried: (make a block of some of its rows, each batch index's row in its pass or -1)
        passes: list[tuple[Callable[..., PredictionBlock | ColumnBlock], np.ndarray | None]] = [(make, None)]
        owner = np.where(fits, 0, -1).astype(np.intp)
        rejected = np.zeros(count, dtype=np.bool_)
        known = np.zeros(count, dtype=np.bool_)  # a valid message of no schema tried: it cuts the span
        if schema_of is not None:
            self._other_schemas(listed, schema, schema_of, passes, owner, rejected, known)
        if len(passes) > 1:
            if len(self._mixed) >= _MAX_BLOCK_DECODERS:
                self._mixed.clear()
            self._mixed.add(schema)
        else:
            self._mixed.discard(schema)
        taken = owner >= 0
        if int(np.count_nonzero(taken)) >= shortest:
            # too few messages of known schemas for any block: no message is decoded twice to know that
            for index in np.flatnonzero(~taken & ~rejected & ~known).tolist():
                rejected[index] = self._rejected(raws[index])
        blockable = taken | rejected
        # the runs of blockable messages and of the others, as (first, stop) pairs
        cuts = np.flatnonzero(np.diff(blockable.view(np.int8))) + 1
        bounds = [0, *cuts.tolist(), count]
        spans: list[tuple[int, int, PredictionBlock | ColumnBlock | MixedBlock | None]] = []
        start = 0
        for first, stop in zip(bounds, bounds[1:]):
            if blockable[first] and int(np.count_nonzero(taken[first:stop])) >= shortest:
                if start < first:
                    spans.append((start, first, None))
                holes = tuple(np.flatnonzero(rejected[first:stop]).tolist())
                spans.append((first, stop, self._span_block(passes, owner[first:stop], first, holes)))
                start = stop
        if start < count:
            spans.append((start, count, None))
        if len(spans) == 1 and spans[0][2] is None:
            # 1, 2, 4 ... batches skipped after as many cuts in a row without a block: a version's first
            # batch (its schema is learned from it) costs one, a partition that never has blocks little
            failures = self._failures.get(schema, 0) + 1
            if len(self._failures) > _MAX_BLOCK_DECODERS:
                self._failures, self._backoff = {}, {}
            self._failures[schema] = failures
            self._backoff[schema] = min(_BACKOFF_BATCHES, 2 ** (failures - 1))
        else:
            self._failures.pop(schema, None)
        return spans

    def _fit(self, schema: BlockSchema, raws: list[bytes | None], screen: bool = False,
             ) -> tuple[np.ndarray, Callable[[Sequence[int] | None, tuple[int, ...]], PredictionBlock | ColumnBlock]]:
        """Which messages are plainly of ``schema`` (a bool array), and how to make a block of some
        of them: ``make(rows, holes)`` (``rows`` None: all of them). With ``screen``, the compiled
        decoder reads each message's model and version first (cheap where many are of other schemas)."""
        native = self._native_schema(schema) if self._native is not None else None
        if native is not None and (self._decoders.get(schema) or self._decoder(schema))[0] is not _refuse:
            # the compiled decoder marks the messages not of the schema and decodes the others
            decoded = native.decode(raws, True, screen)

            def make_columns(rows: Sequence[int] | None, holes: tuple[int, ...]) -> ColumnBlock:
                return ColumnBlock(schema, raws, decoded, self._oracle, holes=holes,  # type: ignore[arg-type]
                                   rows=rows)
            return np.frombuffer(decoded[5], dtype=np.bool_), make_columns
        block = self.block(raws, schema)
        if block is not None:
            return np.ones(len(raws), dtype=np.bool_), lambda rows, holes: block
        one = (self._decoders.get(schema) or self._decoder(schema))[1]
        wires = [self._one(one, raw) for raw in raws]

        def make_wires(rows: Sequence[int] | None, holes: tuple[int, ...]) -> PredictionBlock:
            if rows is None:
                return PredictionBlock(schema, raws, wires, self._oracle, holes)  # type: ignore[arg-type]
            return PredictionBlock(schema, [raws[row] for row in rows],  # type: ignore[misc]
                                   [wires[row] for row in rows], self._oracle, holes)
        return np.array([wire is not None for wire in wires], dtype=np.bool_), make_wires

    def _other_schemas(self, raws: list[bytes | None], first: BlockSchema,
                       schema_of: Callable[[str, str], BlockSchema | None],
                       passes: list[tuple[Callable[..., PredictionBlock | ColumnBlock], np.ndarray | None]],
                       owner: np.ndarray, rejected: np.ndarray, known: np.ndarray) -> None:
        """The messages not of ``first`` tried against the schemas of their (model, version)s.

        The first message left is decoded on its own to know its (model, version);
        if that has a schema not tried yet, every message left is tried against
        it. At most :data:`_MAX_SCHEMAS` schemas and :data:`_PROBES` such
        decodes per batch: a partition of very many models, or of models
        without a schema yet, costs little more than one pass.
        """
        left = np.flatnonzero(owner < 0)
        tried = {first}
        probes = 0
        while len(left) and len(passes) < _MAX_SCHEMAS and probes < _PROBES:
            probes += 1
            probe = int(left[0])
            try:
                event = self._oracle(raws[probe])
            except BadMessage:
                rejected[probe] = True
                left = left[1:]
                continue
            schema = schema_of(event.model, event.model_version)
            if schema is None or schema in tried or (self._allowed is not None and schema.model not in self._allowed):
                known[probe] = True
                left = left[1:]
                continue
            tried.add(schema)
            fits, make = self._fit(schema, [raws[index] for index in left.tolist()], screen=True)
            row_of = np.full(len(owner), -1, dtype=np.intp)
            row_of[left] = np.arange(len(left))
            passes.append((make, row_of))
            owner[left[fits]] = len(passes) - 1
            if not fits[0]:
                known[probe] = True  # of a known version, but not of its usual shape
            left = left[~fits]
            if len(left) and int(left[0]) == probe:
                left = left[1:]

    @staticmethod
    def _span_block(passes: list[tuple[Callable[..., PredictionBlock | ColumnBlock], np.ndarray | None]],
                    owner: np.ndarray, first: int, holes: tuple[int, ...],
                    ) -> PredictionBlock | ColumnBlock | MixedBlock:
        """The block of a span (its batch indices from ``first``, their pass numbers ``owner``, -1 for
        the ``holes``): of one schema, or a :class:`MixedBlock` of each schema's messages."""
        kept = owner[owner >= 0]
        numbers = np.unique(kept)
        if len(numbers) == 1:
            make, row_of = passes[int(numbers[0])]
            indices = np.flatnonzero(owner >= 0) + first
            rows = indices if row_of is None else row_of[indices]
            return make(rows.tolist(), holes)
        parts = []
        for number in numbers.tolist():
            make, row_of = passes[number]
            positions = np.flatnonzero(kept == number)
            indices = np.flatnonzero(owner == number) + first
            rows = indices if row_of is None else row_of[indices]
            parts.append((make(rows.tolist(), ()), positions))
        parts.sort(key=lambda part: int(part[1][0]))
        return MixedBlock(parts, holes)

    def _rejected(self, raw: bytes | None) -> bool:
        """Whether the one-message decoder rejects the message."""
        try:
            self._oracle(raw)
        except BadMessage:
            return True
        return False

    def _native_schema(self, schema: BlockSchema) -> Any:
        """The compiled decoder's schema for ``schema``."""
        if schema in self._native_schemas:
            return self._native_schemas[schema]
        if len(self._native_schemas) >= _MAX_BLOCK_DECODERS:
            self._native_schemas.clear()
        limits = self.limits
        native = self._native.Schema(list(schema.numeric), list(schema.categorical), list(schema.ignored),
                                     schema.model, schema.model_version, schema.prediction,
                                     limits.max_string_length, limits.max_message_bytes, _LATEST_TS,
                                     not limits.strict)
        self._native_schemas[schema] = native
        return native

    def _one(self, decode: Any, raw: bytes | None) -> Any:
        """One message decoded with the schema's shape, or None if it is not plainly of it."""
        if raw is None or not 0 < len(raw) <= self.limits.max_message_bytes:
            return None
        try:
            wire = decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        return wire if _times_valid((wire,)) else None

    def _decoder(self, schema: BlockSchema) -> tuple[Any, Any]:
        limits = self.limits
        if len(self._decoders) >= _MAX_BLOCK_DECODERS:
            self._decoders.clear()
        names = (*schema.numeric, *schema.categorical, *schema.ignored)
        plain = (len(names) <= limits.max_features and len(set(names)) == len(names)
                 and all(0 < len(name) <= limits.max_string_length for name in names)
                 and 0 < len(schema.model) <= limits.max_string_length
                 and 0 < len(schema.model_version) <= limits.max_string_length)
        if not plain:
            self._decoders[schema] = (_refuse, _refuse)
            return self._decoders[schema]
        text = Annotated[str, msgspec.Meta(max_length=limits.max_string_length)]
        name = Annotated[str, msgspec.Meta(min_length=1, max_length=limits.max_string_length)]
        kinds: dict[str, Any] = {"numeric": float | None, "categorical": text | None,
                                 "ignored": float | text | None, "absent": None}
        # struct fields are Python identifiers: each feature is a generated field renamed to its name
        # on the wire (a name such as "amount-usd" or "user id" is a valid feature)
        kinds_in_order = ([float | None] * len(schema.numeric) + [text | None] * len(schema.categorical)
                          + [float | text | None] * len(schema.ignored))
        fields_in_order = [f"f{index}" for index in range(len(names))]
        features = msgspec.defstruct(
            "WireFeatures", list(zip(fields_in_order, kinds_in_order)),
            rename=dict(zip(fields_in_order, names)), forbid_unknown_fields=True, gc=False)
        fields: list[Any] = [
            ("event_id", name),
            ("model", Literal[schema.model]),  # type: ignore[valid-type]
            # no version (or null) is "unknown" to the oracle, as is "unknown" itself
            ("model_version", Literal[schema.model_version])  # type: ignore[valid-type]
            if schema.model_version != "unknown" else ("model_version", Literal["unknown"] | None, None),
            ("features", features),
            ("ts", float | None, None),
            ("prediction", kinds[schema.prediction], None),
        ]
        wire = msgspec.defstruct("WireBlockPrediction", fields, forbid_unknown_fields=True, gc=False,
                                 kw_only=True)
        self._decoders[schema] = (msgspec.json.Decoder(list[wire]).decode, msgspec.json.Decoder(wire).decode)
        return self._decoders[schema]


#: the most batches a schema is not tried for after cuts that found no block
_BACKOFF_BATCHES = 16
#: schemas tried per batch (each one more pass over the messages not taken yet)
_MAX_SCHEMAS = 8
#: messages decoded on their own per batch to learn the (model, version) of those not taken yet
_PROBES = 16


def _times_valid(wires: Sequence[Any]) -> bool:
    """Every ``ts`` given is epoch seconds within the contract's range."""
    times = [ts for ts in map(_TS, wires) if ts is not None]
    return not times or (0.0 <= min(times) and max(times) <= _LATEST_TS)


def _refuse(_data: bytes) -> Any:
    raise msgspec.ValidationError("not a schema the block path takes")
