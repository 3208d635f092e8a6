"""Error-rate Bernoulli CUSUM: pinned detections, batching, checkpoints, specs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream_monitor.detectors import DEFAULT_ARL, DetectorSpec, SpecError, build, default_specs

from .support import one_at_a_time, strip


def errors(seed: int) -> np.ndarray:
    """5% errors, then 15%, then 2% (an improvement, which is not an alarm)."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.random(3000) < 0.05, rng.random(3000) < 0.15, rng.random(4000) < 0.02]
    ).astype(np.float64)


def rises(seed: int) -> np.ndarray:
    """5% errors, then 15%, then 40%: two rises."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.random(3000) < 0.05, rng.random(3000) < 0.15, rng.random(3000) < 0.4]
    ).astype(np.float64)




def test_is_the_default_for_error_signals():
    assert [spec.name for spec in default_specs("error")] == ["error_rate"]


@pytest.mark.parametrize(("seed", "expected"), [(0, [3327]), (1, [3165]), (2, [3114]), (3, [3242])])
def test_detection_indices_are_pinned(seed, expected):
    detections = build(DetectorSpec("error_rate")).update(errors(seed))
    assert [d.index for d in detections] == expected


def test_batches_equal_one_at_a_time():
    values = rises(4)
    spec = DetectorSpec("error_rate", {"warmup": 500})
    whole = [(d.index, d) for d in build(spec).update(values)]
    assert [index for index, _ in whole] == [3166, 6109]
    assert strip(whole) == strip(one_at_a_time(build(spec), values))
    rng = np.random.default_rng(0)
    detector, found, position = build(spec), [], 0
    while position < len(values):
        size = int(rng.choice([1, 3, 64, 999, 4097]))
        found += [(position + d.index, d) for d in detector.update(values[position : position + size])]
        position += size
    assert strip(found) == strip(whole)


def test_accepts_booleans_and_counts_any_nonzero_as_an_error():
    values = errors(0)
    as_bool = build(DetectorSpec("error_rate")).update(values.astype(bool))
    as_scaled = build(DetectorSpec("error_rate")).update(values * 7.0)
    assert [d.index for d in as_bool] == [d.index for d in as_scaled] == [3327]


def test_detection_fields_and_rearm():
    detector = build(DetectorSpec("error_rate"))
    (detection,) = detector.update(errors(0)[:3500])
    assert detection.statistic > detection.threshold > 0
    assert detection.window == {"reference": 2000}  # the warm-up grown once
    assert detection.reference == "warmup:0-1999"
    assert detector.reference_rate is None  # re-arming on post-change values
    detector.update(errors(0)[3500:5000])
    assert detector.reference_rate == pytest.approx(0.15, abs=0.03)


def test_a_clean_warmup_still_calibrates():
    rng = np.random.default_rng(1)
    values = np.concatenate([np.zeros(1000), (rng.random(3000) < 0.02).astype(float)])
    detections = build(DetectorSpec("error_rate")).update(values)
    assert [d.index for d in detections] == [1857]


@pytest.mark.parametrize("cut", [5, 999, 1000, 3000, 3324, 3325, 4500])
def test_state_round_trip_gives_identical_future_detections(cut):
    values = rises(0)
    original = build(DetectorSpec("error_rate"))
    original.update(values[:cut])
    restored = build(DetectorSpec("error_rate"))
    restored.load_state_dict(json.loads(json.dumps(original.state_dict())))
    assert restored.statistic == original.statistic and restored.threshold == original.threshold
    future = original.update(values[cut:])
    assert future and future == restored.update(values[cut:])


def test_default_arl_scales_with_family_tests():
    assert build(DetectorSpec("error_rate"), family_tests=5).arl == 5 * DEFAULT_ARL
    assert build(DetectorSpec("error_rate", {"arl": 1e6}), family_tests=5).arl == 1e6
    detector = build(DetectorSpec("error_rate"), family_tests=5)
    assert build(detector.spec()).spec() == detector.spec()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"warmup": 10}, "warmup"),
        ({"warmup": "1000"}, "warmup"),
        ({"odds_ratio": 1.0}, "odds_ratio"),
        ({"odds_ratio": float("inf")}, "odds_ratio"),
        ({"arl": -5}, "arl"),
        ({"threshold": 3}, "threshold"),
    ],
)
def test_bad_parameters_raise_spec_error_naming_the_field(params, field):
    with pytest.raises(SpecError) as error:
        build(DetectorSpec("error_rate", params))
    assert error.value.field == field


@pytest.mark.parametrize("family_tests", [1, 128, 10_000])
def test_a_clean_warmup_at_a_large_family_target_still_gives_a_chart(family_tests):
    # issue 9: the chart's design after a warm-up with no error raised ValueError mid-stream
    rng = np.random.default_rng(9)
    errors = np.concatenate([np.zeros(1000), rng.random(20_000) < 0.05]).astype(float)
    detector = build(DetectorSpec("error_rate"), family_tests=family_tests)
    detections = detector.update(errors)
    assert detector.threshold > 0
    assert detections and 1000 <= detections[0].n_seen < 5000


@pytest.mark.parametrize("warmup", [100, 500, 10_000])
@pytest.mark.parametrize("arl", [1e7, 1e12, 1e18])
def test_every_accepted_warmup_and_target_builds_or_is_a_spec_error(warmup, arl):
    try:
        detector = build(DetectorSpec("error_rate", {"warmup": warmup, "arl": arl}))
    except SpecError as error:
        assert error.field == "arl"
        return
    # built: every warm-up outcome gives a chart
    for errors in range(0, warmup + 1, max(1, warmup // 10)):
        detector.update(np.zeros(warmup) if errors == 0 else (np.arange(warmup) < errors).astype(float))
        assert detector.threshold > 0
        detector.load_state_dict(build(DetectorSpec("error_rate", {"warmup": warmup, "arl": arl})).state_dict())


# -- the growing reference --------------------------------------------------------


def test_the_reference_doubles_up_to_max_reference():
    rng = np.random.default_rng(5)
    values = (rng.random(40_000) < 0.05).astype(float)
    detector = build(DetectorSpec("error_rate", {"warmup": 1000, "max_reference": 6000}))
    sizes = []
    for start in range(0, 20_000, 500):
        detector.update(values[start : start + 500])
        sizes.append(detector.reference_size)
    # the warm-up's 1,000 values, then 2,000 (at 2,000 seen), 4,000 (at 4,000), 6,000 (at 6,000) and no more
    assert sizes[2] == 1000 and sizes[3] == 2000 and sizes[6] == 2000 and sizes[7] == 4000
    assert sizes[10] == 4000 and sizes[11] == 6000 == sizes[-1]
    assert detector.reference_rate == np.count_nonzero(values[:6000]) / 6000
    fixed = build(DetectorSpec("error_rate", {"max_reference": 1000}))
    fixed.update(values)
    assert fixed.reference_size == 1000
    assert fixed.reference_rate == np.count_nonzero(values[:1000]) / 1000


def test_a_rise_before_a_doubling_does_not_join_the_reference():
    # a clean warm-up, then 5%: the chart needs more than the next 1,000 values to see it at this
    # target, and those values have far more errors than 0 in 1,000 predicts, so they are kept out
    # (joined, they would make the rise part of the reference: no detection in 20,000 values)
    rng = np.random.default_rng(9)
    values = np.concatenate([np.zeros(1000), rng.random(20_000) < 0.05]).astype(float)
    detector = build(DetectorSpec("error_rate"), family_tests=10_000)
    assert detector.update(values[:2500]) == []
    assert detector.reference_size == 1000 and detector.reference_rate == 0.0
    (detection, *_) = detector.update(values[2500:])
    assert 2500 + detection.index == 2618 and detection.reference == "warmup:0-999"


@pytest.mark.parametrize("cut", [1999, 2000, 2001, 3999, 4000])
def test_state_round_trip_across_a_doubling(cut):
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.random(6000) < 0.05, rng.random(3000) < 0.15]).astype(float)
    original = build(DetectorSpec("error_rate"))
    original.update(values[:cut])
    restored = build(DetectorSpec("error_rate"))
    restored.load_state_dict(json.loads(json.dumps(original.state_dict())))
    assert restored.reference_size == original.reference_size
    future = original.update(values[cut:])
    assert [d.index + cut for d in future] == [6158]
    assert future == restored.update(values[cut:])


# -- several charts -------------------------------------------------------------------


def test_a_small_rise_one_chart_misses_is_seen_by_the_default_charts():
    # 5% -> 8%: the chart for a rise of the odds by 2.5 drifts down at 8% (and misses it in
    # 20,000 values); the default charts (1.5 and 3) see it
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.random(10_000) < 0.05, rng.random(20_000) < 0.08]).astype(float)
    default = build(DetectorSpec("error_rate"), family_tests=22)
    assert default.odds_ratios == (1.5, 3.0)
    assert [d.index for d in default.update(values)] == [11591]
    assert build(DetectorSpec("error_rate", {"odds_ratio": 2.5}), family_tests=22).update(values) == []


def test_odds_ratio_is_one_chart_and_conflicts_with_odds_ratios():
    assert build(DetectorSpec("error_rate", {"odds_ratio": 2.5})).odds_ratios == (2.5,)
    assert build(DetectorSpec("error_rate", {"odds_ratios": [4, 1.2]})).odds_ratios == (1.2, 4.0)
    for params in ({"odds_ratio": 2.0, "odds_ratios": [3.0]}, {"odds_ratios": []}, {"odds_ratios": [1.0]},
                   {"odds_ratios": "2"}):
        with pytest.raises(SpecError):
            build(DetectorSpec("error_rate", params))


# -- false alarms -----------------------------------------------------------------------


def test_no_false_alarm_on_long_stationary_streams_at_a_models_target():
    # the model's budget (22 signals): 1 alarm per 2.2e8 values; 0 over 8e6 values of several rates,
    # each run growing its reference to 16,000 values
    rng = np.random.default_rng(12)
    alarms = 0
    for rate in (0.002, 0.02, 0.05, 0.15, 0.4, 0.7, 0.9, 0.98):
        detector = build(DetectorSpec("error_rate"), family_tests=22)
        for _ in range(10):
            alarms += len(detector.update((rng.random(100_000) < rate).astype(float)))
    assert alarms == 0


def test_a_version_1_checkpoint_loads_with_its_reference():
    # version 1: one chart, the reference the warm-up; its counts are kept and the sums start at 0
    detector = build(DetectorSpec("error_rate"))
    detector.load_state_dict({"version": 1, "n_seen": 1500, "warmup_seen": 1000, "warmup_errors": 48,
                              "reference_errors": 48, "reference_start": 0, "sum": 123456})
    assert detector.n_seen == 1500 and detector.reference_rate == 0.048 and detector.statistic == 0.0
    assert detector.reference_size == 1000
