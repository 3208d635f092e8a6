"""Column-wise routing gives exactly the alerts (and counts) of value-by-value routing.

The oracle is ``Monitor(settings, columnar=False)``: today's path, one value at
a time. Both see the same simulated streams (drifts, several models and
versions, missing and absent values, kind changes, labels through the
pipeline), cut into the same batches; alerts must be equal field for field.
"""

from __future__ import annotations

import random

import orjson
import pytest
from prometheus_client import CollectorRegistry

from stream_monitor.config import Settings
from stream_monitor.events import PredictionEvent
from stream_monitor.metrics import Metrics
from stream_monitor.monitor import Monitor, Record
from stream_monitor.pipeline import Decoder, LabelRecord, Pipeline
from stream_monitor.simulate import Scenario, parse_drift, stream

DRIFTS = tuple(parse_drift(text) for text in (
    "fraud:feature:f01@2500:shift=1.5", "fraud:feature:c00@3000:share=0.6",
    "churn:prediction@2000:shift=1.0", "churn:feature:f00@1500:scale=3",
    "performance:error_rate@2000:error=0.3"))


def _events(seed: int, n_events: int = 6000) -> list[tuple[str, dict]]:
    scenario = Scenario(models=("fraud", "churn"), n_events=n_events, n_numeric=4, n_categorical=1,
                        drifts=DRIFTS, seed=seed, label_delay_events=200)
    return list(stream(scenario))


def _roughen(items: list[tuple[str, dict]], seed: int) -> list[tuple[str, dict]]:
    """Missing and absent values, strings in numeric features, a second version, kind changes."""
    rng = random.Random(seed)
    out = []
    for number, (kind, item) in enumerate(items):
        item = orjson.loads(orjson.dumps(item))
        if kind == "prediction":
            features = item["features"]
            roll = rng.random()
            if roll < 0.05:
                features["f02"] = None
            elif roll < 0.08:
                del features["f03"]
            elif roll < 0.09:
                features["f00"] = "N/A"
            elif roll < 0.10 and number > 20000:
                item["prediction"] = None  # late: a label of a prediction without one holds up the join
            if number > 4000 and item["model"] == "fraud" and rng.random() < 0.5:
                item["model_version"] = "2"
            if 3000 < number < 3300 and item["model"] == "churn":
                features["f01"] = "broken"  # a run of strings on a numeric signal
            if item["model"] == "churn":
                # a categorical code that turns numeric early (the kind is still being decided)
                features["code"] = "x" if number < 40 else float(number % 7)
            if number % 997 == 0:
                features[f"late{number % 3}"] = 1.0  # a new signal in the middle of the stream
        out.append((kind, item))
    return out


def _run(items: list[tuple[str, dict]], columnar: bool, batch: int, labels: bool = True,
         settings: Settings | None = None) -> tuple[list[dict], dict]:
    settings = settings or Settings()
    registry = CollectorRegistry()
    pipeline = Pipeline(settings, Metrics(registry), join_labels=labels)
    pipeline.monitor = Monitor(settings, pipeline.metrics, columnar=columnar)
    decoder = Decoder(settings)
    alerts: list[dict] = []
    chunk: list[Record | LabelRecord] = []
    for number, (kind, item) in enumerate(items):
        raw = orjson.dumps(item)
        if kind == "prediction":
            chunk.append(Record(decoder.prediction(raw), 0, None if number % 5 else 1_764_000_000.0 + number / 100))
        elif labels:
            chunk.append(LabelRecord(decoder.label(raw), 0, None))
        if len(chunk) >= batch:
            alerts += [orjson.loads(a.to_json()) for a in pipeline.process(chunk)]
            chunk = []
    alerts += [orjson.loads(a.to_json()) for a in pipeline.process(chunk)]
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for metric in registry.collect() for s in metric.samples
               if not s.name.endswith("_created") and "seconds" not in s.name}
    return alerts, samples


@pytest.mark.parametrize(("seed", "batch"), [(1, 1000), (2, 317), (3, 64)])
def test_simulated_streams_give_the_same_alerts_and_counts_as_value_by_value(seed: int, batch: int) -> None:
    items = _roughen(_events(seed), seed)
    expected, expected_metrics = _run(items, columnar=False, batch=batch)
    got, got_metrics = _run(items, columnar=True, batch=batch)
    assert got == expected
    assert got_metrics == expected_metrics
    signals = {(alert["model"], alert["signal"]) for alert in expected}
    # the drifts are seen on both models, the error rate among them
    assert {("fraud", "feature:f01"), ("churn", "prediction"), ("churn", "performance:error_rate")} <= signals


def test_a_clean_stream_goes_column_wise_after_its_first_batch() -> None:
    items = _events(4, 4000)
    expected, _ = _run(items, columnar=False, batch=500, labels=False)
    monitor_rows = []
    original = Monitor._route_rows

    def spy(self, records, positions, batch):  # type: ignore[no-untyped-def]
        monitor_rows.append(len(positions))  # a range or a list: both have a length
        return original(self, records, positions, batch)

    Monitor._route_rows = spy  # type: ignore[method-assign]
    try:
        got, _ = _run(items, columnar=True, batch=500, labels=False)
    finally:
        Monitor._route_rows = original  # type: ignore[method-assign]
    assert got == expected and len(expected) > 0
    # the first batch of each model admits it value by value; every later batch is column-wise
    assert len(monitor_rows) <= 2


def test_caps_and_evictions_match_value_by_value() -> None:
    settings = Settings(limits={"max_models": 2, "model_min_idle_events": 300, "max_versions_per_model": 2,
                                "max_signals_per_model": 4})
    rng = random.Random(9)
    records = []
    for number in range(6000):
        model = f"m{rng.randrange(3)}"
        version = str(rng.randrange(3))
        features = {f"f{j}": rng.gauss(0, 1) + (2.0 if number > 3000 else 0.0) for j in range(6)}
        records.append(PredictionEvent(f"e{number}", model, version, 1.0 + number, features, rng.random()))
    results = []
    for columnar in (False, True):
        monitor = Monitor(settings, columnar=columnar)
        alerts = []
        for start in range(0, len(records), 250):
            chunk = [Record(PredictionEvent(e.event_id, e.model, e.model_version, e.ts, dict(e.features),
                                            e.prediction)) for e in records[start:start + 250]]
            alerts += [a.to_json() for a in monitor.process(chunk)]
        results.append((alerts, monitor.meta_state(), sorted(monitor.version_keys())))
    assert results[0] == results[1]
