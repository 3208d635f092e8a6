"""The batch decoder gives the one-message decoder's verdict for every message.

The oracle is :func:`stream_monitor.events.decode_prediction` (through
``Decoder.prediction``, which adds the model allowlist): for the same bytes the
batch path must give the same event (every field, ``-0.0`` and types included)
or the same reject (reason, detail and raw bytes: what the dead letter carries).
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import orjson
import pytest

from stream_monitor.config import Settings
from stream_monitor.errors import BadMessage
from stream_monitor.events.batch import BlockSchema, ColumnBlock, PredictionBlock
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


# -- the block path: a batch of one schema in one decode -------------------------------------------

#: schemas BASE-like messages may be decoded under (the corpus's model "m", version "2")
SCHEMAS = [
    BlockSchema("m", "2", ("x",), ("c",), (), "numeric"),
    BlockSchema("m", "2", ("x", "new"), ("c",), (), "numeric"),
    BlockSchema("m", "2", (), ("c",), ("x",), "ignored"),
    BlockSchema("m", "2", ("x",), (), ("c",), "categorical"),
    BlockSchema("m", "2", ("x",), ("c",), (), "absent"),
    BlockSchema("m", "unknown", ("x",), ("c",), (), "numeric"),
]


def _block_values(block: PredictionBlock | ColumnBlock, index: int) -> tuple:
    """What the monitor takes from a block for one message: its features by name, prediction and ts.

    A compiled decoder's block gives a numeric column as float64 with NaN for null, and
    keeps no ignored feature's value (the monitor takes none): those are not in ``features``.
    """
    schema = block.schema
    names = (*schema.numeric, *schema.categorical, *schema.ignored)
    features = {}
    for name, column in zip(names, block.columns()):
        value = column[index]
        if isinstance(column, np.ndarray):
            assert column.dtype == np.float64 and name in schema.numeric
            value = None if np.isnan(value) else float(value)
        features[name] = value
    prediction = block.predictions()[index]
    column = block.prediction_column()
    if isinstance(column, np.ndarray):
        assert (prediction is None and np.isnan(column[index])) or prediction == column[index]
    return features, prediction, block.times()[index]


@pytest.fixture(params=["native", "msgspec"])
def block_decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each block test with the compiled decoder (when built) and with msgspec alone."""
    if request.param == "native":
        pytest.importorskip("stream_monitor_decode", reason="the compiled block decoder is not built")
        monkeypatch.delenv("STREAM_MONITOR_NATIVE_DECODE", raising=False)
    else:
        monkeypatch.setenv("STREAM_MONITOR_NATIVE_DECODE", "0")
    return request.param


def _check_block(decoder: Decoder, raws: list[bytes | None], schema: BlockSchema) -> bool:
    """A message the block path takes is one the oracle accepts, with the same values; True if taken."""
    block = decoder.block(raws, schema)
    if block is None:
        return False
    assert len(block) == len(raws)
    for index, raw in enumerate(raws):
        event = decoder.prediction(raw)  # raises if the oracle rejects what the block took
        features, prediction, ts = _block_values(block, index)
        assert (event.model, event.model_version) == (schema.model, schema.model_version)
        assert set(event.features) == set(schema.numeric + schema.categorical + schema.ignored)
        for name, value in event.features.items():
            if name not in features:
                assert isinstance(block, ColumnBlock) and name in schema.ignored
                continue
            assert type(features[name]) is type(value) and repr(features[name]) == repr(value), name
        assert type(prediction) is type(event.prediction) and repr(prediction) == repr(event.prediction)
        assert type(ts) is type(event.ts) and repr(ts) == repr(event.ts)
        unknown = block.unknown_fields()
        assert (unknown[index] if unknown is not None else None) == (event.unknown_fields or None)
        assert repr(block.event(index)) == repr(event)
        # the schema's kinds: the monitor routes these columns whole
        assert all(features[name] is None or type(features[name]) is float for name in schema.numeric)
        assert all(features[name] is None or type(features[name]) is str for name in schema.categorical)
        if schema.prediction == "absent":
            assert prediction is None
    return True


