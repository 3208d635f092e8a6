"""The label join: both arrival orders, every outcome counted, memory bounded."""

from __future__ import annotations

import pytest

from stream_monitor.events import LabelEvent, PredictionEvent
from stream_monitor.join import JoinLimits, LabelJoin


def prediction(number: int, score: float = 0.9, ts: float | None = None, model: str = "m") -> PredictionEvent:
    return PredictionEvent(f"e{number}", model, "1", float(number) if ts is None else ts, {}, score)


def label(number: int, value: float = 1.0, ts: float | None = None, model: str = "m") -> LabelEvent:
    return LabelEvent(f"e{number}", model, value, float(number) + 0.5 if ts is None else ts)


def outcomes(join: LabelJoin) -> dict[str, int]:
    return dict(join.totals)


def test_label_after_prediction_and_before_it_both_join_in_label_order():
    join = LabelJoin(JoinLimits())
    join.add_label(label(2, 0.0))           # arrives first, waits
    join.add_prediction(prediction(1, 0.2))
    join.add_label(label(1, 0.0))           # behind label 2 in the queue
    assert join.drain() == []               # label 2 still blocks the head
    join.add_prediction(prediction(2, 0.8))
    pairs = join.drain()
    assert [(p.event_id, p.value) for p in pairs] == [("e2", 1.0), ("e1", 0.0)]
    assert outcomes(join) == {"joined": 2}


def test_duplicate_unknown_and_late_labels_are_counted_not_joined():
    join = LabelJoin(JoinLimits(retention_events=2, early_label_events=3, early_label_seconds=10))
    join.add_prediction(prediction(1))
    join.add_label(label(1))
    join.add_label(label(1))                # duplicate after the join
    for number in (2, 3, 4):                # e2 expires: retention is 2 predictions
        join.add_prediction(prediction(number))
    join.add_label(label(2))                # its prediction expired: late
    join.add_label(label(99, ts=5.0))       # never predicted
    join.add_prediction(prediction(30))     # prediction time moves 25 s past it: unmatched
    assert outcomes(join) == {"joined": 1, "duplicate": 1, "late": 1, "unmatched": 1}
    assert join.take_outcomes()[1]["m"] == 2


def test_two_labels_waiting_for_one_prediction_count_one_duplicate():
    join = LabelJoin(JoinLimits())
    join.add_label(label(7))
    join.add_label(label(7))
    join.add_prediction(prediction(7))
    assert [p.event_id for p in join.drain()] == ["e7"]
    assert outcomes(join) == {"joined": 1, "duplicate": 1}


def test_regression_and_class_predictions_are_scored():
    join = LabelJoin(JoinLimits())
    join.add_prediction(PredictionEvent("r", "m", "1", 1.0, {}, 12.0))
    join.add_label(LabelEvent("r", "m", 10.5, 2.0))
    join.add_prediction(PredictionEvent("c", "m", "1", 3.0, {}, "cat"))
    join.add_label(LabelEvent("c", "m", "dog", 4.0))
    assert [(p.signal, p.value) for p in join.drain()] == [
        ("performance:abs_error", 1.5), ("performance:error_rate", 1.0)]


def test_a_million_unmatched_labels_stay_within_the_bound():
    limits = JoinLimits(retention_events=1000, early_label_events=500)
    join = LabelJoin(limits, max_models=1)
    largest = 0
    for number in range(1_000_000):
        join.add_label(LabelEvent(f"x{number}", "m", 1.0, None))
        if number % 1000 == 0:
            largest = max(largest, join.size())
    largest = max(largest, join.size())
    assert largest <= join.bound()
    assert join.waiting_labels() <= limits.early_label_events + 1
    assert outcomes(join)["unmatched"] >= 1_000_000 - limits.early_label_events - 1


def test_state_round_trip_gives_the_same_pairs():
    def feed(join: LabelJoin, start: int, stop: int) -> list:
        for number in range(start, stop):
            join.add_prediction(prediction(number, score=(number % 3) / 2))
            if number >= 5:
                join.add_label(label(number - 5, value=float(number % 2)))
        return [(p.event_id, p.value) for p in join.drain()]

    original = LabelJoin(JoinLimits())
    feed(original, 0, 50)
    restored = LabelJoin(JoinLimits())
    restored.load_state_dict(original.state_dict())
    assert feed(restored, 50, 100) == feed(original, 50, 100)


