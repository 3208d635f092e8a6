"""Durable state (issue 10): changelog bytes per signal, snapshot cost per event, restore time.

Usage::

    .venv/bin/python bench/state.py [--quick] [--bootstrap HOST:PORT]

Everything runs in process: snapshots are taken with
:meth:`~stream_monitor.state.store.PartitionStore.snapshot` (which encodes the
records) and the records are kept in a list, as the changelog partition would
hold them. The baseline of each figure comes from the same run:

1. **Bytes per signal** at steady state (past every default detector's warm-up,
   windows full), in our encoding (:mod:`stream_monitor.state.codec`) beside
   the JSON of the same ``state_dict()``s (``orjson.dumps``; the join's packed
   bytes as base64): a numeric signal, a categorical one,
   ``performance:error_rate``, and the label join per waiting prediction.
2. **Snapshot cost per input event** for one 22-signal model (20 numeric
   features, 1 categorical, a score prediction; labels 500 events late or no
   labels topic): CPU of one snapshot (median over rounds) divided by the
   input messages between two snapshots at the default cadence
   (``state.snapshot_interval_s`` 5 s: 5,000 messages at 1k/s per partition,
   50,000 at 10k/s), beside the CPU per message of ``Pipeline.process`` on
   the same stream. The last snapshot is then restored and both pipelines are
   fed the same drifting continuation: their alerts must be identical.
3. **Restore of about 10,000 signals**: 160 model versions (32 models x 5) of
   64 signals, each fed past its warm-ups, snapshotted once; the CPU seconds
   of ``restore_pipeline`` (decode and load, median of 3) and the bytes read.
   With ``--bootstrap`` (or ``KAFKA_BOOTSTRAP`` set) the records are also
   produced to a fresh compacted topic and the wall time of reading them back
   with :class:`~stream_monitor.state.changelog.ChangelogReader` is measured
   (median of 3); without a broker that figure is skipped, saying so.

CPU figures are ``time.process_time`` (the machine is shared; wall time would
measure the neighbours). Nothing is asserted: a mismatch is printed, and only
a crash changes the exit status.
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream_monitor.config import Settings  # noqa: E402
from stream_monitor.events import LabelEvent, PredictionEvent  # noqa: E402
from stream_monitor.monitor import Record  # noqa: E402
from stream_monitor.pipeline import LabelRecord, Pipeline  # noqa: E402
from stream_monitor.simulate import Scenario, generate, parse_drift, stream  # noqa: E402
from stream_monitor.state import codec  # noqa: E402
from stream_monitor.state.store import META_KEY, PartitionStore, restore_pipeline  # noqa: E402

#: messages per Pipeline.process call: the service's default consumer.batch_size
BATCH = 1000
#: a label arrives this many predictions after its own (as in the issue's fault tests)
LABEL_DELAY = 500
TOPICS_LABELLED = {"predictions": "bench.predictions", "labels": "bench.labels"}
TOPICS_PREDICTIONS = {"predictions": "bench.predictions"}
#: input messages between two snapshots at the default 5 s cadence, per partition
CADENCES = ((1_000, 5_000), (10_000, 50_000))
#: values of the reference snapshot in the bytes-per-signal row that has one
REFERENCE_SNAPSHOT = 3_000

Item = Record | LabelRecord
Raw = tuple[str, dict[str, Any]]
ChangelogRecord = tuple[bytes, bytes | None]


# -- inputs ---------------------------------------------------------------

def _raw_stream(scenario: Scenario, labels: bool) -> list[Raw]:
    """(kind, event dict) in arrival order: predictions, with their labels when asked."""
    if labels:
        return list(stream(scenario))
    return [("prediction", event) for event, _ in generate(scenario)]


def _items(raws: Iterable[Raw]) -> list[Item]:
    """Fresh decoded records (a pipeline may keep what it is given: never share them)."""
    out: list[Item] = []
    for kind, item in raws:
        if kind == "prediction":
            out.append(Record(PredictionEvent(item["event_id"], item["model"], item["model_version"],
                                              item["ts"], item["features"], item["prediction"])))
        else:
            out.append(LabelRecord(LabelEvent(item["event_id"], item["model"], item["label"], item["ts"])))
    return out


def _feed(pipeline: Pipeline, items: Sequence[Item]) -> tuple[list[str], float]:
    """Alert ids and CPU seconds of feeding ``items`` in batches of :data:`BATCH`."""
    ids: list[str] = []
    cpu = 0.0
    for start in range(0, len(items), BATCH):
        batch = items[start:start + BATCH]
        began = time.process_time()
        alerts = pipeline.process(batch)
        cpu += time.process_time() - began
        ids += [alert.alert_id for alert in alerts]
    return ids, cpu


# -- encodings ------------------------------------------------------------

def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"not JSON: {type(value).__name__}")


def json_size(state: Any) -> int:
    """Bytes of the JSON baseline of a state (orjson; bytes as base64)."""
    return len(orjson.dumps(state, default=_json_default,
                            option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS))


def ours_size(state: Any) -> int:
    return len(codec.encode(state))


def _record_bytes(records: Iterable[ChangelogRecord]) -> int:
    return sum(len(key) + len(value or b"") for key, value in records)


@dataclass
class Changelog:
    """One changelog partition as a list of records, and the snapshots written to it."""

    topics: dict[str, str]
    partition: int = 0

    def __post_init__(self) -> None:
        self.records: list[ChangelogRecord] = []
        self.store = PartitionStore(self.partition)
        #: CPU seconds and bytes of each snapshot
        self.cpu: list[float] = []
        self.sizes: list[int] = []

    def snapshot(self, pipeline: Pipeline, positions: dict[str, int]) -> None:
        began = time.process_time()
        keys, tail = self.store.snapshot(pipeline, positions, self.topics)
        self.cpu.append(time.process_time() - began)
        self.sizes.append(self.store.last_bytes)
        self.records += keys
        self.records += tail


def _positions(items: Sequence[Item], topics: dict[str, str]) -> dict[str, int]:
    labels = sum(isinstance(item, LabelRecord) for item in items)
    positions = {"predictions": len(items) - labels}
    if "labels" in topics:
        positions["labels"] = labels
    return positions


def _states(pipeline: Pipeline) -> list[bytes]:
    """Every key's state and the meta state, encoded (equal lists: equal states)."""
    monitor, join = pipeline.monitor, pipeline.join
    out = [codec.encode(monitor.version_state(key)) for key in sorted(monitor.version_keys())]
    out += [codec.encode(join.model_state(model)) for model in sorted(join.model_names())]
    out += [codec.encode(monitor.meta_state()), codec.encode(join.meta_state())]
    return out


