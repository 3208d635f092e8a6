"""ADWIN: the same detections as river.drift.ADWIN, batching, JSON checkpoints, specs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from river import drift

from stream_monitor.detectors import DetectorSpec, SpecError, build
from stream_monitor.detectors.adwin import Adwin

from .support import river_indices


def regimes(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            rng.normal(5.0, 2.0, 3000),
            rng.normal(7.0, 2.0, 3000),
            rng.normal(6.0, 2.0, 4000),
            rng.normal(6.0, 6.0, 2000),
        ]
    )


RIVER_CASES = [
    {},
    {"delta": 0.05, "clock": 1},
    {"max_buckets": 2, "min_window_length": 1, "grace_period": 0, "clock": 4},
    {"max_buckets": 3, "delta": 1e-4, "min_window_length": 20, "grace_period": 100},
]


@pytest.mark.parametrize("params", RIVER_CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_river_detection_indices(params, seed):
    values = regimes(seed)
    expected = river_indices(drift.ADWIN(**params), values)
    assert len(expected) >= 2  # behaviour after a detection is compared too
    assert [d.index for d in Adwin(**params).update(values)] == expected


def test_matches_river_on_river_doctest_stream():
    rng = np.random.default_rng(12345)
    values = np.concatenate([rng.integers(0, 2, 1000), rng.integers(4, 8, 1000)]).astype(float)
    assert [d.index for d in Adwin().update(values)] == river_indices(drift.ADWIN(), values)


@pytest.mark.parametrize(("seed", "expected"), [(0, [3039, 6079, 10879]), (1, [3039, 6111, 10495])])
def test_detection_indices_are_pinned(seed, expected):
    assert [d.index for d in build(DetectorSpec("adwin")).update(regimes(seed))] == expected


def test_detection_reports_the_cut():
    (detection, *_) = Adwin().update(regimes(0))
    assert detection.statistic > detection.threshold > 0
    assert detection.window["reference"] + detection.window["current"] == 3040
    assert detection.p_value is None


def test_batches_equal_one_at_a_time():
    values = regimes(3)[:8000]
    whole = [(d.index, d) for d in Adwin().update(values)]
    single = Adwin()
    found = []
    for position, value in enumerate(values):
        detection = single.update_one(value)
        if detection is not None:
            found.append((position, detection))
    strip = lambda pairs: [(p, d.n_seen, d.statistic, d.threshold, dict(d.window)) for p, d in pairs]  # noqa: E731
    assert whole and strip(whole) == strip(found)


@pytest.mark.parametrize("cut", [0, 7, 33, 2500, 3039, 3040, 5000])
def test_json_state_round_trip_gives_identical_future_detections(cut):
    values = regimes(0)
    original = Adwin()
    original.update(values[:cut])
    state = json.loads(json.dumps(original.state_dict()))
    restored = Adwin()
    restored.load_state_dict(state)
    assert restored.width == original.width and restored.n_seen == cut
    future = original.update(values[cut:])
    assert future and future == restored.update(values[cut:])


def test_memory_grows_only_with_the_log_of_the_window():
    detector = Adwin()
    detector.update(np.random.default_rng(0).normal(size=200_000))
    state = detector.state_dict()
    assert detector.width == 200_000  # no drift: the window holds everything
    assert len(state["totals"]) <= 18
    assert all(len(row) <= detector.max_buckets for row in state["totals"])


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"delta": 0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"clock": 0}, "clock"),
        ({"max_buckets": 1}, "max_buckets"),
        ({"min_window_length": 0}, "min_window_length"),
        ({"grace_period": -1}, "grace_period"),
        ({"arl": 1e7}, "arl"),
    ],
)
def test_bad_parameters_raise_spec_error_naming_the_field(params, field):
    with pytest.raises(SpecError) as error:
        build(DetectorSpec("adwin", params))
    assert error.value.field == field


def test_spec_round_trip():
    detector = build(DetectorSpec("adwin", {"delta": 0.01}))
    assert build(detector.spec()).spec() == detector.spec()


def test_non_finite_values_are_refused():
    with pytest.raises(ValueError):
        Adwin().update(np.array([1.0, np.nan]))


def _port() -> Adwin:
    """An Adwin that runs the port (as when river's compiled window is missing or changed its layout)."""
    detector = Adwin()
    detector._river, detector._helper = False, None
    return detector


def test_runs_in_rivers_window_when_its_layout_is_known():
    from stream_monitor.detectors.adwin import _river_layout_ok

    assert _river_layout_ok() and Adwin()._helper is not None


def test_the_port_and_rivers_window_give_the_same_detections_and_states():
    values = regimes(2)
    strip = lambda found: [(d.index, d.statistic, d.threshold, dict(d.window)) for d in found]  # noqa: E731
    fast, port = Adwin(), _port()
    assert strip(fast.update(values[:3500])) == strip(port.update(values[:3500]))
    assert fast.statistic == port.statistic and fast.threshold == port.threshold
    assert fast.state_dict() == port.state_dict()
    # checkpoints cross over: the port's state loads into river's window and the other way round
    from_port, from_fast = Adwin(), _port()
    from_port.load_state_dict(port.state_dict())
    from_fast.load_state_dict(fast.state_dict())
    rest = values[3500:]
    expected = strip(port.update(rest))
    assert len(expected) >= 2
    assert strip(fast.update(rest)) == strip(from_port.update(rest)) == strip(from_fast.update(rest)) == expected
