"""The compiled loops (stream_monitor.detectors._jit) give exactly the numpy code's results."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from stream_monitor.detectors import DetectorSpec, _jit, build

pytestmark = pytest.mark.skipif(not _jit.ENABLED, reason="numba is not installed or STREAM_MONITOR_JIT=0")

#: the batch sizes fed in turn: single values, odd sizes, the usual batch, several chunks at once
SIZES = (1, 7, 1000, 5000, 333, 24, 25, 26)


def stream(seed: int) -> np.ndarray:
    """Stationary, then a mean and spread change, heavy tails, counts (ties) and a bounded score."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(size=8000), rng.normal(0.3, 1.3, size=6000), rng.lognormal(size=6000),
                           rng.poisson(2, size=5000).astype(float), rng.uniform(size=5000)])


def run(name: str, values: np.ndarray, compiled: bool, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr(_jit, "ENABLED", compiled)
    detector = build(DetectorSpec(name), family_tests=44)
    detections, statistics = [], []
    position, turn = 0, 0
    while position < len(values):
        size = SIZES[turn % len(SIZES)]
        for detection in detector.update(values[position:position + size]):
            detections.append((position + detection.index, detection.statistic, detection.threshold))
        statistics.append(detector.statistic)
        position, turn = position + size, turn + 1
    return {"detections": detections, "statistics": statistics,
            "state": json.dumps(detector.state_dict(), sort_keys=True, default=str)}


@pytest.mark.parametrize("name", ["page_hinkley", "scale", "quantile_chi2"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compiled_loops_equal_the_numpy_code(name: str, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    values = stream(seed)
    compiled = run(name, values, True, monkeypatch)
    plain = run(name, values, False, monkeypatch)
    assert compiled["detections"], "the stream changes: both paths must detect"
    assert compiled == plain


@pytest.mark.parametrize("params", [{"mode": "up", "drifts": [0.25, 0.5, 1.0]}, {"mode": "down", "drifts": [0.5]},
                                    {"mode": "both", "drifts": [0.25, 0.5, 1.0, 2.0]}])
def test_page_hinkley_compiled_equals_numpy_for_any_number_of_charts(params: dict[str, Any],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled walk takes the charts two at a time: odd counts, one chart, eight charts."""
    rng = np.random.default_rng(11)
    values = np.concatenate([rng.normal(size=6000), rng.normal(0.6, 1, 3000), rng.normal(-0.6, 1, 3000),
                             rng.normal(0, 1, 3000)])

    def run_spec(compiled: bool) -> list[tuple[int, float]]:
        monkeypatch.setattr(_jit, "ENABLED", compiled)
        detector = build(DetectorSpec("page_hinkley", params), family_tests=3)
        found = []
        for start in range(0, len(values), 700):
            found += [(start + d.index, d.statistic) for d in detector.update(values[start:start + 700])]
        return found + [json.dumps(detector.state_dict(), sort_keys=True, default=str)]  # type: ignore[list-item]

    compiled = run_spec(True)
    assert len(compiled) >= 2, "a shift of the mode's direction must be detected"
    assert compiled == run_spec(False)


def test_scale_on_scores_compiled_equals_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The logit branch: a score whose spread grows."""
    rng = np.random.default_rng(5)
    logits = np.concatenate([rng.normal(0, 1, 6000), rng.normal(0, 2, 3000)])
    scores = 1.0 / (1.0 + np.exp(-logits))
    assert run("scale", scores, True, monkeypatch) == run("scale", scores, False, monkeypatch)



def categories(seed: int) -> list[str]:
    """Five categories, one's share moving 20% -> 50%, then many rare ones (hashed buckets) appearing."""
    rng = np.random.default_rng(seed)
    before = rng.choice(list("abcde"), size=9000, p=[0.2, 0.2, 0.2, 0.2, 0.2])
    after = rng.choice(list("abcde"), size=6000, p=[0.5, 0.125, 0.125, 0.125, 0.125])
    rare = [f"r{value}" for value in rng.integers(0, 400, size=6000)]
    return [*before.tolist(), *after.tolist(), *rare]


@pytest.mark.parametrize("name", ["chi_square", "category_cusum"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compiled_category_loops_equal_the_numpy_code(name: str, seed: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    values = categories(seed)
    compiled = run(name, values, True, monkeypatch)
    assert compiled["detections"], "the stream changes: both paths must detect"
    assert compiled == run(name, values, False, monkeypatch)
