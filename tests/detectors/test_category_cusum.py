"""The ``category_cusum`` detector: exact detections, false alarms, references, state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream_monitor.detectors import DetectorSpec, SpecError, build

FAMILY = 44
CHANGE = 3000
FIVE = np.array(list("abcde"), dtype=object)


def detections(detector, values, batch: int = 1000) -> list[int]:
    found = []
    for start in range(0, len(values), batch):
        found += [start + d.index for d in detector.update(values[start : start + batch])]
    return found


def share_change(seed: int, after_shares, after: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(FIVE, CHANGE), rng.choice(FIVE, after, p=after_shares)])


RISE = [0.5, 0.125, 0.125, 0.125, 0.125]


def zipf(size: int, seed: int, categories: int = 30) -> np.ndarray:
    weights = 1.0 / np.arange(1, categories + 1)
    names = np.array([f"c{i:02d}" for i in range(categories)], dtype=object)
    return np.random.default_rng(seed).choice(names, size, p=weights / weights.sum())


def with_rare(size: int, seed: int) -> np.ndarray:
    names = np.array(["w", "x", "y", "z", "rare"], dtype=object)
    return np.random.default_rng(seed).choice(names, size, p=[0.3, 0.3, 0.2, 0.195, 0.005])


# -- exact detections -----------------------------------------------------------


@pytest.mark.parametrize(("shares", "expected"), [
    (RISE, [3085]),                                # one category 20% -> 50%
    ([0.05, 0.2375, 0.2375, 0.2375, 0.2375], [3402]),  # one category 20% -> 5%
])
def test_pinned_detection_of_a_share_change(shares, expected):
    assert detections(build(DetectorSpec("category_cusum"), family_tests=FAMILY), share_change(21, shares)) == expected


def test_median_delay_of_a_rise_from_20_to_50_percent():
    delays = []
    for seed in range(10):
        found = detections(build(DetectorSpec("category_cusum"), family_tests=FAMILY), share_change(seed, RISE))
        after = [i - CHANGE for i in found if i >= CHANGE]
        assert all(i >= CHANGE for i in found)
        delays.append(after[0] if after else 10**9)
    # the information bound is about 90 values (KL 0.22, threshold about 20 nats); measured 97; chi-square 236
    assert np.median(delays) <= 115, delays


def test_a_new_category_is_seen_as_a_rise_of_other():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.choice(FIVE, CHANGE), np.where(rng.random(1000) < 0.1, "new", rng.choice(FIVE, 1000))])
    found = detections(build(DetectorSpec("category_cusum"), family_tests=FAMILY), values.astype(object))
    # "other" was empty in the reference: its chart is designed from an upper bound of its share
    # (about 0.5%), so a new category at 10% adds about 0.12 nats a value: some 170 values
    assert found and CHANGE <= found[0] < CHANGE + 250, found


def test_a_category_that_disappears_is_seen():
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.choice(FIVE, CHANGE), rng.choice(FIVE[1:], 1000)])
    found = detections(build(DetectorSpec("category_cusum"), family_tests=FAMILY), values)
    assert found and CHANGE <= found[0] < CHANGE + 150, found


# -- false alarms ---------------------------------------------------------------

STATIONARY = {
    "uniform_5": lambda size, seed: np.random.default_rng(seed).choice(FIVE, size),
    "zipf_30": zipf,
    "rare_category": with_rare,
}


def many_rare(size: int, seed: int) -> np.ndarray:
    # 400 equally rare categories: the most frequent of a reference are frequent by luck
    return np.array([f"v{code}" for code in np.random.default_rng(seed).integers(0, 400, size)], dtype=object)


@pytest.mark.parametrize("shape", [*sorted(STATIONARY), "many_rare"])
def test_no_false_alarm_at_the_default_target(shape):
    values = {**STATIONARY, "many_rare": many_rare}[shape](300_000, 1)
    assert detections(build(DetectorSpec("category_cusum"), family_tests=FAMILY), values) == []


@pytest.mark.parametrize("shape", sorted(STATIONARY))
def test_false_alarm_rate_at_a_loose_target(shape):
    # arl 10**4 over 200,000 values: at most 20 expected (fewer: Wald's approximation is conservative
    # and the charts of one reference share its noise); at least one shows the charts are live
    values = STATIONARY[shape](200_000, 2)
    found = detections(build(DetectorSpec("category_cusum", {"arl": 1e4})), values)
    assert 1 <= len(found) <= 26, len(found)


# -- references and re-arming ------------------------------------------------------


def test_reference_ids_re_arming_and_columns():
    detector = build(DetectorSpec("category_cusum"), family_tests=FAMILY)
    values = np.concatenate([share_change(5, RISE, after=3000), np.random.default_rng(6).choice(FIVE, 3000)])
    found = []
    for start in range(0, len(values), 1000):
        found += [(start + d.index, d.reference, dict(d.window)) for d in detector.update(values[start : start + 1000])]
    first = found[0][0]
    assert CHANGE <= first < CHANGE + 200
    assert found[0][1:] == ("warmup:0-999", {"reference": 1000})
    # the second reference (from just after the first detection) sees the 50% share; its return to 20% is a fall
    assert found[1][1] == f"warmup:{first + 1}-{first + 1000}" and 6000 <= found[1][0] < 6300, found
    assert len(found) == 2


def test_snapshot_reference_is_used_from_the_first_value():
    counts = {"a": 200, "b": 200, "c": 200, "d": 200, "e": 200}
    detector = build(DetectorSpec("category_cusum", {"reference_counts": counts, "reference_id": "train"}),
                     family_tests=FAMILY)
    values = np.random.default_rng(8).choice(FIVE, 1000, p=RISE)
    found = detector.update(values)
    assert found and found[0].index < 200 and found[0].reference == "snapshot:train"
    assert build(detector.spec()).spec() == detector.spec()


def test_values_are_compared_as_strings():
    rng = np.random.default_rng(9)
    numbers = rng.choice(5, 4000)
    as_text = numbers.astype(str).astype(object)
    assert detections(build(DetectorSpec("category_cusum")), list(numbers)) == detections(
        build(DetectorSpec("category_cusum")), as_text)


def test_a_reference_of_one_category_still_sees_new_ones():
    values = np.array(["only"] * 1000 + ["only", "other"] * 100, dtype=object)
    found = detections(build(DetectorSpec("category_cusum"), family_tests=FAMILY), values)
    assert found and 1000 <= found[0] < 1030, found


# -- state -----------------------------------------------------------------------


@pytest.mark.parametrize("cut", [500, 1000, 3010, 4800])
def test_state_round_trip_mid_stream(cut):
    values = np.concatenate([share_change(12, RISE, after=3000), np.random.default_rng(13).choice(FIVE, 2000)])
    expected = detections(build(DetectorSpec("category_cusum"), family_tests=FAMILY), values)
    first = build(DetectorSpec("category_cusum"), family_tests=FAMILY)
    before = detections(first, values[:cut], batch=700)
    restored = build(DetectorSpec("category_cusum"), family_tests=FAMILY)
    restored.load_state_dict(json.loads(json.dumps(first.state_dict(), allow_nan=False)))
    after = [cut + i for i in detections(restored, values[cut:], batch=333)]
    assert before + after == expected and len(expected) >= 2


@pytest.mark.parametrize(("params", "field"), [
    ({"odds_ratio": 1.0}, "odds_ratio"), ({"reference_size": 10}, "reference_size"),
    ({"max_categories": 1}, "max_categories"), ({"arl": 5}, "arl"),
    ({"reference_counts": {"a": 500}}, "reference_id"), ({"reference_id": "x"}, "reference_id"),
    ({"reference_counts": {"a": -1, "b": 200}, "reference_id": "x"}, "reference_counts"),
])
def test_bad_parameters_name_the_field(params, field):
    with pytest.raises(SpecError) as error:
        build(DetectorSpec("category_cusum", params))
    assert error.value.field == field


def test_a_tiny_snapshot_builds_and_leaves_out_the_charts_it_cannot_calibrate():
    # the chi-square accepts snapshots of two values, so the default set must too
    detector = build(DetectorSpec("category_cusum", {"reference_counts": {"a": 1, "b": 1}, "reference_id": "s"}),
                     family_tests=FAMILY)
    assert detector.update(["a", "b", "c"] * 200) == []
    larger = build(DetectorSpec("category_cusum", {"reference_counts": {"a": 600, "b": 400}, "reference_id": "s"}),
                   family_tests=FAMILY)
    found = larger.update(["a"] * 300 + ["c"] * 300)
    assert [d.index for d in found] == [60] and found[0].reference == "snapshot:s"