def test_labels_of_ever_new_models_keep_nothing_beyond_the_model_cap():
    join = LabelJoin(JoinLimits(early_label_events=10), max_models=3)
    join.add_prediction(prediction(1, model="real"))
    for number in range(10_000):
        join.add_label(LabelEvent("e", f"junk-{number}", 1.0, None))
        if number % 100 == 0:
            join.take_outcomes()
    assert join.size() <= 3
    assert join.totals["unmatched"] == 10_000 - 2  # two junk models still wait in their slots
    # junk names neither locked the real model out nor pushed it out: its waiting
    # prediction is still there to join
    join.add_label(label(1, model="real"))
    assert [p.event_id for p in join.drain()] == ["e1"]
    join.add_prediction(prediction(2, model="real"))
    join.add_label(label(2, model="real"))
    assert [p.event_id for p in join.drain()] == ["e2"]


def test_boolean_labels_score_against_scores_and_class_predictions():
    from stream_monitor.join import ERROR_RATE, score_pair
    from stream_monitor.events import decode_label
    true_label = decode_label(b'{"event_id": "e", "model": "m", "label": true}').label
    false_label = decode_label(b'{"event_id": "e", "model": "m", "label": false}').label
    assert score_pair(0.9, true_label, None) == (ERROR_RATE, 0.0)
    assert score_pair(0.1, false_label, None) == (ERROR_RATE, 0.0)
    assert score_pair(0.1, true_label, None) == (ERROR_RATE, 1.0)
    for prediction, label_value, error in [("1", true_label, 0.0), ("0", false_label, 0.0),
                                           ("true", true_label, 0.0), ("false", false_label, 0.0),
                                           ("True", false_label, 1.0), ("0", true_label, 1.0)]:
        assert score_pair(prediction, label_value, None) == (ERROR_RATE, error), prediction
    # a label sent as the string "true" against a score is the class 1 too
    assert score_pair(0.9, "true", None) == (ERROR_RATE, 0.0)


FAR = 253_402_300_000.0


def test_one_far_future_prediction_does_not_move_the_join_clock_and_is_counted():
    join = LabelJoin(JoinLimits(early_label_seconds=50, max_event_time_skew_s=1000))
    for n in range(1, 11):
        join.add_prediction(prediction(n, ts=FAR if n == 5 else float(n)))
    assert join.take_clamped() == {"predictions": 1}
    for n in range(1, 11):
        join.add_label(label(n, 1.0))
    assert [p.event_id for p in join.drain()] == [f"e{n}" for n in range(1, 11)]
    # the clamped prediction carries the clock's time, not the year 9999
    assert outcomes(join) == {"joined": 10}


def test_a_far_future_prediction_does_not_block_time_based_expiry():
    join = LabelJoin(JoinLimits(retention_seconds=100, max_event_time_skew_s=1000))
    join.add_prediction(prediction(0, ts=0.0))
    join.add_prediction(prediction(1, ts=FAR))
    for n in range(2, 500):
        join.add_prediction(prediction(n, ts=float(n)))
    # everything older than 100 s of stream time has expired, the bad entry too
    assert join.pending_predictions() == 101


def test_a_genuine_jump_of_the_stream_is_taken_after_a_few_events():
    join = LabelJoin(JoinLimits(retention_seconds=100, max_event_time_skew_s=1000))
    for n in range(10):
        join.add_prediction(prediction(n, ts=float(n)))
    for n in range(10, 20):
        join.add_prediction(prediction(n, ts=1_000_000.0 + n))
    # the old predictions expire against the new time; only the first of the jump was clamped
    assert join.pending_predictions() <= 10
    assert sum(join.take_clamped().values()) < 5


def test_an_unresolvable_head_label_blocks_at_most_head_wait_labels_behind_it():
    join = LabelJoin(JoinLimits(early_label_events=100, early_label_seconds=1e9, head_wait_labels=20))
    join.add_label(label(0, 1.0, ts=0.5))   # its prediction never comes
    for n in range(1, 40):
        join.add_prediction(prediction(n))
        join.add_label(label(n))
    pairs = join.drain()
    # the head was given up once 20 labels waited behind it; none is lost, order kept
    assert [p.event_id for p in pairs] == [f"e{n}" for n in range(1, 40)]
    assert outcomes(join) == {"joined": 39, "unmatched": 1}
    assert join.waiting_labels() == 0 and join.unresolved_labels() == 0


