"""The batch decoder gives the one-message decoder's verdict for every message.

The oracle is :func:`stream_monitor.events.decode_prediction` (through
``Decoder.prediction``, which adds the model allowlist): for the same bytes the
batch path must give the same event (every field, ``-0.0`` and types included)
or the same reject (reason, detail and raw bytes: what the dead letter carries).
"""

from __future__ import annotations

import itertools
import random

import orjson
import pytest

from stream_monitor.config import Settings
from stream_monitor.errors import BadMessage
from stream_monitor.pipeline import Decoder
from stream_monitor.simulate import Scenario, generate

#: small limits, so the length and count checks are reached by short messages
LIMITS = {"max_message_bytes": 2000, "max_string_length": 12, "max_features": 5}

BASE = {"event_id": "e1", "model": "m", "model_version": "2", "ts": 1764000000.25,
        "features": {"x": 1.5, "c": "DE"}, "prediction": 0.75}

#: JSON texts that go anywhere a value goes
VALUES = [
    b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1e-400", b"1.7976931348623157e308",
    b"4.9e-324", b"-0", b"-0.0", b"0", b"3", b"3.0", b"1E5", b"1e+5", b"01", b"1.", b".5", b"+1", b"0x10",
    b"9223372036854775807", b"9223372036854775808", b"-9223372036854775809", b"18446744073709551615",
    b"18446744073709551616", b"1" * 30, b"1" * 400, b"true", b"false", b"null", b'""', b'"a"',
    b'"' + b"a" * 12 + b'"', b'"' + b"a" * 13 + b'"', '"' + "\u00e9" * 12 + '"', '"' + "\u00e9" * 13 + '"',
    '"' + "\U0001f600" * 12 + '"', '"' + "\U0001f600" * 13 + '"', b'"\\ud800"', b'"\\udc00x"',
    b'"\\ud83d\\ude00"', b'"\\ud800\\u0041"', b'"\\udfff"', b'"\\ud800\\ud800"', b'"\\uDBFF\\uDFFF"', b'"a\\ud800"',
    b'"\\u00e9"', b'"\\u0000"', b'"a\\"b"', b'"tab\\t"', b'"\xc3\x28"', b'"\xff"', b'"\xed\xa0\x80"',
    b"[1]", b"[]", b"{}", b'{"a": 1}', b'"2025-11-24T16:00:00Z"', b'"2025-11-24T16:00:00.123456789+01:00"',
    b'"2025-11-24T16:00:00"', b'"2025-13-40T16:00:00Z"', b'"9999-12-31T23:59:59Z"', b"1764000000123",
    b"-5", b"253402300799", b"253402300799.5", b"253402300800", b"1764000000", b"1.5", b"abc", b"",
]


def _with(field: str, value: bytes) -> bytes:
    """BASE with one field's JSON text replaced (``features.x``: a feature value)."""
    document = dict(BASE)
    marker = "\x00MARK\x00"
    if field.startswith("features."):
        document["features"] = {**BASE["features"], field.split(".", 1)[1]: marker}
    else:
        document[field] = marker
    return orjson.dumps(document).replace(orjson.dumps(marker), value)