# -- 1 and 2: one 22-signal model at steady state ---------------------------

@dataclass
class SteadyRun:
    """A 22-signal model fed to steady state, then in rounds with a snapshot after each."""

    labels: bool
    items_warm: int
    round_items: list[int]
    process_us: float
    snapshot_cpu: list[float]
    snapshot_bytes: list[int]
    pipeline: Pipeline
    restored_identical: bool
    continuation_alerts: tuple[int, int]
    continuation_same: bool


def steady_run(labels: bool, warm: int, rounds: int, round_size: int, continuation: int,
               seed: int) -> SteadyRun:
    """Feed ``warm`` messages, then ``rounds`` x ``round_size`` with a snapshot after each;
    restore the last one and feed both pipelines ``continuation`` messages with drifts."""
    settings = Settings()
    topics = TOPICS_LABELLED if labels else TOPICS_PREDICTIONS
    total = warm + rounds * round_size + continuation
    # predictions per message: a label follows each prediction, after LABEL_DELAY of them
    per_model_events = total // 2 + LABEL_DELAY if labels else total
    change = (warm + rounds * round_size) // (2 if labels else 1) + continuation // (8 if labels else 4)
    drifts = (parse_drift(f"feature:f03@{change}:shift=1.0"),
              parse_drift(f"feature:c00@{change}:share=0.6"),
              parse_drift(f"performance:error_rate@{change}:error=0.4"))
    raws = _raw_stream(Scenario(n_events=per_model_events, seed=seed, label_delay_events=LABEL_DELAY,
                                drifts=drifts), labels)[:total]
    items = _items(raws[:total - continuation])
    pipeline = Pipeline(settings, join_labels=labels)
    changelog = Changelog(topics)
    _feed(pipeline, items[:warm])
    process_cpu = 0.0
    for number in range(rounds):
        end = warm + (number + 1) * round_size
        _, cpu = _feed(pipeline, items[end - round_size:end])
        process_cpu += cpu
        changelog.snapshot(pipeline, _positions(items[:end], topics))
    restored = Pipeline(settings, join_labels=labels)
    restore_pipeline(restored, 0, changelog.records, topics)
    identical = _states(restored) == _states(pipeline)
    rest = raws[total - continuation:]
    ours, _ = _feed(pipeline, _items(rest))
    theirs, _ = _feed(restored, _items(rest))
    return SteadyRun(labels, warm, [round_size] * rounds, process_cpu / (rounds * round_size) * 1e6,
                     changelog.cpu, changelog.sizes, pipeline, identical, (len(ours), len(theirs)),
                     ours == theirs)