@pytest.mark.parametrize("settings", SETTINGS, ids=["small-limits", "strict", "allowlist", "defaults"])
@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: f"{s.prediction}-{len(s.numeric)}-{s.model_version}")
def test_the_block_path_takes_only_messages_the_oracle_accepts_with_its_values(
        settings: Settings, schema: BlockSchema, block_decoder: str) -> None:
    decoder = Decoder(settings)
    corpus = _corpus() + [None] + _fuzzed(11, 300)  # type: ignore[list-item]
    corpus += [raw.replace(b'"model_version":"2",', b"") for raw in corpus if raw]
    corpus += [raw.replace(b',"prediction":0.75', b"") for raw in corpus if raw and b',"prediction":0.75' in raw]
    taken = [raw for raw in corpus if _check_block(decoder, [raw], schema)]
    # the usual message of the schema is taken; most of the corpus is not
    assert 10 <= len(taken) < len(corpus) // 4
    if block_decoder == "native":
        # the compiled decoder takes what msgspec takes but a negative zero (`-0` is 0.0 to the oracle)
        left = [raw for raw in taken if not isinstance(decoder.block([raw], schema), ColumnBlock)]
        assert all(b":-0," in raw or b":-0}" in raw or b":-0.0" in raw for raw in left), left
        assert len(left) < len(taken) // 4


def test_a_batch_goes_the_block_path_only_when_every_message_fits(block_decoder: str) -> None:
    decoder = Decoder(Settings())
    events = [event for event, _ in generate(Scenario(n_events=400, n_numeric=3, n_categorical=1, seed=6))]
    raws = [orjson.dumps(event) for event in events]
    first = decoder.prediction(raws[0])
    schema = BlockSchema(first.model, first.model_version, ("f00", "f01", "f02"), ("c00",), (), "numeric")
    assert _check_block(decoder, raws, schema)
    nulls = [orjson.dumps({**e, "features": {**e["features"], "f01": None}}) if i % 7 == 0 else raws[i]
             for i, e in enumerate(events)]
    assert _check_block(decoder, nulls, schema)  # missing values are values of the block
    for bad in (b"", b"{}", b'{"event_id": "e", "model": "fraud", "prediction": NaN}', raws[1] + b"," + raws[2],
                raws[1].replace(b'"f00"', b'"f09"'), raws[1].replace(b'"c00":"', b'"c00":1,"x":"'),
                raws[1].replace(b'"model_version":"1"', b'"model_version":"2"')):
        mixed = raws[:200] + [bad] + raws[200:]
        assert decoder.block(mixed, schema) is None, bad
    # an RFC 3339 time and a field outside the contract: the compiled decoder takes them (the oracle's
    # values, the field named), the msgspec shape does not
    other = raws[1].replace(b'"ts":', b'"ts":"2025-11-24T16:00:00Z","t":')
    assert (decoder.block(raws[:200] + [other] + raws[200:], schema) is None) == (block_decoder == "msgspec")
    assert _check_block(decoder, raws[:200] + [other] + raws[200:], schema) == (block_decoder == "native")
    assert decoder.block(raws[:3] + [None] + raws[3:10], schema) is None  # type: ignore[list-item]
    assert decoder.block([], schema) is None


def test_block_numbers_are_the_oracles_floats(block_decoder: str) -> None:
    """Doubles of every magnitude, integers past 64 bits and exponent forms: the block's floats, bit for bit."""
    rng = random.Random(8)
    numbers = [repr(rng.uniform(-1e6, 1e6)) for _ in range(300)]
    numbers += [repr(rng.random() * 10.0 ** rng.randrange(-320, 308)) for _ in range(300)]
    numbers += [str(rng.getrandbits(rng.randrange(1, 200)) * rng.choice([-1, 1])) for _ in range(300)]
    numbers += [f"{rng.randrange(1, 10**17)}e{rng.randrange(-330, 300)}" for _ in range(300)]
    numbers += [f"{rng.randrange(1, 10**25)}.{rng.randrange(10**30)}E-{rng.randrange(40)}" for _ in range(300)]
    decoder = Decoder(Settings())
    oracle_floats = []
    corpus = []
    for number in numbers:
        raw = (b'{"event_id":"e","model":"m","model_version":"1","features":{"x":' + number.encode()
               + b'},"prediction":' + number.encode() + b"}")
        try:
            event = decoder.prediction(raw)
        except BadMessage:
            continue  # out of range: not a block's message
        corpus.append(raw)
        oracle_floats.append(event.features["x"])
    assert len(corpus) > 1200
    schema = BlockSchema("m", "1", ("x",), (), (), "numeric")
    block = decoder.block(corpus, schema)
    assert block is not None and isinstance(block, ColumnBlock) == (block_decoder == "native")
    column = np.asarray(block.columns()[0], dtype=np.float64)
    expected = np.array(oracle_floats, dtype=np.float64)
    assert column.tobytes() == expected.tobytes()
    assert np.asarray(block.prediction_column(), dtype=np.float64).tobytes() == expected.tobytes()


