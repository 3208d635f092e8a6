"""Page-Hinkley / CUSUM: river parity, pinned detections, batching, checkpoints, specs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from river import drift

from stream_monitor.detectors import DEFAULT_ARL, DetectorSpec, SpecError, build
from stream_monitor.detectors.page_hinkley import PageHinkley

from .support import one_at_a_time, river_indices, strip


def regimes(seed: int) -> np.ndarray:
    """Mean up, mean down a little, then the variance triples."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            rng.normal(5.0, 2.0, 3000),
            rng.normal(7.0, 2.0, 3000),
            rng.normal(6.0, 2.0, 4000),
            rng.normal(6.0, 6.0, 2000),
        ]
    )


def indices(detector: PageHinkley, values: np.ndarray) -> list[int]:
    return [detection.index for detection in detector.update(values)]


def in_random_batches(detector: PageHinkley, values: np.ndarray, seed: int) -> list:
    rng = np.random.default_rng(seed)
    found, position = [], 0
    while position < len(values):
        size = int(rng.choice([1, 2, 7, 100, 1000, 5000]))
        for detection in detector.update(values[position : position + size]):
            found.append((position + detection.index, detection))
        position += size
    return found


def same_detections(first: list, second: list) -> bool:
    """Detections agree in global position and in every field except the batch index."""
    return strip(first) == strip(second)


# -- river parity -----------------------------------------------------------


RIVER_CASES = [
    {},
    {"mode": "up"},
    {"mode": "down"},
    {"min_instances": 100, "delta": 0.05, "threshold": 20.0, "alpha": 0.999},
    {"threshold": 10.0, "alpha": 1.0},
]


@pytest.mark.parametrize("params", RIVER_CASES)
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_river_variant_matches_river_detection_indices(params, seed):
    values = regimes(seed)
    expected = river_indices(drift.PageHinkley(**params), values)
    assert len(expected) >= 3  # several detections: the behaviour after a detection is compared too
    assert indices(PageHinkley(variant="river", **params), values) == expected


def test_river_variant_matches_river_on_integer_valued_stream():
    # river's own doctest stream
    rng = np.random.default_rng(12345)
    values = np.concatenate([rng.integers(0, 2, 1000), rng.integers(4, 8, 1000)]).astype(float)
    assert indices(PageHinkley(variant="river"), values) == river_indices(drift.PageHinkley(), values)


def test_river_variant_batches_equal_one_at_a_time():
    values = regimes(5)
    batched = in_random_batches(PageHinkley(variant="river"), values, seed=1)
    assert same_detections(batched, one_at_a_time(PageHinkley(variant="river"), values))


# -- calibrated variant ------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "expected"),
    [
        (0, [3022, 6068, 10087]),
        (1, [3037, 6245, 10085]),
        (2, [3033, 6045, 10157]),
        (3, [3053, 6083, 10285]),
    ],
)
def test_calibrated_detection_indices_are_pinned(seed, expected):
    detector = build(DetectorSpec("page_hinkley"), family_tests=2)
    assert indices(detector, regimes(seed)) == expected


@pytest.mark.parametrize("seed", [0, 1])
def test_calibrated_batches_equal_one_at_a_time(seed):
    values = regimes(seed)[:8000]
    spec = DetectorSpec("page_hinkley", {"warmup": 500})
    whole = [(d.index, d) for d in build(spec).update(values)]
    assert whole
    assert same_detections(whole, one_at_a_time(build(spec), values))
    assert same_detections(whole, in_random_batches(build(spec), values, seed=seed))


@pytest.mark.parametrize(
    "params",
    [
        {"drifts": [0.25]},
        {"drifts": [1.0, 0.25, 0.5]},
        {"mode": "up", "drifts": [0.5, 0.3]},
        {"mode": "down"},
    ],
)
def test_chart_layouts_batch_equal_one_at_a_time(params):
    # one chart per direction, unsorted drifts, three charts per direction, one side
    values = regimes(1)
    spec = DetectorSpec("page_hinkley", {"warmup": 500, **params})
    whole = [(d.index, d) for d in build(spec).update(values)]
    assert whole
    assert same_detections(whole, one_at_a_time(build(spec), values))
    assert same_detections(whole, in_random_batches(build(spec), values, seed=3))