def _signal_sizes(pipeline: Pipeline) -> dict[str, list[tuple[str, Any]]]:
    """The per-signal entries of every version state, by signal kind."""
    by_kind: dict[str, list[tuple[str, Any]]] = {}
    for key in pipeline.monitor.version_keys():
        for _place, name, entry in pipeline.monitor.version_state(key)["signals"]:
            if entry is not None:
                by_kind.setdefault(entry["kind"], []).append((name, entry))
    return by_kind


def _breakdown(row: Any, entry: dict[str, Any]) -> None:
    """Rows for a signal's detectors: their state, its long lists, and long parameters."""
    for detector in entry["detectors"]:
        if detector is None:
            continue
        row(f"  of which {detector['name']} state", ours_size(detector["state"]), json_size(detector["state"]))
        for field, value in detector["state"].items():
            if isinstance(value, list) and len(value) >= 100:
                row(f"    of which {field} ({len(value):,} values)", ours_size(value), json_size(value))


def snapshot_reference_signal(size: int, events: int) -> dict[str, Any]:
    """A numeric signal's state entry when its rule has a reference snapshot of ``size`` values
    (the first ``size`` values of the same stream: no drift), after ``events`` more."""
    raws = _raw_stream(Scenario(n_events=size + events, n_numeric=1, n_categorical=0, seed=6), False)
    reference = [event["features"]["f00"] for _, event in raws[:size]]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "reference.json"
        path.write_bytes(orjson.dumps({"feature:f00": reference}))
        settings = Settings.model_validate(
            {"models": [{"model": "*", "reference": {"snapshot": str(path), "id": "reference-1"}}]})
        pipeline = Pipeline(settings, join_labels=False)
        pipeline.process(_items(raws[size:]))
    for _place, name, entry in pipeline.monitor.version_state(("fraud", "1"))["signals"]:
        if name == "f00":
            return entry
    raise RuntimeError("feature:f00 was not monitored")


def report_bytes(run: SteadyRun, join_waiting: int) -> None:
    print(f"1. changelog bytes per signal at steady state ({run.items_warm + sum(run.round_items):,} "
          f"messages, labels {LABEL_DELAY} events late; default detectors, windows full)")
    print(f"   {'state':58} {'ours':>10} {'JSON':>10} {'ours/JSON':>10}")

    def row(label: str, ours: float, theirs: float) -> None:
        print(f"   {label:58} {ours:10,.0f} {theirs:10,.0f} {ours / theirs:10.2f}")

    by_kind = _signal_sizes(run.pipeline)
    for kind, label in (("numeric", "numeric signal"), ("categorical", "categorical signal"),
                        ("error", "performance:error_rate")):
        entries = by_kind.get(kind, [])
        if not entries:
            print(f"   {label:58} (none at steady state)")
            continue
        ours = statistics.median(ours_size(entry) for _, entry in entries)
        theirs = statistics.median(json_size(entry) for _, entry in entries)
        row(f"{label} (median of {len(entries)})", ours, theirs)
        _breakdown(row, entries[0][1])
    version = run.pipeline.monitor.version_state(run.pipeline.monitor.version_keys()[0])
    signals = sum(entry is not None for *_, entry in version["signals"])
    row(f"whole model version record ({signals} signals)", ours_size(version), json_size(version))
    reference = snapshot_reference_signal(REFERENCE_SNAPSHOT, 3_000)
    row(f"numeric signal, rule with a reference snapshot of {REFERENCE_SNAPSHOT:,} values",
        ours_size(reference), json_size(reference))
    _breakdown(row, reference)

    join = Pipeline(Settings()).join
    raws = _raw_stream(Scenario(n_events=join_waiting, n_numeric=0, n_categorical=0, seed=5), False)
    for record in _items(raws):
        assert isinstance(record, Record)
        join.add_prediction(record.event)
    waiting = join.model_state("fraud")
    row(f"label join, per waiting prediction ({join_waiting:,} waiting)",
        ours_size(waiting) / join_waiting, json_size(waiting) / join_waiting)
    if run.labels:
        steady = run.pipeline.join.model_state("fraud")
        joined = steady["joined_ids"]
        if joined:
            row(f"label join, per remembered joined id ({len(joined):,})",
                ours_size(joined) / len(joined), json_size(joined) / len(joined))
        row(f"label join record at steady state ({len(steady['ids']):,} waiting, {len(joined):,} joined ids)",
            ours_size(steady), json_size(steady))
    print()