def test_unresolved_labels_never_exceeds_the_head_wait_per_model():
    join = LabelJoin(JoinLimits(early_label_events=10_000, head_wait_labels=300))
    join.add_prediction(prediction(10_000_000))
    for n in range(1000):
        join.add_label(label(n, ts=10_000_000.0))
        assert join.unresolved_labels() <= 301
    assert join.totals == {"unmatched": 700}
    assert join.waiting_labels() == join.unresolved_labels() == 300


def test_the_global_bound_expires_the_oldest_waiting_prediction_across_models():
    join = LabelJoin(JoinLimits(max_waiting_predictions=10))
    for n in range(8):
        join.add_prediction(prediction(n, model="a"))
    for n in range(8, 14):
        join.add_prediction(prediction(n, model="b"))
    assert join.pending_predictions() == 10
    assert join.take_dropped() == {"global_bound": 4}
    _, expired = join.take_outcomes()
    assert expired == {"a": 4}
    # a's four oldest are gone for good (late), the rest still join
    for n in range(14):
        join.add_label(label(n, 1.0, model="a" if n < 8 else "b"))
    assert outcomes(join) == {"late": 4, "joined": 10}
    restored = LabelJoin(JoinLimits(max_waiting_predictions=10))
    restored.load_state_dict(join.state_dict())
    assert restored.pending_predictions() == 0


def test_waiting_predictions_survive_a_checkpoint_with_their_values():
    join = LabelJoin(JoinLimits())
    join.add_prediction(prediction(1, 0.9))
    join.add_prediction(PredictionEvent("e2", "m", "7", None, {}, "spam"))
    restored = LabelJoin(JoinLimits())
    restored.load_state_dict(codec_roundtrip(join.state_dict()))
    restored.add_label(label(1, 0.0))
    restored.add_label(LabelEvent("e2", "m", "spam", 3.0))
    pairs = restored.drain()
    assert [(p.event_id, p.model_version, p.value, p.prediction_ts) for p in pairs] == [
        ("e1", "1", 1.0, 1.0), ("e2", "7", 0.0, None)]


def codec_roundtrip(state):
    """Through the changelog's encoding, as a restore sees it."""
    from stream_monitor.state import codec
    return codec.decode(codec.encode(state))


def test_a_clock_started_by_a_far_future_event_comes_back_after_a_few_agreeing_events():
    from stream_monitor.join import CLOCK_CONFIRMATIONS, EventClock
    clock = EventClock(100.0)
    clock.observe(FAR)
    for n in range(CLOCK_CONFIRMATIONS):
        assert clock.observe(float(n)) == (float(n), False)
    assert clock.now == float(CLOCK_CONFIRMATIONS - 1)
    # alternating far-off values never agree with each other: the clock stays
    for n in range(10):
        clock.observe(FAR if n % 2 else 1e6 + n)
    assert clock.now == float(CLOCK_CONFIRMATIONS - 1)


def test_a_pair_is_silent_only_when_its_label_its_prediction_and_the_labels_ahead_were_re_read():
    # after a restore the inputs below the committed offsets are re-read silently (their
    # alerts went out before); the two topics may be read in another interleaving than before
    join = LabelJoin(JoinLimits())
    join.add_label(label(1), silent=False)        # read after the commit, before its prediction here
    join.add_prediction(prediction(1), silent=True)
    assert [(p.event_id, p.silent) for p in join.drain()] == [("e1", False)]

    join = LabelJoin(JoinLimits())
    join.add_prediction(prediction(1), silent=True)
    join.add_prediction(prediction(2), silent=True)
    join.add_label(label(1), silent=True)
    assert [(p.event_id, p.silent) for p in join.drain()] == [("e1", True)]
    join.add_label(label(3), silent=False)        # blocks label 2 until its prediction comes
    join.add_label(label(2), silent=True)
    join.add_prediction(prediction(3), silent=False)
    # label 2 left the queue after label 3, which was read after the commit: not before it
    assert [(p.event_id, p.silent) for p in join.drain()] == [("e3", False), ("e2", False)]