def test_a_batch_with_a_few_other_messages_is_cut_into_blocks_around_them(block_decoder: str) -> None:
    """Other valid messages cut the batch; rejected ones stay inside a block as its holes."""
    decoder = Decoder(Settings())
    events = [event for event, _ in generate(Scenario(n_events=1000, n_numeric=3, n_categorical=1, seed=12))]
    raws: list[bytes | None] = [orjson.dumps(event) for event in events]
    first = decoder.prediction(raws[0])  # type: ignore[arg-type]
    schema = BlockSchema(first.model, first.model_version, ("f00", "f01", "f02"), ("c00",), (), "numeric")
    # rejects at 300, 301, 999; valid messages of another shape at 600 (a new feature), 601 (a field
    # outside the contract)
    others = {300: b"not json", 301: None, 600: raws[600].replace(b'"f00"', b'"f09"'),  # type: ignore[union-attr]
              601: raws[601].replace(b'"ts":', b'"ts":-0.0,"t":'), 999: b""}  # type: ignore[union-attr]
    for index, raw in others.items():
        raws[index] = raw
    spans = decoder.spans(raws, schema)
    assert [(start, stop, block.holes if block else None) for start, stop, block in spans] == [
        (0, 600, (300, 301)), (600, 602, None), (602, 1000, (397,))]
    kind = ColumnBlock if block_decoder == "native" else PredictionBlock
    for start, stop, block in spans:
        if block is None:
            continue
        kept = [index for index in range(start, stop) if index - start not in block.holes]
        assert isinstance(block, kind) and len(block) == len(kept) and block.raws == [raws[i] for i in kept]
        for index, at in enumerate(kept):
            event = decoder.prediction(raws[at])
            features, prediction, ts = _block_values(block, index)
            assert features == event.features and prediction == event.prediction and ts == event.ts
            assert block.event_ids()[index] == event.event_id


@pytest.mark.parametrize("prediction", [b'"unknown"', b'"x"', b"0.5", b"true"])
def test_a_prediction_where_the_schema_has_none_is_not_of_the_block(block_decoder: str, prediction: bytes) -> None:
    """A schema without a prediction takes only null there: the message must start that signal."""
    decoder = Decoder(Settings())
    schema = BlockSchema("m", "2", ("x",), ("c",), (), "absent")
    raw = (b'{"event_id":"e","model":"m","model_version":"2","features":{"x":1,"c":"a"},"prediction":'
           + prediction + b"}")
    assert decoder.block([raw], schema) is None
    assert decoder.prediction(raw).prediction is not None
    assert _check_block(decoder, [raw.replace(b'"prediction":' + prediction, b'"prediction":null')], schema)


@pytest.mark.parametrize("name", ["amount-usd", "user id", "1x", "x.y", "__x", "class", "\u00e9t\u00e9"])
def test_feature_names_that_are_not_python_identifiers_go_in_blocks(block_decoder: str, name: str) -> None:
    decoder = Decoder(Settings())
    schema = BlockSchema("m", "2", (name,), ("c",), (), "numeric")
    raws = [orjson.dumps({"event_id": f"e{i}", "model": "m", "model_version": "2",
                          "features": {name: i + 0.5, "c": "a"}, "prediction": 0.25}) for i in range(80)]
    assert _check_block(decoder, raws, schema)
    assert [(start, stop) for start, stop, block in decoder.spans(raws + [b"bad"], schema) if block] == [(0, 81)]


