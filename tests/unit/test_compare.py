"""Version comparison (canary): the statistic, the monitor's comparisons, their alerts and state."""

from __future__ import annotations

import io
import math

import jsonschema
import numpy as np
import orjson
import pytest

from stream_monitor.alerts import ALERT_SCHEMA
from stream_monitor.compare import SourceTest
from stream_monitor.config import ConfigError, Settings, load_settings
from stream_monitor.events import LabelEvent, PredictionEvent
from stream_monitor.metrics import Metrics
from stream_monitor.monitor import Record
from stream_monitor.pipeline import LabelRecord, Pipeline
from stream_monitor.replay import replay
from stream_monitor.simulate import Scenario, generate, stream
from stream_monitor.state import codec
from stream_monitor.state.store import PartitionStore, restore_pipeline
from prometheus_client import CollectorRegistry

TOPICS = {"predictions": "p", "labels": "l"}


# -- the statistic ---------------------------------------------------------

def _null_stream(seed: int, size: int, share: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 99])
    return rng.normal(0, 1, size), (rng.random(size) < share).astype(np.int8)


def test_detections_do_not_depend_on_batch_boundaries() -> None:
    rng = np.random.default_rng(3)
    sources = (rng.random(30_000) < 0.2).astype(np.int8)
    values = rng.normal(0, 1, 30_000) + 0.25 * sources
    whole = SourceTest("numeric", math.log(1e5))
    expected = [(d.index, d.log_e) for d in whole.update(values, sources)]
    assert [index for index, _ in expected] == [2575, 8527, 15538, 20836, 29303]
    for size in (1, 7, 199, 200, 1000):
        if size == 1:
            values_cut, sources_cut = values[:3000], sources[:3000]
        else:
            values_cut, sources_cut = values, sources
        test = SourceTest("numeric", math.log(1e5))
        got = []
        for start in range(0, len(sources_cut), size):
            got += [(start + d.index, d.log_e)
                    for d in test.update(values_cut[start:start + size], sources_cut[start:start + size])]
        assert got == [item for item in expected if item[0] < len(sources_cut)]


def test_state_round_trip_gives_identical_future_output() -> None:
    rng = np.random.default_rng(4)
    sources = (rng.random(20_000) < 0.3).astype(np.int8)
    categories = np.array(["a", "b", "c", "d"])
    values = [str(c) for c in categories[np.minimum(rng.integers(0, 4, 20_000) + sources * (rng.random(20_000) < 0.3), 3)]]
    for cut in (150, 5000):  # during the warm-up, and after it
        whole = SourceTest("categorical", math.log(1e4))
        expected = [(d.index, d.log_e) for d in whole.update(values, sources)]
        assert expected
        first = SourceTest("categorical", math.log(1e4))
        head = [(d.index, d.log_e) for d in first.update(values[:cut], sources[:cut])]
        state = orjson.loads(orjson.dumps(first.state_dict()))
        second = SourceTest.from_state(state)
        tail = [(cut + d.index, d.log_e) for d in second.update(values[cut:], sources[cut:])]
        assert head + tail == expected


def test_a_zero_one_signal_gets_two_bins_and_detects_a_higher_rate() -> None:
    rng = np.random.default_rng(8)
    sources = (rng.random(20_000) < 0.2).astype(np.int8)
    values = (rng.random(20_000) < np.where(sources == 1, 0.12, 0.05)).astype(np.float64)
    test = SourceTest("numeric", math.log(1e5))
    first = test.update(values, sources)[0]
    assert (first.index, first.n_baseline, first.n_candidate) == (1978, 1615, 364)
    assert first.candidate_mean > first.baseline_mean