def report_cost(runs: Sequence[SteadyRun]) -> None:
    print("2. snapshot cost per input message, one 22-signal model (20 numeric, 1 categorical, prediction),")
    print(f"   state.snapshot_interval_s 5 s; baseline: Pipeline.process in batches of {BATCH} (same run)")
    for run in runs:
        cpu = statistics.median(run.snapshot_cpu) * 1e6
        size = statistics.median(run.snapshot_bytes)
        name = f"labels {LABEL_DELAY} late" if run.labels else "no labels topic"
        print(f"   {name}: Pipeline.process {run.process_us:.2f} us/message; one snapshot {cpu / 1e3:.2f} ms "
              f"CPU, {size:,.0f} bytes (median of {len(run.snapshot_cpu)})")
        for rate, every in CADENCES:
            per = cpu / every
            print(f"     {rate:>6,}/s per partition (1 snapshot per {every:,}): {per:.3f} us/message "
                  f"= {per / run.process_us:.1%} of Pipeline.process; changelog {size / 5 / 1e3:,.0f} kB/s")
        verdict = "identical" if run.restored_identical else "DIFFERENT (bug)"
        alerts = "the same" if run.continuation_same else "DIFFERENT (bug)"
        print(f"     restored from the last snapshot: state {verdict}; next alerts {alerts} "
              f"({run.continuation_alerts[0]} uninterrupted, {run.continuation_alerts[1]} restored)")
    print()


# -- 3: restore of about 10k signals -----------------------------------------

def big_pipeline(models: int, versions: int, features: int, events: int) -> Pipeline:
    """``models`` x ``versions`` model versions of ``features`` + 2 signals, each fed ``events``.

    The versions of one model get the same values (the sizes and the restore
    cost do not depend on them; generating them is a quarter of the time).
    """
    pipeline = Pipeline(Settings(), join_labels=False)
    for model in range(models):
        scenario = Scenario(models=(f"model-{model:03d}",), n_events=events, n_numeric=features,
                            n_categorical=1, seed=1000 + model)
        raws = _raw_stream(scenario, False)
        for version in range(versions):
            for _, event in raws:
                event["model_version"] = str(version + 1)
            # one batch per version: the warm-ups fill without per-batch overhead
            pipeline.process(_items(raws))
    return pipeline


def read_back(bootstrap: str, records: Sequence[ChangelogRecord], repeats: int) -> list[float]:
    """Wall seconds of ChangelogReader reading ``records`` from a fresh compacted topic."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from stream_monitor.state.changelog import ChangelogReader

    topic = f"bench.state.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config={"cleanup.policy": "compact"})])[topic].result(30)
    try:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "message.max.bytes": 1_000_000})
        for key, value in records:
            producer.produce(topic, value, key=key, partition=0)
            producer.poll(0)
        if producer.flush(60) != 0:
            raise RuntimeError("the changelog records were not all delivered")
        settings = Settings.model_validate({"kafka": {"bootstrap_servers": bootstrap,
                                                      "group_id": f"bench-{uuid.uuid4().hex[:8]}"},
                                            "state": {"topic": topic}})
        seconds = []
        for _ in range(repeats):
            reader = ChangelogReader(settings)
            try:
                began = time.perf_counter()
                got = reader.read(0)
                seconds.append(time.perf_counter() - began)
            finally:
                reader.close()
            if got != list(records):
                raise RuntimeError(f"read back {len(got)} records, produced {len(records)}")
        return seconds
    finally:
        admin.delete_topics([topic])


def _decode_all(records: Sequence[ChangelogRecord]) -> int:
    """Decode every record and every key's joined parts, as a restore does; the states decoded."""
    chunks: dict[str, list[bytes]] = {}
    for key, value in records:
        if value is None:
            continue
        decoded = codec.decode(value)
        if key != META_KEY:
            chunks.setdefault(key.decode().rpartition("#")[0], []).append(decoded[-1])
    for parts in chunks.values():
        codec.decode(b"".join(parts))
    return len(chunks)