def _header_variants(raws: list[bytes]) -> list[bytes]:
    """Messages whose model and version differ from the corpus's in every way the screen reads:
    other strings, null, numbers, escapes, spaces, the fields late or twice or nested."""
    out = []
    for raw in raws:
        for old, new in ((b'"model":"m"', b'"model":"other"'), (b'"model":"m"', b'"model":null'),
                         (b'"model":"m"', b'"model":1'), (b'"model":"m"', b'"model":"\\u006d"'),
                         (b'"model":"m"', b'"model" : "m2"'), (b'"model":"m"', b'"model":"o\\"x"'),
                         (b'"model_version":"2"', b'"model_version":"3"'),
                         (b'"model_version":"2"', b'"model_version":null'),
                         (b'"model_version":"2"', b'"model_version":"unknown"'),
                         (b'"model_version":"2"', b'"model_version":2'),
                         (b'"model_version":"2"', b'"model_version":"\\u0032"'),
                         (b'"event_id":"e1"', b'"event_id":"e\\"1"'),
                         (b'"event_id":"e1",', b'"event_id":"e1","model":"other",'),
                         (b'"event_id":"e1",', b'"x":{"model":"other"},"event_id":"e1",'),
                         (b'"event_id":"e1",', b'"x":[1,"other"],"event_id":"e1",'),
                         (b'{"event_id"', b' \n{ "event_id"')):
            if old in raw:
                out.append(raw.replace(old, new, 1))
    return out


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: f"{s.prediction}-{len(s.numeric)}-{s.model_version}")
def test_screening_model_and_version_never_changes_what_fits_or_its_values(schema: BlockSchema) -> None:
    """The compiled decoder's screen (a message's leading model and version read before the whole
    message) only leaves out messages the full read refuses: the same fits and the same columns."""
    pytest.importorskip("stream_monitor_decode", reason="the compiled block decoder is not built")
    from stream_monitor.events.batch import native_decoder
    native = native_decoder().Schema(list(schema.numeric), list(schema.categorical), list(schema.ignored),
                                     schema.model, schema.model_version, schema.prediction, 12, 2000, 4102444800.0)
    corpus = [raw for raw in _corpus() + _fuzzed(11, 300) if raw]
    corpus += [raw.replace(b'"model_version":"2",', b"") for raw in corpus]
    corpus += _header_variants(corpus)
    full, screened = native.decode(corpus, True, False), native.decode(corpus, True, True)
    fits = np.frombuffer(full[5], dtype=np.bool_)
    assert full[5] == screened[5] and 0 < fits.sum() < len(corpus) // 2
    assert full[0] == screened[0] and full[1:5] == screened[1:5]


def _interleaved(decoder: Decoder) -> tuple[list[bytes | None], dict[tuple[str, str], BlockSchema]]:
    """1,000 messages of three (model, version)s interleaved at random (two versions of "fraud", one of
    "churn"), and their schemas."""
    rng = random.Random(21)
    streams = {key: iter(generate(Scenario(models=(key[0],), model_version=key[1], n_events=1000, n_numeric=3,
                                           n_categorical=1, seed=21 + number)))
               for number, key in enumerate([("fraud", "1"), ("fraud", "2"), ("churn", "1")])}
    raws: list[bytes | None] = []
    for _ in range(1000):
        key = rng.choices(list(streams), weights=[6, 2, 2])[0]
        event = next(streams[key])[0]
        raws.append(orjson.dumps(event))
    schemas = {key: BlockSchema(key[0], key[1], ("f00", "f01", "f02"), ("c00",), (), "numeric") for key in streams}
    return raws, schemas