def _corpus() -> list[bytes]:
    fields = ["event_id", "model", "model_version", "ts", "prediction", "features", "features.x",
              "features.new", "unknown", "feature"]
    cases = [_with(field, value if isinstance(value, bytes) else value.encode())
             for field, value in itertools.product(fields, VALUES)]
    base = orjson.dumps(BASE)
    cases += [
        base, b"", b" ", b"null", b"1", b'"text"', b"[1, 2]", b"{}", base + b" ", b" " + base, b"\xef\xbb\xbf" + base,
        base[:-1], base + b"x", base + base, base.replace(b"{", b"{\n  ", 1), base.replace(b"e1", b"\xc3\x28"),
        b'{"event_id": "e", "model": "m"}', b'{"event_id": "e"}', b'{"model": "m"}',
        b'{"event_id": null, "model": "m"}', b'{"event_id": "e", "model": "m", "features": null}',
        b'{"event_id": "e", "model": "m", "features": {}}', b'{"event_id": "e", "model": "m", "model_version": null}',
        b'{"event_id": "a", "event_id": "b", "model": "m"}', b'{"event_id": "a", "event_id": 1, "model": "m"}',
        b'{"event_id": 1, "event_id": "a", "model": "m"}',
        b'{"event_id": "e", "model": "m", "features": {"x": 1, "x": "a"}}',
        b'{"event_id": "e", "model": "m", "features": {"x": "a", "x": 1}}',
        b'{"event_id": "e", "model": "m", "features": {"a":1,"b":1,"c":1,"d":1,"e":1}}',
        b'{"event_id": "e", "model": "m", "features": {"a":1,"b":1,"c":1,"d":1,"e":1,"f":1}}',
        b'{"event_id": "e", "model": "m", "features": {"a":1,"b":1,"c":1,"d":1,"e":1,"e":2}}',
        b'{"event_id": "e", "model": "m", "features": {"": 1}}',
        b'{"event_id": "e", "model": "m", "features": {"' + b"n" * 12 + b'": 1}}',
        b'{"event_id": "e", "model": "m", "features": {"' + b"n" * 13 + b'": 1}}',
        '{"event_id": "e", "model": "m", "features": {"\u00e9\u00e9": true, "b": false}}'.encode(),
        b'{"event_id": "e", "model": "m", "features": {"b": true}, "prediction": false}',
        b'{"event_id": "e", "model": "m", "features": {"b": true}, "unknown": 1}',
        b'{"event_id": "e", "model": "m", "features": {"b": true, "x": NaN}}',
        b'{"event_id": "e", "model": "m", "prediction": true, "ts": true}',
        b'{"event_id": "e", "model": "m", "label": 1}',
        b'{"event_id": "e", "model": "m", "features": [1, 2]}',
        b'{"event_id": "e", "model": "m", "features": {"a": {"b": 1}}}',
        b'{"event_id": "e", "model": "m", "features": {"a": [1]}, "prediction": NaN}',
        b'{"event_id": "e", "model": "m", "model_version": "x", "features": {"a": "' + b"z" * 2000 + b'"}}',
        b'{"event_id": "e", "model": "other"}', b'{"event_id": "e", "model": "other", "prediction": NaN}',
        b'{"event_id":"e","model":"m","features":{"t":"true"},"prediction":"false"}',
    ]
    return cases


def _fuzzed(seed: int, count: int) -> list[bytes]:
    """Valid simulated messages with random bytes changed, cut or repeated."""
    rng = random.Random(seed)
    messages = [orjson.dumps(event) for event, _ in
                generate(Scenario(n_events=count, n_numeric=3, n_categorical=1, seed=seed))]
    out = []
    for message in messages:
        data = bytearray(message)
        action = rng.randrange(6)
        where = rng.randrange(len(data))
        if action == 0:
            data[where] = rng.choice(b'{}[]",:0123456789.eE-+ntrufalsNI\\\xff\xc3')
        elif action == 1:
            del data[where:where + rng.randrange(1, 8)]
        elif action == 2:
            data[where:where] = data[rng.randrange(len(data)):][:rng.randrange(1, 12)]
        elif action == 3:
            data = data[:where]
        out.append(bytes(data))
    return out


def _outcome(result: object) -> tuple:
    """What must match exactly: the event's fields with their types, or the reject and its bytes."""
    if isinstance(result, BadMessage):
        return ("reject", result.reason, result.detail, result.raw)
    assert result is not None
    return ("event", repr(result), type(result.ts), tuple(map(type, result.features.values())),
            type(result.prediction))


def _oracle(decoder: Decoder, raw: bytes | None) -> tuple:
    try:
        return _outcome(decoder.prediction(raw))
    except BadMessage as bad:
        return _outcome(bad)


SETTINGS = [
    Settings(limits=LIMITS),
    Settings(limits=LIMITS, input={"strict": True}),
    Settings(limits=LIMITS, allowed_models=["m"]),
    Settings(),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=["small-limits", "strict", "allowlist", "defaults"])
def test_every_edge_message_gets_the_oracles_event_or_reject(settings: Settings) -> None:
    decoder = Decoder(settings)
    corpus = _corpus() + [None]  # type: ignore[list-item]
    batch = decoder.predictions(corpus)
    assert len(batch) == len(corpus)
    mismatches = [(raw, _oracle(decoder, raw), _outcome(got))
                  for raw, got in zip(corpus, batch) if _outcome(got) != _oracle(decoder, raw)]
    assert mismatches == []
    # the corpus reaches both sides: many rejects of many reasons, and accepted events
    reasons = {got.reason for got in batch if isinstance(got, BadMessage)}
    accepted = sum(not isinstance(got, BadMessage) for got in batch)
    assert len(reasons) >= 8 and accepted >= 60


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzzed_messages_get_the_oracles_verdict(seed: int) -> None:
    decoder = Decoder(Settings(limits={**LIMITS, "max_string_length": 40}))
    corpus = _fuzzed(seed, 1500)
    batch = decoder.predictions(corpus)
    assert [_outcome(got) for got in batch] == [_oracle(decoder, raw) for raw in corpus]


