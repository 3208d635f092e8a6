"""The fault suite's judges (tests/integration/faults.py) on made-up runs: what each one fails."""

from __future__ import annotations

from stream_monitor.errors import BadMessage
from stream_monitor.events import decode_prediction
from tests.integration.faults import POISON, Comparison, DeadLetterComparison, Outgoing, source_of, with_poison


def _alert(alert_id: str, **fields: object) -> dict[str, object]:
    return {"alert_id": alert_id, "model": "fraud", "signal": "feature:f00", **fields}


def test_a_repeat_passes_at_least_once_and_fails_exactly_once():
    expected = [_alert("a"), _alert("b")]
    published = [_alert("a"), _alert("b"), _alert("a")]
    assert Comparison(expected, published).ok
    exact = Comparison(expected, published, exactly_once=True)
    assert not exact.ok and exact.counts()["duplicated"] == 1


def test_lost_spurious_and_changed_alerts_fail_both_modes():
    expected = [_alert("a"), _alert("b", n_seen=5)]
    for exactly_once in (False, True):
        comparison = Comparison(expected, [_alert("b", n_seen=6), _alert("c")], exactly_once)
        assert not comparison.ok
        assert {key: comparison.counts()[key] for key in ("lost", "spurious", "changed")} == {
            "lost": 1, "spurious": 1, "changed": 1}


def test_dead_letters_are_matched_by_their_source_headers():
    expected = {("in", 0, 7): b"bad", ("in", 1, 3): b""}
    headers = [("error.reason", b"invalid_json"), ("source.topic", b"in"), ("source.partition", b"0"),
               ("source.offset", b"7")]
    source = source_of(headers)
    assert source == ("in", 0, 7)
    assert source_of([("source.topic", b"in")]) is None
    once = [(source, b"bad"), (("in", 1, 3), b"")]
    assert DeadLetterComparison(expected, once, exactly_once=True).ok
    twice = [*once, (source, b"bad")]
    assert DeadLetterComparison(expected, twice).ok
    assert not DeadLetterComparison(expected, twice, exactly_once=True).ok
    wrong = DeadLetterComparison(expected, [(source, b"other"), (None, b"x"), (("in", 0, 8), b"")])
    assert wrong.counts() == {"expected": 2, "published": 3, "lost": 1, "duplicated": 0, "spurious": 2,
                              "changed": 1}


def test_every_poison_payload_is_rejected_for_its_reason_and_mixed_in_at_one_percent():
    for number, (reason, payload) in enumerate(POISON):
        raw = payload("fraud", number)
        assert b"\n" not in raw
        try:
            decode_prediction(raw)
        except BadMessage as bad:
            assert bad.reason == reason, raw
        else:
            raise AssertionError(f"accepted: {raw!r}")
    messages = [Outgoing("in", b"fraud" if n % 2 else b"spam", b"{}", f"e{n}") for n in range(2000)]
    mixed = with_poison(messages, "in", seed=3)
    poison = [(position, message) for position, message in enumerate(mixed) if message.poison]
    assert len(poison) == 20 and len(mixed) == 2020
    # each follows the message whose key it takes
    assert all(mixed[position - 1].key == message.key for position, message in poison)
    assert with_poison(messages, "in", seed=3) == mixed