def test_interleaved_models_and_versions_go_as_one_mixed_block_with_each_message_in_its_place(
        block_decoder: str) -> None:
    """A partition carrying several models (or a canary's two versions) goes in blocks: one part
    per schema, each message at its place; rejects are holes, a valid message of no known schema
    cuts the span."""
    from stream_monitor.events.batch import MixedBlock
    decoder = Decoder(Settings())
    raws, schemas = _interleaved(decoder)
    others = {100: b"not json", 101: None, 500: raws[500].replace(b'"f00"', b'"f09"'),  # type: ignore[union-attr]
              998: b""}
    for index, raw in others.items():
        raws[index] = raw
    asked = []

    def schema_of(model: str, model_version: str) -> BlockSchema | None:
        asked.append((model, model_version))
        return schemas[(model, model_version)]

    first = decoder.prediction(raws[0])  # type: ignore[arg-type]
    spans = decoder.spans(raws, schemas[(first.model, first.model_version)], schema_of)
    assert [(start, stop, block.holes if block else None) for start, stop, block in spans] == [
        (0, 500, (100, 101)), (500, 501, None), (501, 1000, (497,))]
    assert len(asked) <= 2 * 4  # a probe per schema and span side, not one per message
    kind = ColumnBlock if block_decoder == "native" else PredictionBlock
    for start, stop, block in spans:
        if block is None:
            continue
        assert isinstance(block, MixedBlock) and len(block.parts) == 3
        assert all(isinstance(part, kind) for part, _ in block.parts)
        kept = [index for index in range(start, stop) if index - start not in block.holes]
        assert len(block) == len(kept)
        ids, times, predictions = block.event_ids(), block.times(), block.predictions()
        versions = block.versions()
        for place, at in enumerate(kept):
            event = decoder.prediction(raws[at])
            assert block.event(place) == event
            assert (ids[place], times[place], predictions[place]) == (event.event_id, event.ts, event.prediction)
            assert versions[place] == (event.model, event.model_version)
        for part, positions in block.parts:
            assert positions.tolist() == sorted(positions.tolist())
            for index, place in enumerate(positions.tolist()):
                features, prediction, ts = _block_values(part, index)
                assert features == decoder.prediction(raws[kept[place]]).features
        # a piece of it (replay cuts a block where the clock clamps a time) keeps the same places
        piece = block.part(10, 300)
        assert [event.event_id for event in piece.events()] == ids[10:300]


def test_messages_of_versions_without_a_schema_cut_the_batch_and_are_probed_a_few_times(
        block_decoder: str) -> None:
    """A version with no schema yet (its first messages, or a model over the cap) is not a block; at
    most a few of its messages are decoded on their own to learn that, per batch."""
    decoder = Decoder(Settings())
    raws, schemas = _interleaved(decoder)
    probed = []

    def schema_of(model: str, model_version: str) -> BlockSchema | None:
        probed.append(model)
        return None if model == "churn" else schemas[(model, model_version)]

    spans = decoder.spans(raws, schemas[("fraud", "1")], schema_of)
    assert len(probed) <= 16
    # churn's messages (a fifth, spread through the batch) leave no run of 250 of the others
    assert spans == [(0, 1000, None)]


def _rfc3339_times(seed: int, count: int) -> list[str]:
    """RFC 3339 times the contract allows, across 1970-2255 with every fraction length and offset
    form, and near-misses the one-message decoder rejects or reads its own way."""
    import datetime

    rng = random.Random(seed)
    out = []
    for _ in range(count):
        when = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=rng.uniform(0, 2.5e9 if rng.random() < 0.8
                                                                                           else 9e9))
        fraction = "".join(rng.choice("0123456789") for _ in range(rng.choice([0, 0, 1, 2, 3, 3, 4, 5, 6, 6, 7, 9])))
        offset = rng.choice(["Z", "z", "+00:00", "-00:00", f"+{rng.randrange(24):02d}:{rng.randrange(60):02d}",
                             f"-{rng.randrange(24):02d}:{rng.randrange(60):02d}"])
        text = when.strftime("%Y-%m-%d") + rng.choice("TTTt ") + when.strftime("%H:%M:%S") + \
            ("." + fraction if fraction else "") + offset
        out.append(text)
    out += ["2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z", "2100-02-29T00:00:00Z", "2000-02-29T12:00:00+01:00",
            "2025-11-24T24:00:00Z", "2025-11-24T16:00:60Z", "2025-11-24T16:00:00+24:00", "2025-11-24T16:00:00+05:60",
            "0000-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "1970-01-01T00:00:00+00:01", "1970-01-01T00:00:00-00:01",
            "2025-13-01T00:00:00Z", "2025-00-01T00:00:00Z", "2025-11-00T00:00:00Z", "2025-11-24T16:00:00.Z",
            "2025-11-24T16:00:00.1234567890Z", "2025-11-24T16:00:00", "2025-11-24T16:00:00Z\n",
            "2025-11-24T16:00:00+0100", "2025-11-24T16:00Z", "\u0662025-11-24T16:00:00Z", "9999-12-31T23:59:59Z",
            "2255-06-05T23:47:34.740991Z", "2255-06-05T23:47:34.740992Z", "2025-11-24T16:00:00.999999999-23:59"]
    return out