@pytest.mark.parametrize("drifting", [False, True])
def test_false_alarms_over_seeds_stay_within_alpha(drifting: bool) -> None:
    """Ville's bound: at alpha = 0.05 at most 5% of null streams ever alarm (here over 20,000
    values each); both versions drifting alike is still the null."""
    alarms = 0
    seeds = 200
    for seed in range(seeds):
        values, sources = _null_stream(seed, 20_000)
        if drifting:
            ramp = np.linspace(0, 1, len(values))
            values = values * (1 + ramp) + 2 * ramp
        alarms += bool(SourceTest("numeric", math.log(1 / 0.05)).update(values, sources))
    # binomial(200, 0.05) exceeds 18 with probability below 1%; an invalid test alarms on most streams
    assert alarms <= 18


def test_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="kind"):
        SourceTest("error", 10.0)
    with pytest.raises(ValueError, match="threshold"):
        SourceTest("numeric", 0.0)
    with pytest.raises(ValueError, match="bins"):
        SourceTest("numeric", 10.0, bins=1)


# -- through the pipeline (what replay and run share) --------------------------

def _items(scenario: Scenario, labels: bool = True) -> list[Record | LabelRecord]:
    items: list[Record | LabelRecord] = []
    for kind, item in stream(scenario):
        if kind == "prediction":
            items.append(Record(PredictionEvent(item["event_id"], item["model"], item["model_version"],
                                                item["ts"], item["features"], item["prediction"])))
        elif labels:
            items.append(LabelRecord(LabelEvent(item["event_id"], item["model"], item["label"], item["ts"])))
    return items


def _alerts(items, settings: Settings | None = None, batch: int = 1000, labels: bool = True,
            metrics: Metrics | None = None):
    pipeline = Pipeline(settings or Settings(), metrics, join_labels=labels)
    alerts = []
    for start in range(0, len(items), batch):
        alerts += pipeline.process(items[start:start + batch])
    return alerts


def _compared(alerts):
    return [a for a in alerts if a.detector == "version_compare"]


ERROR_CANARY = Scenario(n_events=20_000, n_numeric=4, seed=0, candidate_version="2", candidate_share=0.2,
                        candidate_from=5000, candidate_error_rate=0.12)
SCORE_CANARY = Scenario(n_events=20_000, n_numeric=4, seed=0, candidate_version="2", candidate_share=0.2,
                        candidate_from=5000, candidate_score_shift=0.25)


def test_simulated_streams_without_a_candidate_are_unchanged() -> None:
    plain = list(generate(Scenario(n_events=50, n_numeric=2, seed=3)))
    canary = list(generate(Scenario(n_events=50, n_numeric=2, seed=3, candidate_version="2")))
    assert [e["model_version"] for e, _ in plain] == ["1"] * 50
    assert any(e["model_version"] == "2" for e, _ in canary)
    # the same inputs, whichever version serves them
    assert [e["features"] for e, _ in plain] == [e["features"] for e, _ in canary]
    assert [e["prediction"] for e, _ in plain] == [e["prediction"] for e, _ in canary]


def test_a_candidate_with_a_higher_error_rate_gives_a_critical_comparison_alert() -> None:
    alerts = _alerts(_items(ERROR_CANARY))
    compared = _compared(alerts)
    assert [(a.signal, a.model_version, a.baseline_version, a.severity, a.event_id, a.n_seen, a.window)
            for a in compared] == [
        ("performance:error_rate", "2", "1", "critical", "fraud-000006573", 1563,
         {"baseline": 1246, "candidate": 318})]
    alert = compared[0]
    assert alert.statistic >= alert.threshold
    assert alert.p_value == pytest.approx(math.exp(-alert.statistic))
    assert alert.reference == "version:1"
    jsonschema.validate(orjson.loads(alert.to_json()), ALERT_SCHEMA)
    # other alerts leave the field out
    assert all("baseline_version" not in orjson.loads(a.to_json()) for a in alerts if a not in compared)


def test_a_candidate_scoring_the_same_inputs_higher_differs_on_the_prediction_only() -> None:
    compared = _compared(_alerts(_items(SCORE_CANARY, labels=False), labels=False))
    assert [(a.signal, a.model_version, a.baseline_version, a.severity, a.event_id, a.window)
            for a in compared] == [
        ("prediction", "2", "1", "warning", "fraud-000009415", {"baseline": 3503, "candidate": 903})]


