"""Column-wise routing gives exactly the alerts (and counts) of value-by-value routing.

The oracle is ``Monitor(settings, columnar=False)``: today's path, one value at
a time. Both see the same simulated streams (drifts, several models and
versions, missing and absent values, kind changes, labels through the
pipeline), cut into the same batches; alerts must be equal field for field.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable

import orjson
import pytest
from prometheus_client import CollectorRegistry

from stream_monitor.config import Settings
from stream_monitor.events import PredictionEvent
from stream_monitor.metrics import Metrics
from stream_monitor.monitor import Monitor, Record, RecordBlock
from stream_monitor.events.batch import PredictionBlock
from stream_monitor.pipeline import Decoder, LabelRecord, Pipeline
from stream_monitor.simulate import Scenario, generate, parse_drift, stream

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


# -- blocks: a batch decoded as one block of its schema, routed column by column ---------------------

def _lines(items: list[tuple[str, dict]], seed: int) -> bytes:
    """The predictions as JSON lines, with bad lines, unusual times and CRLF line ends here and there."""
    rng = random.Random(seed)
    out = []
    for kind, item in items:
        if kind != "prediction":
            continue
        roll = rng.random()
        if roll < 0.002:
            out.append(b'{"event_id": "bad", "model": "fraud", "prediction": NaN}')
        elif roll < 0.003:
            out.append(b"not json")
        elif roll < 0.004:
            item = {**item, "ts": item["ts"] + 10 * 86400.0}  # far ahead of the clock: clamped
        elif roll < 0.005:
            item = {**item, "ts": None}
        out.append(orjson.dumps(item) + (b"\r" if roll > 0.995 else b""))
    return b"\n".join(out) + b"\n"


def _spy_blocks(monkeypatch: pytest.MonkeyPatch, of: Callable[[RecordBlock], object] = len) -> list:
    """What ``of`` gives for each block the monitor is fed from now on (None: not listed)."""
    seen: list = []
    original = Monitor.process_block

    def spy(self, records):  # type: ignore[no-untyped-def]
        value = of(records)
        if value is not None:
            seen.append(value)
        return original(self, records)

    monkeypatch.setattr(Monitor, "process_block", spy)
    return seen


def _replay(path, columnar: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, dict, object]:
    from stream_monitor import replay as replay_module

    registry = CollectorRegistry()
    made = []

    def pipeline(settings: Settings, metrics: Metrics | None = None, join_labels: bool = True) -> Pipeline:
        made.append(Pipeline(settings, metrics, join_labels))
        made[-1].monitor = Monitor(settings, metrics, columnar=columnar)
        return made[-1]

    monkeypatch.setattr(replay_module, "Pipeline", pipeline)
    out = io.BytesIO()
    summary = replay_module.replay(Settings(), path, out, Metrics(registry))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for metric in registry.collect() for s in metric.samples
               if not s.name.endswith("_created") and "seconds" not in s.name}
    return out.getvalue(), samples, summary


@pytest.mark.parametrize(("seed", "models", "rough"), [(5, ("fraud", "churn"), True), (6, ("fraud",), True),
                                                     (7, ("fraud",), False)])
def test_replay_in_blocks_gives_the_alerts_counts_and_summary_of_value_by_value(
        seed: int, models: tuple[str, ...], rough: bool, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "events.jsonl"
    items = _roughen(_events(seed), seed) if rough else _events(seed)
    items = [(kind, item) for kind, item in items if item["model"] in models]
    path.write_bytes(_lines(items, seed))
    blocks = _spy_blocks(monkeypatch)
    expected = _replay(path, False, monkeypatch)
    assert blocks == []
    got = _replay(path, True, monkeypatch)
    assert got[0] == expected[0] and got[0].count(b"\n") >= 3
    assert got[1] == expected[1]
    assert got[2] == expected[2]
    if not rough:
        # the chunks go as blocks, cut around their few bad or clamped lines (mixed models never do)
        assert len(blocks) > 3 and sum(blocks) > 1000


def test_a_clean_replay_goes_in_blocks_after_its_first_chunk(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "events.jsonl"
    scenario = Scenario(n_events=8000, n_numeric=3, n_categorical=1, seed=8,
                        drifts=(parse_drift("fraud:feature:f01@4000:shift=1.5"),))
    path.write_bytes(b"".join(orjson.dumps(event) + b"\n" for event, _ in generate(scenario)))
    rows = []
    original = Monitor._route_rows

    def spy(self, records, positions, batch):  # type: ignore[no-untyped-def]
        rows.append(len(positions))
        return original(self, records, positions, batch)

    monkeypatch.setattr(Monitor, "_route_rows", spy)
    got = _replay(path, True, monkeypatch)
    assert rows == [1000]  # only the first chunk, which teaches the schema, goes value by value
    monkeypatch.setattr(Monitor, "_route_rows", original)
    assert got[0] == _replay(path, False, monkeypatch)[0] and b"feature:f01" in got[0]


def test_a_block_with_kafka_times_and_silent_records_gives_the_alerts_of_its_records() -> None:
    settings = Settings()
    scenario = Scenario(n_events=6000, n_numeric=2, n_categorical=1, seed=3,
                        drifts=(parse_drift("fraud:feature:f00@2500:shift=2"),
                                parse_drift("fraud:prediction@3500:shift=1")))
    raws = [orjson.dumps(event) for event, _ in generate(scenario)]
    rng = random.Random(3)
    results = []
    for as_block in (False, True):
        registry = CollectorRegistry()
        pipeline = Pipeline(settings, Metrics(registry), join_labels=False)
        decoder = Decoder(settings)
        alerts = []
        taken = 0
        rng.seed(3)
        for start in range(0, len(raws), 500):
            chunk = raws[start:start + 500]
            kafka = [None if rng.random() < 0.1 else 1_764_000_000.0 + (start + i) / 100 - rng.random() * 50
                     for i in range(len(chunk))]
            if start == 3000:
                kafka[7] = 1_000_000.0  # a ts far ahead of its Kafka time: clamped, record by record
            quiet = 100 if start in (2500, 3500) else 0
            block = decoder.block(chunk, pipeline.block_schema()) if as_block else None
            if block is not None:
                taken += 1
                items: list = [RecordBlock(block, 0, kafka, quiet)]
            else:
                items = [Record(decoder.prediction(raw), 0, kafka[i], i < quiet) for i, raw in enumerate(chunk)]
            alerts += [a.to_json() for a in pipeline.process(items)]
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for metric in registry.collect()
                   for s in metric.samples if not s.name.endswith("_created")}
        results.append((alerts, samples, taken))
    assert results[1][0] == results[0][0] and len(results[0][0]) >= 2
    assert results[1][1] == results[0][1]
    assert results[1][2] == len(raws) // 500 - 1


def test_the_clock_observes_a_list_of_times_as_one_by_one() -> None:
    from stream_monitor.join import EventClock

    rng = random.Random(4)
    for trial in range(300):
        times = [None if rng.random() < 0.1 else 1000.0 + i + rng.uniform(-60, 60) for i in range(rng.randrange(6))]
        if trial % 3 == 0 and times:
            times[rng.randrange(len(times))] = 1e9  # a jump: the list is refused
        start = rng.choice([None, 990.0, 2000.0])
        one, whole = EventClock(100.0), EventClock(100.0)
        one.now = whole.now = start
        results = [one.observe(ts) for ts in times if ts is not None]
        if whole.observe_all(times):
            assert not any(clamped for _, clamped in results)
            assert whole.state() == one.state()
        else:
            assert whole.state() == EventClock(100.0).state() or whole.now == start


def test_prefixes_the_clock_takes_at_once_and_the_far_times_between_them_are_one_by_one() -> None:
    from stream_monitor.join import EventClock

    rng = random.Random(5)
    for trial in range(500):
        times = [None if rng.random() < 0.1 else 1000.0 + i + rng.uniform(-60, 60) for i in range(rng.randrange(1, 30))]
        for _ in range(rng.randrange(4)):
            times[rng.randrange(len(times))] = rng.choice([1e9, -1e9, 5000.0])  # far ahead, behind, a jump
        start = rng.choice([None, 990.0, 2000.0])
        one, pieces = EventClock(100.0), EventClock(100.0)
        one.now = pieces.now = start
        expected = [one.observe(ts) if ts is not None else None for ts in times]
        got: list = []
        done = 0
        while done < len(times):
            taken = pieces.observe_prefix(times[done:])
            got += [None if ts is None else (ts, False) for ts in times[done:done + taken]]
            done += taken
            if done < len(times):  # a far time: on its own
                got.append(pieces.observe(times[done]))  # type: ignore[arg-type]
                done += 1
        assert got == expected and pieces.state() == one.state(), (trial, times, start)


def test_replay_reads_the_lines_iterating_the_file_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    from stream_monitor import replay as replay_module

    monkeypatch.setattr(replay_module, "_READ_BYTES", 7)  # lines and line ends cut across reads
    rng = random.Random(2)
    for _ in range(3000):
        data = bytes(rng.choice(b"ab\r\n") for _ in range(rng.randrange(40)))
        expected = [line.rstrip(b"\r\n") for line in io.BytesIO(data)]
        size = rng.randrange(1, 5)
        chunks = list(replay_module._chunks(io.BytesIO(data), size))
        assert [line for chunk in chunks for line in chunk] == expected
        assert all(len(chunk) == size for chunk in chunks[:-1]) and all(chunks)


@pytest.mark.parametrize(("seed", "batch"), [(11, 1000), (12, 250)])
def test_blocks_with_labels_give_the_alerts_counts_and_join_of_their_records(
        seed: int, batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """With labels on, a block's predictions go to the join from its columns (no event decoded per
    message) and its features column-wise: the alerts, metrics and join state of its records."""
    settings = Settings()
    scenario = Scenario(models=("fraud",), n_events=9000, n_numeric=3, n_categorical=1, seed=seed,
                        label_delay_events=150,
                        drifts=(parse_drift("fraud:feature:f01@3000:shift=1.5"),
                                parse_drift("performance:error_rate@4000:error=0.35")))
    items = list(stream(scenario))
    rng = random.Random(seed)
    results = []
    for as_block in (False, True):
        registry = CollectorRegistry()
        pipeline = Pipeline(settings, Metrics(registry), join_labels=True)
        decoder = Decoder(settings)
        monkeypatch.setattr(PredictionBlock, "events", _no_events)
        alerts: list[bytes] = []
        blocks = 0
        rng.seed(seed)
        for start in range(0, len(items), batch):
            chunk = items[start:start + batch]
            batch_items: list = []
            run: list[bytes] = []
            kafka: list[float | None] = []

            def flush() -> None:
                nonlocal blocks
                if not run:
                    return
                block = decoder.block(list(run), pipeline.block_schema()) if as_block else None
                if block is not None:
                    blocks += 1
                    quiet = 40 if start == 2000 else 0
                    batch_items.append(RecordBlock(block, 0, list(kafka), quiet))
                else:
                    batch_items.extend(Record(decoder.prediction(raw), 0, kafka[i], start == 2000 and i < 40)
                                       for i, raw in enumerate(run))
                run.clear()
                kafka.clear()

            for number, (kind, item) in enumerate(chunk, start):
                if kind == "prediction":
                    run.append(orjson.dumps(item))
                    kafka.append(None if rng.random() < 0.2 else 1_764_000_000.0 + number / 100)
                else:
                    if rng.random() < 0.05:  # a label between predictions cuts the run
                        flush()
                    batch_items.append(LabelRecord(decoder.label(orjson.dumps(item)), 0, None))
            flush()
            alerts += [a.to_json() for a in pipeline.process(batch_items)]
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for metric in registry.collect()
                   for s in metric.samples if not s.name.endswith("_created") and "seconds" not in s.name}
        results.append((alerts, samples, repr(pipeline.join.state_dict()), blocks))
    (expected, expected_samples, expected_join, _), (got, got_samples, got_join, blocks) = results
    assert {orjson.loads(a)["signal"] for a in expected} >= {"feature:f01", "performance:error_rate"}
    assert got == expected
    assert got_samples == expected_samples
    assert got_join == expected_join
    assert blocks > len(items) // batch  # most predictions went as blocks


def _no_events(self):  # type: ignore[no-untyped-def]
    raise AssertionError("a block was taken apart into events")


@pytest.mark.parametrize(("seed", "decoder"), [(9, "native"), (10, "native"), (9, "msgspec")])
def test_blocks_with_nulls_give_the_alerts_and_counts_of_value_by_value(
        seed: int, decoder: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replay in blocks with nulls in a numeric feature and in the prediction, decoded by the
    compiled decoder (numeric columns as float64, NaN for null) or by msgspec (numpy 2.4 reads a
    None as NaN): the same alerts, counts and summary as value by value."""
    from stream_monitor.events.batch import ColumnBlock
    if decoder == "native":
        pytest.importorskip("stream_monitor_decode", reason="the compiled block decoder is not built")
        monkeypatch.delenv("STREAM_MONITOR_NATIVE_DECODE", raising=False)
    else:
        monkeypatch.setenv("STREAM_MONITOR_NATIVE_DECODE", "0")
    path = tmp_path / "events.jsonl"
    scenario = Scenario(n_events=8000, n_numeric=3, n_categorical=1, seed=seed,
                        drifts=(parse_drift("fraud:feature:f01@3000:shift=1.5"),
                                parse_drift("fraud:prediction@5000:shift=1")))
    lines = []
    for number, (event, _) in enumerate(generate(scenario)):
        if number % 7 == 3:
            event["features"]["f01"] = None
        if number % 11 == 5:
            event["prediction"] = None
        lines.append(orjson.dumps(event) + b"\n")
    path.write_bytes(b"".join(lines))
    kinds = _spy_blocks(monkeypatch, lambda records: type(records.block))
    expected = _replay(path, False, monkeypatch)
    assert kinds == []
    got = _replay(path, True, monkeypatch)
    assert len(kinds) >= 7 and set(kinds) == {ColumnBlock if decoder == "native" else PredictionBlock}
    assert got == expected
    assert b'"signal":"feature:f01"' in got[0] and b'"signal":"prediction"' in got[0]