def test_one_change_gives_one_alert():
    rng = np.random.default_rng(11)
    values = np.concatenate([rng.normal(0.0, 1.0, 5000), rng.normal(3.0, 1.0, 100_000)])
    detections = build(DetectorSpec("page_hinkley"), family_tests=2).update(values)
    assert [d.index for d in detections] == [5005]


def test_detection_carries_statistic_threshold_window_and_reference():
    detector = build(DetectorSpec("page_hinkley"), family_tests=2)
    (detection,) = detector.update(regimes(0)[:5000])
    assert detection.index == detection.n_seen == 3022
    assert detection.statistic > detection.threshold > 0
    assert detection.window == {"reference": 2000}
    assert detection.reference == "warmup:0-1999"
    assert detection.p_value is None
    # the next reference starts right after the detection
    rest = detector.update(regimes(0)[5000:])
    assert rest[0].reference == "warmup:3023-5022"


def test_constant_reference_still_detects_a_change():
    values = np.concatenate([np.full(3000, 4.0), np.full(100, 4.5)])
    detections = build(DetectorSpec("page_hinkley")).update(values)
    assert [d.index for d in detections] == [3004]  # clipped z: 3.5 per value


def test_one_sided_modes():
    rng = np.random.default_rng(3)
    down = np.concatenate([rng.normal(0.0, 1.0, 3000), rng.normal(-1.5, 1.0, 500)])
    assert indices(build(DetectorSpec("page_hinkley", {"mode": "up"})), down) == []
    assert indices(build(DetectorSpec("page_hinkley", {"mode": "down"})), down) != []


def test_gauges_follow_the_closest_chart():
    detector = build(DetectorSpec("page_hinkley"))
    assert detector.statistic == 0.0
    detector.update(np.zeros(2000))
    detector.update(np.full(3, 0.5e-9))  # tiny, but the reference sd is floored near 1e-9
    assert 0 < detector.statistic < detector.threshold
    assert detector.n_seen == 2003


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("variant", ["calibrated", "river"])
def test_non_finite_values_are_refused(variant, bad):
    detector = build(DetectorSpec("page_hinkley", {"variant": variant}))
    with pytest.raises(ValueError):
        detector.update(np.array([1.0, bad]))


def test_small_batches_take_the_scalar_path_with_identical_results():
    # batches below the vectorisation cut-off run in Python; sizes straddle it
    values = regimes(2)
    spec = DetectorSpec("page_hinkley")
    whole = [(d.index, d) for d in build(spec).update(values)]
    for size in (3, 23, 24, 25, 97):
        detector, found = build(spec), []
        for start in range(0, len(values), size):
            found += [(start + d.index, d) for d in detector.update(values[start : start + size])]
        assert same_detections(found, whole), size


# -- checkpoints ------------------------------------------------------------


@pytest.mark.parametrize("variant", ["calibrated", "river"])
@pytest.mark.parametrize("cut", [10, 1500, 3021, 3022, 4000, 6100])
def test_state_round_trip_gives_identical_future_detections(variant, cut):
    values = regimes(0)
    spec = DetectorSpec("page_hinkley", {"variant": variant})
    original = build(spec, family_tests=2)
    original.update(values[:cut])
    state = json.loads(json.dumps(original.state_dict()))  # plain data only
    restored = build(spec, family_tests=2)
    restored.load_state_dict(state)
    assert restored.n_seen == original.n_seen == cut
    assert restored.statistic == original.statistic
    future_original = original.update(values[cut:])
    future_restored = restored.update(values[cut:])
    assert future_original == future_restored
    assert future_original


def test_state_from_another_variant_is_refused():
    state = PageHinkley(variant="river").state_dict()
    with pytest.raises(ValueError):
        PageHinkley().load_state_dict(state)


# -- specs ------------------------------------------------------------------


def test_default_arl_is_multiplied_by_family_tests_but_an_explicit_one_is_not():
    assert build(DetectorSpec("page_hinkley")).arl == DEFAULT_ARL
    assert build(DetectorSpec("page_hinkley"), family_tests=42).arl == 42 * DEFAULT_ARL
    assert build(DetectorSpec("page_hinkley", {"arl": 1e5}), family_tests=42).arl == 1e5


def test_thresholds_rise_with_the_false_alarm_target():
    low = build(DetectorSpec("page_hinkley", {"arl": 1e4}))
    high = build(DetectorSpec("page_hinkley", {"arl": 1e9}))
    assert (high._thresholds > low._thresholds).all()


