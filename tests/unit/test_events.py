"""Decoding: every kind of bad input maps to its reason and keeps the raw bytes."""

from __future__ import annotations

import pytest

from stream_monitor.errors import BadMessage
from stream_monitor.events import REJECT_REASONS, Limits, decode_label, decode_prediction

LIMITS = Limits(max_message_bytes=2000, max_string_length=50, max_features=5)

CASES = [
    (b"", "empty_value"),
    (b'{"event_id": "", "model": "m"}', "empty_value"),
    (b'{"event_id": "e", "model": "m", "features": {"": 1}}', "empty_value"),
    (b'{"event_id": "e", "model": "m", "model_version": ""}', "empty_value"),
    (b'{"event_id": "e", "model": "' + b"m" * 3000 + b'"}', "oversize"),
    (b'{"event_id": "e", "model": "' + b"m" * 60 + b'"}', "oversize"),
    (b'{"event_id": "e", "model": "m", "features": {"a":1,"b":1,"c":1,"d":1,"e":1,"f":1}}', "oversize"),
    (b'{"event_id": "\xc3\x28", "model": "m"}', "invalid_utf8"),
    (b'{"event_id": "e", "model": "m", "prediction": NaN}', "non_finite"),
    (b'{"event_id": "e", "model": "m", "prediction": -Infinity}', "non_finite"),
    (b'{"event_id": "e", "model": "m", "features": {"a": 1e999}}', "non_finite"),
    (b'{"event_id": "e", "model": "m"', "invalid_json"),
    (b"not json", "invalid_json"),
    (b"[1]", "not_an_object"),
    (b'"text"', "not_an_object"),
    (b'{"model": "m"}', "missing_field"),
    (b'{"event_id": "e"}', "missing_field"),
    (b'{"event_id": 1, "model": "m"}', "wrong_type"),
    (b'{"event_id": "e", "model": "m", "features": [1, 2]}', "wrong_type"),
    (b'{"event_id": "e", "model": "m", "ts": "yesterday"}', "wrong_type"),
    (b'{"event_id": "e", "model": "m", "ts": "2025-01-01T00:00:00"}', "wrong_type"),
    (b'{"event_id": "e", "model": "m", "model_version": 1.5}', "wrong_type"),
    (b'{"event_id": "e", "model": "m", "ts": 1764000000123}', "wrong_type"),
    (b'{"event_id": "e", "model": "m", "ts": -5}', "wrong_type"),
    (b'{"event_id": "e", "model": "m", "ts": "20251124T160000Z"}', "wrong_type"),
    (b'{"event_id": "e", "model": "m", "ts": "2025-W48-1T16:00Z"}', "wrong_type"),
    (b'{"event_id": "e", "model": "m", "ts": "2025-13-40T16:00:00Z"}', "wrong_type"),
    (b'{"event_id": "e", "model": "m", "features": {"a": {"b": 1}}}', "nested_value"),
    (b'{"event_id": "e", "model": "m", "prediction": [0.1, 0.9]}', "nested_value"),
]


@pytest.mark.parametrize(("raw", "reason"), CASES)
def test_bad_prediction_is_rejected_with_its_reason_and_raw_bytes(raw, reason):
    assert reason in REJECT_REASONS
    with pytest.raises(BadMessage) as caught:
        decode_prediction(raw, LIMITS)
    assert caught.value.reason == reason
    assert caught.value.raw == raw


def test_valid_prediction_fields_and_defaults():
    event = decode_prediction(
        b'{"event_id": "e", "model": "m", "model_version": 3, "ts": "2025-11-24T16:00:00.5Z", '
        b'"features": {"x": 1, "y": null, "z": "DE", "b": false}, "prediction": "cat"}', LIMITS)
    assert event.model_version == "3"
    assert event.ts == 1764000000.5
    assert event.features == {"x": 1.0, "y": None, "z": "DE", "b": "false"}
    assert event.prediction == "cat"
    assert decode_prediction(b'{"event_id": "e", "model": "m"}', LIMITS).ts is None
    nanos = decode_prediction(b'{"event_id": "e", "model": "m", "ts": "2025-11-24T16:00:00.123456789+00:00"}')
    assert nanos.ts == 1764000000.123456


def test_label_needs_a_label():
    with pytest.raises(BadMessage) as caught:
        decode_label(b'{"event_id": "e", "model": "m"}')
    assert caught.value.reason == "missing_field"
    assert decode_label(b'{"event_id": "e", "model": "m", "label": "spam"}').label == "spam"


def test_a_boolean_label_is_the_class_one_or_zero_and_a_boolean_feature_stays_categorical():
    from stream_monitor.events import decode_label, decode_prediction
    assert decode_label(b'{"event_id": "e", "model": "m", "label": true}').label == 1.0
    assert decode_label(b'{"event_id": "e", "model": "m", "label": false}').label == 0.0
    event = decode_prediction(b'{"event_id": "e", "model": "m", "features": {"promo": true}}')
    assert event.features == {"promo": "true"}


def test_unknown_top_level_fields_are_reported_and_strict_mode_rejects_them():
    import pytest

    from stream_monitor.errors import BadMessage
    from stream_monitor.events import REJECT_REASONS, Limits, decode_label, decode_prediction
    raw = b'{"event_id": "e", "model": "m", "feature": {"x": 1}, "prediction": 0.5}'
    assert decode_prediction(raw).unknown_fields == ("feature",)
    assert decode_prediction(b'{"event_id": "e", "model": "m"}').unknown_fields == ()
    label_raw = b'{"event_id": "e", "model": "m", "label": 1, "lable_ts": 3}'
    assert decode_label(label_raw).unknown_fields == ("lable_ts",)
    assert "unknown_field" in REJECT_REASONS
    for decode, message in ((decode_prediction, raw), (decode_label, label_raw)):
        with pytest.raises(BadMessage) as error:
            decode(message, Limits(strict=True))
        assert error.value.reason == "unknown_field"
        assert "feature" in str(error.value) or "lable_ts" in str(error.value)
    # the other reasons come first: same bytes, same reason, strict or not
    with pytest.raises(BadMessage) as error:
        decode_prediction(b'{"event_id": 3, "model": "m", "x": 1}', Limits(strict=True))
    assert error.value.reason == "wrong_type"
