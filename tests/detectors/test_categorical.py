"""Chi-square categorical detector: exactness against scipy, columns, delay and false alarms."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from stream_monitor.detectors import SpecError, build

CATEGORIES = list("abcde")
PINNED_COLLAPSE = 3049  # seed 11: 400 categories, collapse onto "v7" at value 3000


def _chi(**params):
    return build({"name": "chi_square", "params": params})


def _zipf(rng: np.random.Generator, size: int, categories: int = 30) -> np.ndarray:
    weights = 1.0 / np.arange(1, categories + 1)
    return rng.choice([f"c{k}" for k in range(categories)], size, p=weights / weights.sum()).astype(object)


def test_statistic_equals_scipy_chi2_contingency() -> None:
    rng = np.random.default_rng(1)
    for _ in range(40):
        window = int(rng.integers(20, 400))
        stride = int(rng.integers(1, window + 1))
        stream = _zipf(rng, 1000 + window + int(rng.integers(0, 3 * stride + 1)), categories=int(rng.integers(2, 12)))
        detector = _chi(window=window, stride=stride, arl=1e300)
        assert detector.update(stream) == []
        last = stream.size - (stream.size - 1000 - window) % stride
        columns = detector.state_dict()["reference"]["columns"]
        column = {category: code for code, category in enumerate(columns)}

        def counts(values: np.ndarray) -> list[int]:
            tally = Counter(column.get(value, len(columns)) for value in values)
            return [tally[code] for code in range(len(columns) + 1)]

        table = np.array([counts(stream[:1000]), counts(stream[last - window : last])])
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] < 2:
            continue
        expected = stats.chi2_contingency(table, correction=False)
        assert detector.statistic == pytest.approx(expected.statistic, rel=1e-12, abs=1e-12)


def test_rare_and_unseen_categories_share_the_other_column() -> None:
    rng = np.random.default_rng(2)
    reference = {"a": 500, "b": 400, "c": 95, "rare": 5}  # the window would expect 2.5 of "rare"
    detector = _chi(reference_counts=reference, reference_id="train")
    columns = detector.state_dict()["reference"]["columns"]
    assert columns == ["a", "b", "c"]
    stream = rng.choice(["a", "b", "c", "rare"], 3000, p=[0.5, 0.4, 0.095, 0.005]).astype(object)
    assert detector.update(stream) == []
    # a category the reference never saw, at 10%, is a change (of "other")
    novel = rng.choice(["a", "b", "c", "new"], 2000, p=[0.45, 0.36, 0.09, 0.1]).astype(object)
    (detection,) = detector.update(novel)
    assert detection.reference == "snapshot:train"


def test_category_cap_bounds_the_columns() -> None:
    rng = np.random.default_rng(3)
    detector = _chi(max_categories=8)
    detector.update(rng.integers(0, 1000, 5000).astype(str).astype(object))
    state = detector.state_dict()
    assert state["reference"] is not None and len(state["reference"]["columns"]) <= 7
    detector = _chi(max_categories=4)
    detector.update(_zipf(rng, 1200))
    assert len(detector.state_dict()["reference"]["columns"]) == 3  # three most frequent + "other"


def test_non_string_values_are_compared_as_strings() -> None:
    detector = _chi(reference_counts={"True": 500, "False": 500}, reference_id="bools")
    rng = np.random.default_rng(4)
    assert detector.update(list(rng.random(2000) < 0.5)) == []
    assert len(detector.update(list(rng.random(2000) < 0.8))) == 1


def test_pinned_detection_indices() -> None:
    found = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        before = rng.choice(CATEGORIES, 3000)
        after = rng.choice(CATEGORIES, 3000, p=[0.5, 0.125, 0.125, 0.125, 0.125])
        found.append([d.n_seen for d in _chi().update(np.concatenate([before, after]).astype(object))])
    assert found == PINNED


PINNED = [[3149], [3199], [3174]]


@pytest.mark.parametrize("family_tests", [1, 50])
def test_share_change_median_delay_at_most_500(family_tests: int) -> None:
    delays = []
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        before = rng.choice(CATEGORIES, 4000)
        after = rng.choice(CATEGORIES, 3000, p=[0.5, 0.125, 0.125, 0.125, 0.125])
        detections = build({"name": "chi_square"}, family_tests=family_tests).update(
            np.concatenate([before, after]).astype(object)
        )
        assert all(d.n_seen >= 4000 for d in detections), "false alarm before the change"
        assert len(detections) == 1  # one change, one alert
        delays.append(detections[0].n_seen - 4000)
    assert np.median(delays) <= 500, delays


def test_detection_fields() -> None:
    rng = np.random.default_rng(5)
    stream = np.concatenate([rng.choice(CATEGORIES, 2000), rng.choice(["a", "b"], 2000)]).astype(object)
    (detection,) = _chi().update(stream)
    assert detection.window == {"reference": 1000, "current": 500}
    assert detection.reference == "warmup:0-999"
    assert detection.statistic >= detection.threshold
    assert detection.p_value == pytest.approx(stats.chi2.sf(detection.statistic, 4))


@pytest.mark.parametrize("stream", ["uniform", "zipf"])
def test_false_alarms_within_the_arl_bound(stream: str) -> None:
    arl = 10_000
    alarms = default_alarms = 0
    for seed in range(2):
        rng = np.random.default_rng(200 + seed)
        values = rng.choice(CATEGORIES, 1_000_000).astype(object) if stream == "uniform" else _zipf(rng, 1_000_000)
        alarms += len(_chi(arl=arl).update(values))
        default_alarms += len(_chi().update(values))
    assert alarms <= 2_000_000 / arl
    assert default_alarms == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"window": 1}, "window"),
        ({"stride": 0}, "stride"),
        ({"stride": 501}, "stride"),
        ({"max_categories": 0}, "max_categories"),
        ({"arl": "big"}, "arl"),
        ({"arl": math.nan}, "arl"),
        ({"reference_counts": {"a": 3}}, "reference_id"),
        ({"reference_counts": {"a": -1, "b": 5}, "reference_id": "x"}, "reference_counts"),
        ({"reference_counts": {1: 5, "b": 5}, "reference_id": "x"}, "reference_counts"),
        ({"reference_counts": ["a"], "reference_id": "x"}, "reference_counts"),
        ({"reference_id": "x"}, "reference_id"),
        ({"cap": 3}, "cap"),
    ],
)
def test_spec_errors_name_the_field(params: dict, field: str) -> None:
    with pytest.raises(SpecError) as error:
        _chi(**params)
    assert error.value.field == field


def _many(rng: np.random.Generator, size: int, categories: int = 400, zipf: bool = False) -> np.ndarray:
    weights = 1.0 / np.arange(1, categories + 1) if zipf else np.ones(categories)
    return rng.choice([f"v{k}" for k in range(categories)], size, p=weights / weights.sum()).astype(object)


@pytest.mark.parametrize("seed", range(3))
def test_a_high_cardinality_feature_collapsing_onto_one_value_is_detected(seed: int) -> None:
    # 400 categories: none is frequent enough for a column of its own
    rng = np.random.default_rng(seed)
    stream = np.concatenate([_many(rng, 3000), np.array(["v7"] * 1000, dtype=object)])
    detections = _chi().update(stream)
    assert detections, "the collapse must be seen"
    assert 3000 <= detections[0].n_seen < 3100
    assert detections[0].reference == "warmup:0-999"


def test_high_cardinality_collapse_pinned_index() -> None:
    rng = np.random.default_rng(11)
    stream = np.concatenate([_many(rng, 3000), np.array(["v7"] * 1000, dtype=object)])
    assert [d.n_seen for d in _chi().update(stream)] == [PINNED_COLLAPSE]


@pytest.mark.parametrize("zipf", [False, True])
def test_high_cardinality_stationary_streams_raise_no_false_alarm(zipf: bool) -> None:
    alarms = loose = 0
    for seed in range(2):
        values = _many(np.random.default_rng(300 + seed), 200_000, zipf=zipf)
        alarms += len(_chi().update(values))
        loose += len(_chi(arl=20_000).update(values))
    assert alarms == 0
    assert loose <= 2 * 400_000 / 20_000


def test_category_codes_of_non_strings_are_those_of_their_text() -> None:
    """True, 1 and 1.0 are one dict key but three categories: each is coded as its text, in any order."""
    from stream_monitor.detectors.categorical import _ColumnIndex

    values = ["a", True, 1, 1.0, "zz"]
    texts = ["a", "True", "1", "1.0", "zz"]
    for order in (values + texts, texts + values):
        index = _ColumnIndex(["a", "b", "c"], 8)
        codes = dict(zip(map(repr, order), map(index.__getitem__, order)))
        assert [codes[repr(v)] for v in values] == [codes[repr(t)] for t in texts]
        assert codes[repr(True)] != codes[repr(1)] != codes[repr(1.0)]