@pytest.mark.parametrize("variant", ["calibrated", "river"])
def test_spec_round_trip(variant):
    detector = build(DetectorSpec("page_hinkley", {"variant": variant}), family_tests=3)
    again = build(detector.spec())
    assert again.spec() == detector.spec()
    # a spec written as JSON (or YAML) builds the same detector
    from_json = json.loads(json.dumps(dict(detector.spec().params)))
    assert build(DetectorSpec("page_hinkley", from_json)).spec() == detector.spec()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"variant": "fast"}, "variant"),
        ({"mode": "sideways"}, "mode"),
        ({"warmup": 10}, "warmup"),
        ({"warmup": 100.5}, "warmup"),
        ({"drifts": []}, "drifts"),
        ({"drifts": [0.5, -1.0]}, "drifts"),
        ({"drifts": "0.5"}, "drifts"),
        ({"drifts": [0.5, 0.5]}, "drifts"),
        ({"arl": 0}, "arl"),
        ({"arl": float("nan")}, "arl"),
        ({"clip": 0.4}, "clip"),
        ({"threshold": 50.0}, "threshold"),
        ({"variant": "river", "arl": 1e6}, "arl"),
        ({"variant": "river", "alpha": 1.5}, "alpha"),
        ({"variant": "river", "min_instances": 0}, "min_instances"),
        ({"variant": "river", "threshold": -1}, "threshold"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_parameters_raise_spec_error_naming_the_field(params, field):
    with pytest.raises(SpecError) as error:
        build(DetectorSpec("page_hinkley", params))
    assert error.value.field == field
    assert error.value.detector == "page_hinkley"


# -- small shifts, ramps and the tails of the reference (issue 12) -----------


def small_shift(seed: int) -> np.ndarray:
    """+0.25 sd at index 5000 (3,000 values after the warm-up)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(10.0, 3.0, 5000), rng.normal(10.75, 3.0, 5000)])


def ramp(seed: int) -> np.ndarray:
    """The mean ramps from index 3000 by 1 sd per 20,000 values."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0.0, 1.0, 15000)
    values[3000:] += np.minimum(np.arange(1, 12001) / 20000, 1.0)
    return values


@pytest.mark.parametrize(
    ("stream", "seed", "expected", "two_charts"),
    [
        (small_shift, 0, [5774], [5985]),
        (small_shift, 1, [5680], [5784]),
        (small_shift, 3, [5888], [7816]),
        (ramp, 0, [6284, 11917], [7967, 14145]),
        (ramp, 1, [6550, 11902], [8429]),
        (ramp, 2, [5255, 11298], [6765, 13169]),
    ],
)
def test_the_smallest_drift_chart_sees_small_shifts_and_ramps_sooner(stream, seed, expected, two_charts):
    # at a model's budget (44 tests); the second ramp detection is on the reference learned mid-ramp
    values = stream(seed)
    assert indices(build(DetectorSpec("page_hinkley"), family_tests=44), values) == expected
    without = build(DetectorSpec("page_hinkley", {"drifts": [0.25, 0.5]}), family_tests=44)
    assert indices(without, values) == two_charts
    assert expected[0] < two_charts[0]


def test_default_drifts_leave_out_those_a_small_warmup_cannot_calibrate():
    assert build(DetectorSpec("page_hinkley"), family_tests=44).drifts == (0.125, 0.25, 0.5)
    assert build(DetectorSpec("page_hinkley", {"warmup": 500}), family_tests=44).drifts == (0.25, 0.5)
    assert build(DetectorSpec("page_hinkley", {"warmup": 1000}), family_tests=44).drifts == (0.25, 0.5)
    assert build(DetectorSpec("page_hinkley", {"warmup": 1000}), family_tests=1).drifts == (0.125, 0.25, 0.5)
    # the spec names the charts it chose, so it rebuilds the same detector
    small = build(DetectorSpec("page_hinkley", {"warmup": 500}), family_tests=44)
    assert build(small.spec()).spec() == small.spec()
    # drifts given explicitly are never dropped
    with pytest.raises(SpecError) as error:
        build(DetectorSpec("page_hinkley", {"warmup": 500, "drifts": [0.125, 0.5]}), family_tests=44)
    assert error.value.field == "warmup"


def _fed_warmup(values: np.ndarray) -> PageHinkley:
    detector = build(DetectorSpec("page_hinkley"), family_tests=44)
    detector.update(values[:2000])
    return detector


def test_tail_factors_raise_only_the_thresholds_of_a_heavy_side():
    rng = np.random.default_rng(4)
    gaussian = _fed_warmup(rng.normal(0.0, 1.0, 2000))
    assert all(1.0 <= factor < 1.05 for factor in gaussian._tail_factors)
    # charts: (0.125 up, 0.125 down, 0.25 up, 0.25 down, 0.5 up, 0.5 down)
    counts = _fed_warmup(rng.poisson(0.7, 2000).astype(float))
    up, down = counts._tail_factors[0::2], counts._tail_factors[1::2]
    assert all(factor > 1.05 for factor in up)
    assert down == [1.0, 1.0, 1.0]  # the left tail stops at zero: lighter than Gaussian
    assert up == sorted(up)  # larger drifts reach further into the tail
    np.testing.assert_allclose(counts._thresholds, counts._warmup_thresholds * counts._tail_factors)
    # a constant reference has no tail: nothing to correct
    assert _fed_warmup(np.full(2000, 3.0))._tail_factors == [1.0] * 6


@pytest.mark.parametrize(("seed", "expected"), [(0, 6), (1, 7), (2, 2)])
def test_skewed_counts_stay_within_the_false_alarm_target(seed, expected, monkeypatch):
    # integer counts, half of them zero: a Gaussian threshold alarms 3-7 times too often here
    values = np.random.default_rng(seed).poisson(0.7, 2_000_000).astype(float)
    found = len(PageHinkley(arl=1e5).update(values))
    assert found == expected
    assert found <= len(values) / 1e5  # the target: one per 100,000 values
    monkeypatch.setattr(PageHinkley, "_reference_tail_factors", lambda self, values: [1.0] * len(self._signs))
    assert len(PageHinkley(arl=1e5).update(values)) > 1.5 * len(values) / 1e5


@pytest.mark.parametrize(
    "shape",
    [
        lambda rng, n: rng.normal(3.0, 2.0, n),
        lambda rng, n: rng.lognormal(0.0, 1.0, n),
        lambda rng, n: rng.standard_t(3, n),
        lambda rng, n: rng.poisson(0.7, n).astype(float),
        lambda rng, n: rng.uniform(0.0, 1.0, n),
        lambda rng, n: np.where(rng.random(n) < 0.3, rng.normal(-2.0, 0.5, n), rng.normal(1.0, 0.7, n)),
    ],
    ids=["gaussian", "lognormal", "student_t3", "poisson_ties", "uniform", "bimodal"],
)
def test_no_false_alarm_on_long_stationary_streams(shape):
    # 2 million values each at a 44-test model's budget; bench/mean_chart.py --stationary runs 10^8
    rng = np.random.default_rng(12)
    detector = build(DetectorSpec("page_hinkley"), family_tests=44)
    for _ in range(2):
        assert detector.update(shape(rng, 1_000_000)) == []


def test_snapshot_tail_factors_survive_a_state_round_trip():
    rng = np.random.default_rng(9)
    spec = DetectorSpec("page_hinkley", {"reference_values": rng.lognormal(0.0, 1.0, 3000).tolist(),
                                         "reference_id": "train"})
    original = build(spec, family_tests=44)
    assert max(original._tail_factors) > 1.05
    values = np.concatenate([rng.lognormal(0.0, 1.0, 1000), rng.lognormal(0.5, 1.0, 3000)])
    original.update(values[:500])
    restored = build(spec, family_tests=44)
    restored.load_state_dict(json.loads(json.dumps(original.state_dict())))
    assert restored._tail_factors == original._tail_factors
    assert list(restored._thresholds) == list(original._thresholds)
    rest = original.update(values[500:])
    assert rest and restored.update(values[500:]) == rest
    assert rest[0].reference == "snapshot:train"


def test_state_of_an_older_version_is_refused():
    state = build(DetectorSpec("page_hinkley")).state_dict()
    with pytest.raises(ValueError):
        build(DetectorSpec("page_hinkley")).load_state_dict({**state, "version": 2})
    # nor one saved for another set of charts
    two = build(DetectorSpec("page_hinkley", {"drifts": [0.25, 0.5]})).state_dict()
    with pytest.raises(ValueError):
        build(DetectorSpec("page_hinkley")).load_state_dict(two)