def report_restore(models: int, versions: int, features: int, events: int, repeats: int,
                   bootstrap: str | None) -> None:
    began = time.process_time()
    pipeline = big_pipeline(models, versions, features, events)
    build_cpu = time.process_time() - began
    keys = pipeline.monitor.version_keys()
    signals = sum(len(pipeline.monitor.version_state(key)["names"]) for key in keys)
    changelog = Changelog(TOPICS_PREDICTIONS)
    changelog.snapshot(pipeline, {"predictions": models * versions * events})
    records = changelog.records
    total = _record_bytes(records)
    restore_cpu = []
    identical = True
    for repeat in range(repeats):
        fresh = Pipeline(Settings(), join_labels=False)
        began = time.process_time()
        restore_pipeline(fresh, 0, records, TOPICS_PREDICTIONS)
        restore_cpu.append(time.process_time() - began)
        if repeat == 0:
            identical = _states(fresh) == _states(pipeline)
    began = time.process_time()
    _decode_all(records)
    decode = time.process_time() - began
    restore = statistics.median(restore_cpu)
    print(f"3. restore of {signals:,} signals ({len(keys)} model versions = {models} models x {versions}, "
          f"{features} numeric + 1 categorical + prediction each, {events:,} events per version; "
          f"built in {build_cpu:.1f} s CPU)")
    print(f"   changelog: {len(records)} records, {total / 1e6:.2f} MB ({total / signals:,.0f} bytes/signal); "
          f"one snapshot took {changelog.cpu[0]:.2f} s CPU")
    verdict = "identical" if identical else "DIFFERENT (bug)"
    print(f"   restore_pipeline (decode + load): {restore:.2f} s CPU, median of {repeats} "
          f"({restore / signals * 1e6:.0f} us/signal); restored state {verdict}")
    print(f"     of which decoding the records (codec.decode alone, timed once apart): {decode:.2f} s; "
          f"the rest, building the detectors and loading their state: {restore - decode:.2f} s")
    if bootstrap is None:
        print("   reading the records back from a changelog partition: skipped (no broker: pass "
              "--bootstrap or set KAFKA_BOOTSTRAP)")
    else:
        seconds = read_back(bootstrap, records, repeats)
        print(f"   ChangelogReader.read of those records from {bootstrap}: {statistics.median(seconds):.2f} s wall, "
              f"median of {repeats} ({total / statistics.median(seconds) / 1e6:.0f} MB/s)")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller streams and fewer repeats (a smoke run)")
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"),
                        help="a broker to time reading the 10k-signal changelog back (default: "
                             "KAFKA_BOOTSTRAP; an empty value: none)")
    args = parser.parse_args(argv)
    if args.quick:
        warm, rounds, round_size, continuation, waiting = 6_000, 3, 2_000, 4_000, 2_000
        models, versions, repeats = 2, 5, 1
    else:
        # with labels, the join remembers labels.retention_events (100k) joined ids at steady state
        warm, rounds, round_size, continuation, waiting = 210_000, 7, 5_000, 8_000, 20_000
        models, versions, repeats = 32, 5, 3
    print(f"python {platform.python_version()}, msgpack {'.'.join(map(str, msgpack.version))}, "
          f"orjson {orjson.__version__}, {platform.machine()}; CPU seconds (time.process_time)\n")
    labelled = steady_run(True, warm, rounds, round_size, continuation, seed=11)
    predictions_only = steady_run(False, warm // 2, rounds, round_size, continuation, seed=12)
    report_bytes(labelled, waiting)
    report_cost([predictions_only, labelled])
    report_restore(models, versions, 62, 2_100, repeats, args.bootstrap or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