def test_two_identical_versions_over_60k_events_raise_no_comparison_alert() -> None:
    scenario = Scenario(n_events=60_000, n_numeric=6, n_categorical=2, seed=5, candidate_version="2",
                        candidate_share=0.2, candidate_from=5000)
    assert _compared(_alerts(_items(scenario))) == []


@pytest.mark.parametrize("batch", [333, 1777])
@pytest.mark.parametrize("scenario", [ERROR_CANARY, SCORE_CANARY], ids=["error", "score"])
def test_comparison_alerts_do_not_depend_on_batch_boundaries(scenario: Scenario, batch: int) -> None:
    items = _items(scenario)
    expected = [a.alert_id for a in _compared(_alerts(items))]
    assert expected
    assert [a.alert_id for a in _compared(_alerts(items, batch=batch))] == expected


def test_a_named_baseline_makes_the_other_version_the_candidate() -> None:
    settings = Settings(models=[{"model": "fraud", "compare": {"baseline": "2"}}])
    compared = _compared(_alerts(_items(ERROR_CANARY), settings))
    assert [(a.signal, a.model_version, a.baseline_version, a.severity) for a in compared] == [
        # the baseline is worse: the candidate is better, so not critical
        ("performance:error_rate", "1", "2", "warning")]


def test_comparisons_can_be_turned_off() -> None:
    settings = Settings(models=[{"model": "*", "compare": {"enabled": False}}])
    assert _compared(_alerts(_items(ERROR_CANARY), settings)) == []


def test_an_evicted_version_leaves_its_comparisons_and_a_new_baseline_restarts_them() -> None:
    settings = Settings(limits={"max_versions_per_model": 2})
    items = _items(ERROR_CANARY, labels=False)[:6000]
    pipeline = Pipeline(settings, join_labels=False)
    pipeline.process(items)
    comparisons = pipeline.monitor._comparisons._models["fraud"]
    assert comparisons.live == ["1", "2"] and comparisons.baseline == "1"
    assert {candidate for candidate, _ in comparisons.pairs} == {"2"}
    last = items[-1].event.model_version
    # a third version takes the place of the version seen least recently
    third = Record(PredictionEvent("x0", "fraud", "3", 1_764_000_060.0, {"f00": 1.0}, 0.5))
    pipeline.process([third])
    assert comparisons.live == [last, "3"] and comparisons.baseline == last
    # the pairs of the old baseline went; the new one's start when values come
    assert comparisons.pairs == {} or {c for c, _ in comparisons.pairs} == {"3"}
    assert all(n.test.n <= 2 for n in comparisons.pairs.values())


def test_comparison_metrics() -> None:
    registry = CollectorRegistry()
    _alerts(_items(ERROR_CANARY), metrics=Metrics(registry))
    labels = {"model": "fraud", "model_version": "2", "baseline_version": "1",
              "signal": "performance:error_rate"}
    assert registry.get_sample_value("stream_monitor_version_compare_differs",
                                     {**labels, "severity": "critical"}) == 1
    assert registry.get_sample_value("stream_monitor_version_compare_detections_total",
                                     {**labels, "severity": "critical"}) == 1
    threshold = registry.get_sample_value("stream_monitor_version_compare_threshold", labels)
    assert registry.get_sample_value("stream_monitor_version_compare_log_e", labels) >= threshold
    feature = {**labels, "signal": "feature:f00"}
    assert registry.get_sample_value("stream_monitor_version_compare_log_e", feature) < threshold


def test_comparisons_survive_a_restore() -> None:
    items = _items(ERROR_CANARY)
    expected = [a.alert_id for a in _compared(_alerts(items))]
    assert expected
    cut = 11_000  # items: after the candidate started (event 5000), before the alert
    first = Pipeline(Settings())
    head = _compared(first.process(items[:cut]))
    store = PartitionStore(0)
    keys, tail = store.snapshot(first, {"predictions": 0, "labels": 0}, TOPICS)
    assert any(key.startswith(b"c/fraud") for key, _ in keys)
    second = Pipeline(Settings())
    restore_pipeline(second, 0, keys + tail, TOPICS)
    rest = []
    for start in range(cut, len(items), 1000):
        rest += _compared(second.process(items[start:start + 1000]))
    assert [a.alert_id for a in head + rest] == expected


