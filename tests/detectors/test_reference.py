"""Issue 9 item 9: every detector that learns a reference takes the rule's warm-up or snapshot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream_monitor.config import load_settings
from stream_monitor.detectors import REGISTRY, build
from stream_monitor.detectors.reference import reference_params
from stream_monitor.events import PredictionEvent
from stream_monitor.monitor import Monitor, Record

from .support import one_at_a_time


def _records(values: np.ndarray, model: str = "m") -> list[Record]:
    return [Record(PredictionEvent(f"e{i}", model, "1", 1000.0 + i, {"x": float(v)}, None))
            for i, v in enumerate(values)]


def _settings(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_settings(path)


@pytest.mark.parametrize("seed", range(3))
def test_page_hinkley_learns_from_the_rules_warmup(tmp_path, seed: int) -> None:
    settings = _settings(tmp_path, "models:\n  - reference: {warmup: 500}\n"
                                   "    detectors: {numeric: [{name: page_hinkley}]}\n")
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.normal(0.0, 1.0, 500), rng.normal(1.0, 1.0, 1500)])
    alerts = Monitor(settings).process(_records(values))
    assert alerts, "a +1 sd shift right after a 500-value warm-up"
    first = alerts[0]
    assert first.detector == "page_hinkley"
    assert first.reference == "warmup:0-499"
    assert first.window == {"reference": 500}
    assert 500 <= first.n_seen < 700


def test_page_hinkley_compares_with_the_rules_snapshot(tmp_path) -> None:
    rng = np.random.default_rng(8)
    snapshot = tmp_path / "reference.json"
    snapshot.write_text(json.dumps({"feature:x": rng.normal(5.0, 1.0, 2000).tolist()}))
    settings = _settings(tmp_path, "models:\n  - reference: {snapshot: reference.json, id: train-2025-11}\n"
                                   "    detectors: {numeric: [{name: page_hinkley}]}\n")
    alerts = Monitor(settings).process(_records(rng.normal(0.0, 1.0, 500)))
    assert alerts and alerts[0].reference == "snapshot:train-2025-11"
    assert alerts[0].n_seen < 20
    assert alerts[0].window == {"reference": 2000}
    # data like the snapshot: quiet from the first value
    assert Monitor(settings).process(_records(rng.normal(5.0, 1.0, 20_000))) == []


def test_error_rate_learns_from_the_rules_warmup(tmp_path) -> None:
    settings = _settings(tmp_path, "models:\n  - reference: {warmup: 500}\n")
    rng = np.random.default_rng(5)
    errors = np.concatenate([rng.random(500) < 0.05, rng.random(3000) < 0.3]).astype(float)
    items = _records(np.zeros(errors.size))
    monitor = Monitor(settings)
    alerts = monitor.feed_signal("m", "1", "performance:error_rate", list(zip(errors.tolist(), items)))
    assert alerts and alerts[0].reference == "warmup:0-499"
    assert alerts[0].window == {"reference": 500}
    assert 500 <= alerts[0].n_seen < 650


def test_every_detector_that_learns_a_reference_takes_the_warmup() -> None:
    for name, cls in REGISTRY.items():
        params = reference_params(cls, cls.kind, warmup=400)
        if name == "adwin":
            assert params == {}  # ADWIN has no reference: its window adapts
            continue
        detector = build({"name": name, "params": params})
        size = detector.spec().params.get("warmup", detector.spec().params.get("reference_size"))
        assert size == 400, name


@pytest.mark.parametrize("family_tests", [1, 128, 10**6, 10**12])
@pytest.mark.parametrize(
    "spec",
    [
        {"name": "ks", "params": {"window": 20, "stride": 1}},
        {"name": "ks", "params": {"window": 300, "stride": 25, "reference_size": 500}},
        {"name": "page_hinkley", "params": {"warmup": 30}},
        {"name": "page_hinkley", "params": {"warmup": 500}},
        {"name": "error_rate", "params": {"warmup": 100}},
        {"name": "chi_square", "params": {"window": 10, "stride": 10}},
        {"name": "adwin", "params": {}},
    ],
)
def test_a_bad_combination_is_a_spec_error_at_build_time(spec, family_tests) -> None:
    # issue 9 item 6: whatever the family size, build either works or raises SpecError
    try:
        build(spec, family_tests=family_tests)
    except Exception as error:  # noqa: BLE001 - the point of the test
        assert type(error).__name__ == "SpecError", repr(error)


def _round_trip_detections(spec: dict, stream, cut: int) -> tuple[list, list]:
    whole = build(spec)
    expected = [(d.n_seen, d.statistic, d.reference) for d in whole.update(stream)]
    first = build(spec)
    found = [(d.n_seen, d.statistic, d.reference) for d in first.update(stream[:cut])]
    restored = build(spec)
    restored.load_state_dict(json.loads(json.dumps(first.state_dict())))
    found += [(d.n_seen, d.statistic, d.reference) for d in restored.update(stream[cut:])]
    return expected, found


@pytest.mark.parametrize("cut", [1, 1500, 2600])
def test_page_hinkley_snapshot_state_round_trip_and_batching(cut: int) -> None:
    rng = np.random.default_rng(12)
    spec = {"name": "page_hinkley", "params": {"reference_values": rng.normal(0, 1, 1000).tolist(),
                                               "reference_id": "train"}}
    stream = np.concatenate([rng.normal(0, 1, 2000), rng.normal(1, 1, 3000), rng.normal(-0.5, 1, 3000)])
    expected, found = _round_trip_detections(spec, stream, cut)
    assert len(expected) >= 2
    assert expected[0][2] == "snapshot:train" and expected[1][2].startswith("warmup:")
    assert found == expected
    one_by_one = [detection.n_seen for _, detection in one_at_a_time(build(spec), stream)]
    assert one_by_one == [n_seen for n_seen, _, _ in expected]


@pytest.mark.parametrize("cut", [500, 2000, 3030])
def test_high_cardinality_chi_square_state_round_trip(cut: int) -> None:
    rng = np.random.default_rng(13)
    names = np.array([f"v{k}" for k in range(400)], dtype=object)
    stream = np.concatenate([rng.choice(names, 3000), np.array(["v9"] * 1500, dtype=object),
                             rng.choice(names, 3000)])
    expected, found = _round_trip_detections({"name": "chi_square"}, stream, cut)
    assert len(expected) >= 2
    assert found == expected
