"""One conformance suite, run against every registered detector.

The detectors are read from ``REGISTRY`` when the tests are collected, so a new
detector module is covered as soon as it registers itself. Each detector sees
a stream of its kind with several changes in it, with its default parameters.
"""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import numpy as np
import pytest

from stream_monitor.detectors import REGISTRY, Detection, Detector, DetectorSpec, SpecError, build

NAMES = sorted(REGISTRY)


def _stream(kind: str, size: int = 24_000, seed: int = 0) -> Any:
    """A seeded stream of the kind, changing every quarter (so re-arming is exercised too)."""
    rng = np.random.default_rng(seed)
    quarter = size // 4
    if kind == "numeric":
        return np.concatenate(
            [
                rng.normal(0.0, 1.0, quarter),
                rng.normal(1.0, 1.0, quarter),
                rng.normal(1.0, 2.5, quarter),
                rng.normal(-1.0, 1.0, size - 3 * quarter),
            ]
        )
    if kind == "categorical":
        categories = np.array(["a", "b", "c", "d", "e"], dtype=object)
        shares = [[0.2] * 5, [0.5, 0.125, 0.125, 0.125, 0.125], [0.1, 0.1, 0.1, 0.1, 0.6], [0.2] * 5]
        parts = [rng.choice(categories, quarter if i < 3 else size - 3 * quarter, p=p) for i, p in enumerate(shares)]
        return np.concatenate(parts)
    if kind == "error":
        rates = [0.05, 0.2, 0.05, 0.4]
        parts = [rng.random(quarter if i < 3 else size - 3 * quarter) < rate for i, rate in enumerate(rates)]
        return np.concatenate(parts).astype(np.float64)
    raise AssertionError(f"no conformance stream for kind {kind!r}")


def _slice(stream: Any, start: int, stop: int) -> Any:
    return stream[start:stop]


def _record(detection: Detection, offset: int) -> tuple:
    """A detection as comparable plain data, its batch index made absolute."""
    return (
        offset + detection.index,
        detection.n_seen,
        detection.statistic,
        detection.threshold,
        detection.p_value,
        dict(detection.window),
        detection.reference,
    )


def _feed(detector: Detector, stream: Any, batch_sizes: list[int]) -> list[tuple]:
    records: list[tuple] = []
    position = 0
    for size in batch_sizes:
        for detection in detector.update(_slice(stream, position, position + size)):
            records.append(_record(detection, position))
        position += size
    assert position == len(stream)
    return records


def _state_json(detector: Detector) -> str:
    # plain data: strict JSON (no NaN or Infinity), stable key order
    return json.dumps(detector.state_dict(), sort_keys=True, allow_nan=False)