@pytest.mark.parametrize("decoder", ["native", "msgspec"])
def test_a_stream_with_bad_lines_and_far_times_spread_through_it_still_goes_in_blocks(
        decoder: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """1% rejected lines and 0.2% far-ahead times in every chunk: the rejects are holes in the blocks,
    a clamped time goes on its own between two pieces; the alerts, counts and summary of value by value."""
    if decoder == "native":
        pytest.importorskip("stream_monitor_decode", reason="the compiled block decoder is not built")
        monkeypatch.delenv("STREAM_MONITOR_NATIVE_DECODE", raising=False)
    else:
        monkeypatch.setenv("STREAM_MONITOR_NATIVE_DECODE", "0")
    rng = random.Random(14)
    scenario = Scenario(n_events=8000, n_numeric=3, n_categorical=1, seed=14,
                        drifts=(parse_drift("fraud:feature:f01@3000:shift=1.5"),))
    lines = []
    for event, _ in generate(scenario):
        roll = rng.random()
        if roll < 0.01:
            lines.append(rng.choice([b"not json", b"", b'{"event_id": "x", "model": "fraud", "prediction": NaN}']))
        elif roll < 0.012:
            event["ts"] += 10 * 86400.0  # far ahead of the clock: clamped
        lines.append(orjson.dumps(event))
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    blocks = _spy_blocks(monkeypatch)
    expected = _replay(path, False, monkeypatch)
    got = _replay(path, True, monkeypatch)
    assert got == expected and b"feature:f01" in got[0]
    assert sum(got[2].rejected.values()) >= 60 and sum(got[2].clamped.values()) >= 8
    # all but the first two chunks (the first's events wait for a full batch, so the schema is
    # known from the third) and the clamped events go in blocks
    assert sum(blocks) >= 8000 - 2000 - sum(got[2].clamped.values())


# -- mixed blocks: a partition carrying several models or a canary's two versions ---------------------

def _mixed_scenarios(seed: int) -> dict[str, Scenario]:
    return {
        # a canary: version 2 takes 30% of the traffic from event 1500, its predictions shifted
        "canary": Scenario(models=("fraud",), n_events=9000, n_numeric=3, n_categorical=1, seed=seed,
                           candidate_version="2", candidate_share=0.3, candidate_from=500,
                           candidate_score_shift=1.0, candidate_error_rate=0.3, label_delay_events=150,
                           drifts=(parse_drift("fraud:feature:f01@4000:shift=1.5"),)),
        # four models round robin on one partition, one drifting
        "models": Scenario(models=("a", "b", "c", "d"), n_events=2500, n_numeric=3, n_categorical=1, seed=seed,
                           label_delay_events=150, drifts=(parse_drift("c:feature:f00@1200:scale=3"),)),
    }


@pytest.mark.parametrize(("shape", "seed"), [("canary", 31), ("canary", 32), ("models", 33)])
def test_interleaved_models_and_versions_replay_in_mixed_blocks_with_the_alerts_of_value_by_value(
        shape: str, seed: int, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several (model, version)s interleaved in one stream (a canary compared live, models sharing a
    partition), with bad lines and far times: replay takes most events in mixed blocks, and gives
    the alerts (version comparisons included), counts and summary of value by value."""
    from stream_monitor.events.batch import MixedBlock
    items = [("prediction", event) for event, _ in generate(_mixed_scenarios(seed)[shape])]
    path = tmp_path / "events.jsonl"
    path.write_bytes(_lines(items, seed))
    mixed = _spy_blocks(monkeypatch, lambda records: len(records) if isinstance(records.block, MixedBlock) else None)
    expected = _replay(path, False, monkeypatch)
    got = _replay(path, True, monkeypatch)
    assert got[0] == expected[0]
    assert got[1] == expected[1]
    assert got[2] == expected[2]
    signals = {(alert["model"], alert["signal"], alert["detector"]) for alert in map(orjson.loads, got[0].splitlines())}
    if shape == "canary":
        # the candidate's shifted predictions are told apart from the baseline's, and the feature drift seen
        assert {("fraud", "prediction", "version_compare"), ("fraud", "feature:f01", "page_hinkley")} <= signals
    else:
        assert ("c", "feature:f00") in {signal[:2] for signal in signals}
    # all but the first chunks (which teach the schemas) and the lines around clamped times go mixed
    assert sum(mixed) >= 0.6 * len(items)


@pytest.mark.parametrize(("shape", "seed", "batch"), [("canary", 34, 1000), ("models", 35, 400)])
def test_mixed_blocks_with_labels_give_the_alerts_counts_and_join_of_their_records(
        shape: str, seed: int, batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """With labels, a mixed block's predictions reach the join in arrival order across its versions
    (the join's per-model and global caps depend on it) and its columns go to their signals: the
    alerts, metrics and join state of its records."""
    from stream_monitor.events.batch import MixedBlock
    settings = Settings()
    items = list(stream(_mixed_scenarios(seed)[shape]))
    results = []
    for as_block in (False, True):
        registry = CollectorRegistry()
        pipeline = Pipeline(settings, Metrics(registry), join_labels=True)
        decoder = Decoder(settings)
        monkeypatch.setattr(PredictionBlock, "events", _no_events)
        alerts: list[bytes] = []
        mixed = 0
        for start in range(0, len(items), batch):
            batch_items: list = []
            run: list[bytes] = []

            def flush() -> None:
                nonlocal mixed
                spans = (decoder.spans(list(run), pipeline.block_schema(), pipeline.schema_of) if as_block
                         else [(0, len(run), None)])
                for first, stop, block in spans:
                    if block is not None:
                        assert not block.holes
                        mixed += len(block) if isinstance(block, MixedBlock) else 0
                        batch_items.append(RecordBlock(block, 0, [None] * len(block), 0))
                    else:
                        batch_items.extend(Record(decoder.prediction(raw), 0, None) for raw in run[first:stop])
                run.clear()

            for number, (kind, item) in enumerate(items[start:start + batch], start):
                if kind == "prediction":
                    run.append(orjson.dumps(item))
                else:
                    if number % 401 == 0:  # a label between predictions cuts the run
                        flush()
                    batch_items.append(LabelRecord(decoder.label(orjson.dumps(item)), 0, None))
            flush()
            alerts += [a.to_json() for a in pipeline.process(batch_items)]
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for metric in registry.collect()
                   for s in metric.samples if not s.name.endswith("_created") and "seconds" not in s.name}
        results.append((alerts, samples, repr(pipeline.join.state_dict()), mixed))
    (expected, expected_samples, expected_join, _), (got, got_samples, got_join, mixed) = results
    assert any(orjson.loads(a)["signal"] == "performance:error_rate" for a in expected) or shape == "models"
    assert got == expected
    assert got_samples == expected_samples
    assert got_join == expected_join
    assert mixed >= 0.5 * sum(kind == "prediction" for kind, _ in items)


@pytest.mark.parametrize("shape", ["rfc3339 times", "booleans", "unknown fields", "integer versions"])
def test_streams_of_usual_producer_shapes_go_in_blocks_with_the_alerts_of_value_by_value(
        shape: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What producers commonly write and the contract allows: ``ts`` as RFC 3339 strings in several
    forms, a boolean feature and a boolean prediction (categories "true"/"false"), top-level fields
    outside the contract (counted in ``unknown_fields_total``), an integer ``model_version``: replay
    takes the stream in blocks (with the compiled decoder) and gives the alerts, counts (the unknown
    fields' included) and summary of value by value."""
    import datetime

    pytest.importorskip("stream_monitor_decode", reason="the compiled block decoder is not built")
    monkeypatch.delenv("STREAM_MONITOR_NATIVE_DECODE", raising=False)
    scenario = Scenario(n_events=8000, n_numeric=3, n_categorical=1, seed=15,
                        drifts=(parse_drift("fraud:feature:f01@3000:shift=1.5"),))
    rng = random.Random(15)
    lines = []
    for number, (event, _) in enumerate(generate(scenario)):
        if shape == "booleans":
            event["features"]["is_new"] = rng.random() < (0.2 if number < 5000 else 0.6)
            event["prediction"] = event["prediction"] > 0.5
        elif shape == "unknown fields":
            event["request_id"] = f"r{number}"
            if number % 10 == 0:
                event["meta"] = {"host": "a", "latency_ms": [3, 4.5], "ok": True, "z": None}
        elif shape == "integer versions":
            event["model_version"] = 3
        else:
            when = datetime.datetime.fromtimestamp(event["ts"], datetime.timezone.utc)
            event["ts"] = (when.isoformat() if number % 3 == 0 else
                           when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if number % 3 == 1 else
                           when.astimezone(datetime.timezone(datetime.timedelta(hours=-5))).isoformat())
        lines.append(orjson.dumps(event))
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    blocks = _spy_blocks(monkeypatch)
    expected = _replay(path, False, monkeypatch)
    got = _replay(path, True, monkeypatch)
    assert got == expected and b"feature:f01" in got[0]
    if shape == "booleans":
        assert b"feature:is_new" in got[0]  # the boolean feature's share of true moved at 5000
    if shape == "unknown fields":
        assert got[1][("stream_monitor_unknown_fields_total", (("topic_kind", "predictions"),))] == 8000
    if shape == "integer versions":
        assert b'"model_version":"3"' in got[0]
    assert sum(blocks) >= 8000 - 2000  # all but the first two chunks (the schema is known from the third)