def test_a_prediction_read_after_the_commit_makes_its_pair_loud_whichever_side_completes_it():
    join = LabelJoin(JoinLimits())
    join.add_prediction(prediction(1), silent=True)
    join.add_prediction(prediction(2), silent=False)  # predictions run ahead of their labels here
    join.add_label(label(1), silent=True)
    join.add_label(label(2), silent=True)
    assert [(p.event_id, p.silent) for p in join.drain()] == [("e1", True), ("e2", False)]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_block_of_predictions_added_at_once_leaves_the_join_as_row_by_row(seed: int) -> None:
    """add_prediction_rows (a decoded block's rows) against add_prediction_fields one row at a time:
    the same pairs, outcomes, expiries, drops, clamps and state after every batch, under small bounds
    (expiry by count, by time and by the global bound inside a block), repeated ids, rows without
    a prediction or a time, silent rows, time jumps, labels before and after their predictions."""
    import random

    from stream_monitor.events import LabelEvent
    from stream_monitor.join import JoinLimits, LabelJoin

    rng = random.Random(seed)
    limits = JoinLimits(retention_events=rng.choice([40, 300]), retention_seconds=rng.choice([5.0, 60.0]),
                        early_label_events=50, early_label_seconds=30.0, max_event_time_skew_s=100.0,
                        max_waiting_predictions=rng.choice([150, 10_000]))
    joins = [LabelJoin(limits, max_models=3), LabelJoin(limits, max_models=3)]
    by_row = joins[0].add_prediction_fields
    rows_one_by_one = []

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        rows_one_by_one.append(args[0])
        return by_row(*args, **kwargs)

    joins[0].add_prediction_fields = counted  # type: ignore[method-assign]
    clock = {model: 1_000.0 for model in "abcd"}
    ids_of: dict[str, list[str]] = {model: [] for model in "abcd"}
    number = 0
    for batch in range(120):
        items = []
        for _ in range(rng.randrange(1, 5)):
            if rng.random() < 0.7:
                model = rng.choice("abc") if rng.random() < 0.97 else "d"  # d evicts a model now and then
                size = rng.randrange(0, 60)
                far = rng.randrange(size) if size and rng.random() < 0.05 else -1
                rows = []
                for _ in range(size):
                    number += 1
                    clock[model] += rng.random() * 0.5
                    ts = None if rng.random() < 0.1 else clock[model]
                    if len(rows) == far:
                        ts = clock[model] + 10_000  # far ahead: the block goes row by row
                    event_id = f"{model}{number if rng.random() > 0.05 else rng.randrange(number)}"
                    prediction = None if rng.random() < 0.05 else (rng.random() if model != "d" else rng.choice("xy"))
                    fallback = None if rng.random() < 0.3 else clock[model] - 1
                    rows.append((event_id, prediction, ts, fallback))
                    ids_of[model].append(event_id)
                # one version, or a canary's two interleaved (a mixed block of one model)
                version = rng.choice(["1", "2", None])
                versions = [version or rng.choice(["1", "2"]) for _ in rows] if version is None else version
                items.append(("block", model, versions, rows, rng.randrange(0, 3) if batch < 5 else 0))
            else:
                model = rng.choice("abcd")
                recent = ids_of[model][-120:] or [f"{model}0"]
                labels = [LabelEvent(rng.choice(recent) if rng.random() < 0.97 else f"{model}{number + 2}", model,
                                     rng.choice([0.0, 1.0]) if model != "d" else rng.choice("xy"),
                                     None if rng.random() < 0.2 else clock[model] + rng.uniform(-40, 5))
                          for _ in range(rng.randrange(1, 30))]
                items.append(("labels", model, labels))
        for at_once, join in zip((True, False), joins):
            for item in items:
                if item[0] == "labels":
                    for label in item[2]:
                        join.add_label(label, 0, None, False)
                    continue
                _, model, version, rows, quiet = item
                ids, predictions, times, fallbacks = ([row[k] for row in rows] for k in range(4))
                if at_once:
                    join.add_prediction_rows(ids, model, version, predictions, times, 0, fallbacks, quiet)
                else:
                    for index, (event_id, prediction, ts, fallback) in enumerate(rows):
                        if prediction is not None:
                            join.add_prediction_fields(event_id, model,
                                                       version if isinstance(version, str) else version[index],
                                                       prediction, ts, 0, fallback, index < quiet)
        got, expected = ([repr(join.drain()), join.take_outcomes(), join.take_dropped(), join.take_clamped(),
                          repr(join.state_dict()), join.resolved_by_predictions] for join in joins)
        assert got == expected, batch
    totals = joins[0].totals
    assert totals["joined"] > 50 and sum(totals.values()) > totals["joined"]  # joins, and other outcomes too
    assert len(rows_one_by_one) < number // 2  # most blocks were added at once