def _batchings(total: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    random_sizes: list[int] = []
    while sum(random_sizes) < total:
        random_sizes.append(int(rng.choice([1, 2, 3, 17, 250, 999, 1000, 4096])))
    random_sizes[-1] -= sum(random_sizes) - total
    return [[total], [1000] * (total // 1000) + ([total % 1000] if total % 1000 else []), [7] * (total // 7) + [total % 7], random_sizes]


@pytest.fixture(params=NAMES)
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_registered_kinds_have_a_stream(name: str) -> None:
    assert len(_stream(REGISTRY[name].kind, 100)) == 100


def test_the_stream_causes_detections(name: str) -> None:
    # the other checks compare detections, so they must have some to compare
    detector = build(DetectorSpec(name))
    assert detector.update(_stream(detector.kind)), f"{name} saw none of the changes"


def test_batch_update_equals_one_at_a_time(name: str) -> None:
    stream = _stream(REGISTRY[name].kind)
    one_by_one = build(DetectorSpec(name))
    expected = []
    for position in range(len(stream)):
        detection = one_by_one.update_one(stream[position])
        if detection is not None:
            assert detection.index == 0
            expected.append(_record(detection, position))
    for batch_sizes in _batchings(len(stream), seed=len(name)):
        detector = build(DetectorSpec(name))
        assert _feed(detector, stream, batch_sizes) == expected, batch_sizes[:5]
        assert _state_json(detector) == _state_json(one_by_one)
        assert detector.n_seen == len(stream)


def test_update_finite_equals_update(name: str) -> None:
    """What the monitor calls for a checked numeric column gives what ``update`` gives."""
    kind = REGISTRY[name].kind
    if kind == "categorical":
        pytest.skip("categorical values are not a float column")
    stream = np.ascontiguousarray(_stream(kind), dtype=np.float64)
    checked, plain = build(DetectorSpec(name)), build(DetectorSpec(name))
    for start in range(0, len(stream), 777):
        piece = stream[start:start + 777]
        assert checked.update_finite(piece) == plain.update(piece), start
    assert _state_json(checked) == _state_json(plain)


@pytest.mark.parametrize("cut", [1, 500, 5_999, 6_000, 9_001, 15_555])
def test_state_round_trip_gives_identical_future_detections(name: str, cut: int) -> None:
    stream = _stream(REGISTRY[name].kind)
    original = build(DetectorSpec(name))
    before = _feed(original, stream[:cut], [cut])
    saved = json.loads(_state_json(original))
    restored = build(DetectorSpec(name))
    restored.load_state_dict(saved)
    assert _state_json(restored) == _state_json(original)
    assert restored.n_seen == original.n_seen == cut
    assert restored.statistic == original.statistic
    assert restored.threshold == original.threshold
    rest = stream[cut:]
    sizes = [333] * (len(rest) // 333) + [len(rest) % 333]
    expected = _feed(original, rest, sizes)
    assert _feed(restored, rest, sizes) == expected
    assert _state_json(restored) == _state_json(original)
    assert before or expected  # something happened on at least one side of the cut


def test_same_input_same_output(name: str) -> None:
    stream = _stream(REGISTRY[name].kind, seed=3)
    first, second = build(DetectorSpec(name)), build(DetectorSpec(name))
    assert _feed(first, stream, [1000] * 24) == _feed(second, stream, [1000] * 24)
    assert _state_json(first) == _state_json(second)


def test_memory_bounded_over_a_million_values(name: str) -> None:
    kind = REGISTRY[name].kind
    detector = build(DetectorSpec(name))
    chunk = _stream(kind, 100_000, seed=5)  # changes inside, so detections and re-arming happen
    state_sizes = []
    peaks = []
    for round_ in range(10):
        traced = round_ in (1, 9)  # tracing slows pure-Python detectors; trace an early and the last round
        if traced:
            tracemalloc.start()
        for start in range(0, 100_000, 10_000):
            detector.update(chunk[start : start + 10_000])
        if traced:
            current, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            peaks.append(peak)
        state_sizes.append(len(_state_json(detector)))
    assert detector.n_seen == 1_000_000
    # the state does not grow with the stream (allowing for a few more digits in counters)
    assert max(state_sizes[5:]) <= 1.2 * max(state_sizes[:5]) + 200, state_sizes
    # nor does the memory an update allocates (and keeps) in the last 100,000 values
    assert peaks[1] <= 1.5 * peaks[0] + 1_000_000, peaks


def test_defaults_are_immutable(name: str) -> None:
    first, second = build(DetectorSpec(name)), build(DetectorSpec(name))
    assert first.spec() == second.spec()
    spec = first.spec()
    params = spec.params
    assert isinstance(params, dict)
    params.clear()
    params["something"] = "else"
    assert first.spec() == second.spec()
    assert first.spec().name == name
    # the filled-in spec builds an equal detector
    assert build(first.spec()).spec() == first.spec()
    stream = _stream(first.kind, 8000)
    assert _feed(first, stream, [8000]) == _feed(second, stream, [8000])


def test_spec_with_unknown_parameter_is_rejected(name: str) -> None:
    with pytest.raises(SpecError) as error:
        build(DetectorSpec(name, {"no_such_parameter": 1}))
    assert error.value.field == "no_such_parameter"
    assert error.value.detector == name


def test_spec_with_wrong_types_names_the_field(name: str) -> None:
    params = build(DetectorSpec(name)).spec().params
    numeric = [key for key, value in params.items() if isinstance(value, (int, float)) and not isinstance(value, bool)]
    assert numeric, "a detector with no numeric parameter?"
    for key in numeric:
        for bad in ("not a number", -1, None if key != "threshold" else "x"):
            if bad is None:
                continue
            try:
                build(DetectorSpec(name, {key: bad}))
            except SpecError as error:
                assert error.field == key, (key, bad, error)
            else:
                assert bad == -1 and key in {"threshold"}, f"{name}: {key}={bad!r} was accepted"


def test_detections_are_plain_data(name: str) -> None:
    detector = build(DetectorSpec(name))
    stream = _stream(detector.kind)
    detections = detector.update(stream)
    assert detections, "the conformance stream has a change every detector must see"
    for detection in detections:
        assert isinstance(detection.index, int) and 0 <= detection.index < len(stream)
        assert isinstance(detection.n_seen, int) and detection.n_seen == detection.index
        assert isinstance(detection.statistic, float) and isinstance(detection.threshold, float)
        assert detection.p_value is None or 0.0 <= detection.p_value <= 1.0
        assert all(isinstance(size, int) for size in detection.window.values())
        json.dumps(
            {
                "statistic": detection.statistic,
                "threshold": detection.threshold,
                "p_value": detection.p_value,
                "window": dict(detection.window),
                "reference": detection.reference,
            },
            allow_nan=False,
        )


def test_every_detector_is_registered_and_so_under_this_suite() -> None:
    # NAMES is read at collection: a detector that failed to register would drop out silently
    assert set(NAMES) >= {"adwin", "chi_square", "error_rate", "ks", "page_hinkley"}