def test_random_doubles_and_integers_decode_to_the_same_floats() -> None:
    rng = random.Random(5)
    numbers = [repr(rng.uniform(-1e6, 1e6)) for _ in range(300)]
    numbers += [repr(rng.random() * 10.0 ** rng.randrange(-320, 308)) for _ in range(300)]
    numbers += [str(rng.getrandbits(rng.randrange(1, 200)) * rng.choice([-1, 1])) for _ in range(300)]
    numbers += [f"{rng.randrange(10**17)}e{rng.randrange(-330, 300)}" for _ in range(300)]
    decoder = Decoder(Settings())
    corpus = [b'{"event_id":"e","model":"m","ts":1,"features":{"x":' + n.encode() + b'},"prediction":'
              + n.encode() + b"}" for n in numbers]
    batch = decoder.predictions(corpus)
    assert [_outcome(got) for got in batch] == [_oracle(decoder, raw) for raw in corpus]
    assert sum(isinstance(got, BadMessage) for got in batch) < 100


def test_simulated_messages_take_the_fast_path_and_equal_the_oracle() -> None:
    decoder = Decoder(Settings())
    corpus = [orjson.dumps(event) for event, _ in generate(Scenario(n_events=300, seed=4))]
    slow_calls = []
    oracle = decoder._batch._oracle
    decoder._batch._oracle = lambda raw: slow_calls.append(raw) or oracle(raw)
    batch = decoder.predictions(corpus)
    assert [_outcome(got) for got in batch] == [_oracle(decoder, raw) for raw in corpus]
    assert slow_calls == []


LABEL_BASE = {"event_id": "e1", "model": "m", "label": 1, "ts": 1764000000.25}


def _label_corpus() -> list[bytes]:
    cases = []
    for field, value in itertools.product(["event_id", "model", "label", "ts", "unknown"], VALUES):
        document = dict(LABEL_BASE)
        document[field] = "\x00MARK\x00"
        text = value if isinstance(value, bytes) else value.encode()
        cases.append(orjson.dumps(document).replace(orjson.dumps("\x00MARK\x00"), text))
    base = orjson.dumps(LABEL_BASE)
    cases += [base, b"", b"null", b"[]", base[:-1], base + b"x", b'{"event_id": "e", "model": "m"}',
              b'{"event_id": "e", "model": "m", "label": null}', b'{"event_id": "e", "label": 1}',
              b'{"event_id": "e", "model": "m", "label": 1, "label": "x"}',
              b'{"event_id": "e", "model": "m", "label": "x", "label": 0}',
              b'{"event_id": "e", "model": "m", "label": "' + b"z" * 3000 + b'"}']
    return cases


def _label_oracle(decoder: Decoder, raw: bytes | None) -> tuple:
    try:
        label = decoder.label(raw)
    except BadMessage as bad:
        return _outcome(bad)
    return ("label", repr(label), type(label.label), type(label.ts))


@pytest.mark.parametrize("settings", SETTINGS, ids=["small-limits", "strict", "allowlist", "defaults"])
def test_every_edge_label_gets_the_oracles_label_or_reject(settings: Settings) -> None:
    decoder = Decoder(settings)
    corpus = _label_corpus() + [None] + _fuzzed_labels(7, 500)  # type: ignore[list-item]
    got = [_outcome(o) if isinstance(o, BadMessage) else ("label", repr(o), type(o.label), type(o.ts))
           for o in decoder.labels(corpus)]
    assert got == [_label_oracle(decoder, raw) for raw in corpus]
    assert sum(g[0] == "label" for g in got) >= 40 and len({g[1] for g in got if g[0] == "reject"}) >= 6


def _fuzzed_labels(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for number in range(count):
        data = bytearray(orjson.dumps({"event_id": f"e{number}", "model": "m", "label": rng.choice([0, 1, True, "a"]),
                                       "ts": 1764000000 + number}))
        where = rng.randrange(len(data))
        data[where] = rng.choice(b'{}[]",:0123456789.eE-+ntrufalsNI\\\xff')
        out.append(bytes(data))
    return out