def test_a_state_without_comparisons_restores_and_compares_afresh() -> None:
    items = _items(ERROR_CANARY)
    first = Pipeline(Settings())
    first.process(items[:11_000])
    keys, tail = PartitionStore(0).snapshot(first, {"predictions": 0, "labels": 0}, TOPICS)
    # as written before comparisons had state: no c/ records, and a meta record not naming one
    older = [(key, value) for key, value in keys if not key.startswith(b"c/")]
    meta = codec.decode(tail[0][1])
    meta["keys"] = {key: entry for key, entry in meta["keys"].items() if not key.startswith("c/")}
    second = Pipeline(Settings())
    restore_pipeline(second, 0, older + [(tail[0][0], codec.encode(meta)), *tail[1:]], TOPICS)
    assert second.monitor._comparisons._models["fraud"].live == ["1", "2"]
    alerts = []
    for start in range(11_000, len(items), 1000):
        alerts += _compared(second.process(items[start:start + 1000]))
    assert [(a.signal, a.model_version, a.baseline_version) for a in alerts] == [
        ("performance:error_rate", "2", "1")]


def test_replay_writes_comparison_alerts(tmp_path) -> None:
    events, labels = tmp_path / "events.jsonl", tmp_path / "labels.jsonl"
    with open(events, "wb") as e, open(labels, "wb") as l:
        for kind, item in stream(ERROR_CANARY):
            (e if kind == "prediction" else l).write(orjson.dumps(item) + b"\n")
    out = io.BytesIO()
    replay(Settings(), events, out, labels_path=labels)
    alerts = [orjson.loads(line) for line in out.getvalue().splitlines()]
    compared = [a for a in alerts if a["detector"] == "version_compare"]
    assert [(a["signal"], a["model_version"], a["baseline_version"], a["event_id"]) for a in compared] == [
        ("performance:error_rate", "2", "1", "fraud-000006573")]
    for alert in alerts:
        jsonschema.validate(alert, ALERT_SCHEMA)


def test_compare_rule_is_validated_naming_the_field(tmp_path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("models:\n  - model: fraud\n    compare: {baseline: '7', alpha: 2}\n")
    with pytest.raises(ConfigError) as error:
        load_settings(config)
    assert "models.0.compare.alpha" in str(error.value)
    config.write_text("models:\n  - model: fraud\n    compare: {baseline: '7', bins: 16, warmup: 40}\n")
    with pytest.raises(ConfigError, match="models.0.compare"):
        load_settings(config)
    config.write_text("models:\n  - model: fraud\n    compare: {baseline: '7', alpha: 0.001}\n")
    assert load_settings(config).rule_for("fraud").compare.baseline == "7"


@pytest.mark.parametrize(("seed", "size", "bins"), [(1, 0, 4), (2, 1, 1), (3, 1000, 2), (4, 997, 16), (5, 5000, 64)])
def test_the_counts_before_each_value_in_its_bin_are_those_of_a_value_by_value_count(
        seed: int, size: int, bins: int) -> None:
    from stream_monitor.compare.source_test import _earlier_in_bin
    rng = np.random.default_rng(seed)
    values = rng.integers(0, bins, size)
    candidate = (rng.random(size) < 0.2).astype(np.int64)
    seen, seen_candidate = [0] * bins, [0] * bins
    expected, expected_candidate = [], []
    for value, source in zip(values.tolist(), candidate.tolist()):
        expected.append(seen[value])
        expected_candidate.append(seen_candidate[value])
        seen[value] += 1
        seen_candidate[value] += source
    within, candidate_within = _earlier_in_bin(values, candidate)
    assert within.tolist() == expected and candidate_within.tolist() == expected_candidate