def test_rfc3339_times_decode_to_the_oracles_seconds_or_are_left_to_it(block_decoder: str) -> None:
    """A ``ts`` given as an RFC 3339 string: a message the block path takes has the oracle's
    epoch seconds bit for bit; the compiled decoder takes the plain forms (so such a stream still
    goes in blocks), anything else goes to the oracle."""
    decoder = Decoder(Settings())
    schema = BlockSchema("m", "2", ("x",), ("c",), (), "numeric")
    texts = _rfc3339_times(3, 3000)
    raws = [orjson.dumps({**BASE, "event_id": f"e{index}", "ts": text}) for index, text in enumerate(texts)]
    taken = [raw for raw in raws if _check_block(decoder, [raw], schema)]  # equal to the oracle when taken
    valid = [raw for raw in raws if _oracle(decoder, raw)[0] == "event"]
    assert len(valid) >= 2900
    if block_decoder == "native":
        # every plain form within the block range (1970 to 2255) is taken, by the compiled decoder
        plain = [raw for raw, text in zip(raws, texts) if raw in valid and text[:4] < "2255"
                 and not text.startswith("1969") and text[-6:] not in ("+00:01",)]
        assert all(isinstance(decoder.block([raw], schema), ColumnBlock) for raw in plain[:500])
        assert len(taken) >= 0.9 * len(plain)


def test_booleans_are_the_categories_true_and_false_in_blocks_as_in_the_oracle(block_decoder: str) -> None:
    """A JSON boolean as a categorical feature's, an ignored feature's or a class prediction's value is
    the category "true"/"false" (the oracle's reading): the compiled decoder takes such messages with
    those values; a boolean where a number or an id goes is not of the block."""
    decoder = Decoder(Settings())
    schema = BlockSchema("m", "2", ("x",), ("c",), ("i",), "categorical")
    base = {**BASE, "features": {"x": 1.5, "c": "DE", "i": 2.0}, "prediction": "yes"}
    good = [orjson.dumps({**base, "features": {"x": 1.5, "c": True, "i": False}, "prediction": True}),
            orjson.dumps({**base, "features": {"x": None, "c": False, "i": True}, "prediction": False}),
            orjson.dumps({**base, "features": {"x": 2.5, "c": "true", "i": "x"}, "prediction": "false"})]
    bad = [orjson.dumps({**base, "features": {"x": True, "c": "DE", "i": 1}}),  # a boolean numeric value
           orjson.dumps({**base, "event_id": True})]  # the oracle rejects it
    for raw in good + bad:
        _check_block(decoder, [raw], schema)  # whatever is taken has the oracle's values
    assert not any(_check_block(decoder, [raw], schema) for raw in bad)
    if block_decoder == "native":
        assert all(isinstance(decoder.block([raw], schema), ColumnBlock) for raw in good)
        block = decoder.block(good, schema)
        assert block.columns()[1] == ["true", "false", "true"] and block.predictions() == ["true", "false", "false"]


def test_an_integer_version_is_its_text_and_an_integer_model_is_not_of_the_block(block_decoder: str) -> None:
    """``"model_version": 2`` is the version "2" to the oracle (the compiled decoder takes it); 2.0, or a
    model given as a number, is rejected by the oracle and never taken."""
    decoder = Decoder(Settings())
    schema = BlockSchema("2", "2", ("x",), ("c",), (), "numeric")
    base = {**BASE, "model": "2"}
    versions = [orjson.dumps({**base, "model_version": value}) for value in (2, "2")]
    others = [orjson.dumps({**base, "model_version": 2.0}), orjson.dumps({**base, "model": 2}),
              orjson.dumps({**base, "model_version": -2}), orjson.dumps({**base, "model_version": 20})]
    assert all(_check_block(decoder, [raw], schema) == (block_decoder == "native" or b'"2"' in raw.split(b'"model_version":')[1][:3])
               for raw in versions)
    assert not any(_check_block(decoder, [raw], schema) for raw in others)
