"""Per-core throughput: ``replay`` and ``run`` beside their baselines, in one run (issue 13).

    python bench/throughput.py [--events 100000] [--repeats 5] [--run-events 200000] [--detectors] [--labels]
                               [--shapes]

Figures are CPU seconds of this process (all threads), medians of the repeats:

- ``replay`` events/s over the 22-signal simulated model (20 numeric features,
  1 categorical, a score prediction), the batch path beside today's path
  (one-message decode, value-by-value routing) on the same file, and the batch
  path with its blocks decoded by msgspec instead of the compiled decoder
  (``STREAM_MONITOR_NATIVE_DECODE=0``; when that decoder is not built, both are msgspec);
  and both batch paths on the same events with 1% rejected lines between them;
- per stage, us/event: decode+validate, route (``Pipeline.process`` less the
  detectors), detect (detector updates and alert building), rest (reading
  lines, records, the merge, writing alerts);
- with KAFKA_BOOTSTRAP set: ``run`` (the service, in this process) from the real
  broker until caught up, in events per CPU-second, beside a plain
  ``consume(1000)`` loop touching every message value; their ratio (how each
  repeat pairs them: :func:`bench_run`); the run again with msgspec block decode;
  and, from one more run with stage timers, where the run's CPU goes, us/event:
  decode (``_decode_run``), route
  (``Pipeline.process`` less the detectors), detect, service (the rest of the
  batch: offsets, metrics, alerts, checkpoint), consume+loop (the rest of the
  main thread), other threads (librdkafka's);
- with ``--labels`` too: ``run`` again with a label for every prediction on a
  labels topic (the join, the error-rate detectors), in predictions per CPU-second;
- with ``--detectors``: each detector class's CPU in a replay, per event and
  per value, its calls per batch and the fixed cost of one call;
- with ``--shapes``: streams of several (model, version)s interleaved on one
  partition (a canary compared live, four models round robin): ``replay``
  with mixed blocks beside without them (only the last seen (model, version)
  in blocks), and ``run`` from the broker of each beside the consume-only loop;
  and ``replay`` of the stream as producers commonly write it (``ts`` as RFC
  3339, a boolean feature, a field of their own, an integer version, more
  features than the signal cap), compiled decoder beside msgspec block decode.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from contextlib import contextmanager
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from _preload import preload  # noqa: E402
from stream_monitor.config import Settings  # noqa: E402
from stream_monitor.errors import BadMessage  # noqa: E402
from stream_monitor.monitor import Monitor, Record, RecordBlock  # noqa: E402
from stream_monitor.pipeline import Decoder, Pipeline  # noqa: E402
from stream_monitor.replay import replay  # noqa: E402
from stream_monitor.simulate import Scenario, generate  # noqa: E402


def write_events(path: Path, events: int, bad_share: float = 0.0) -> None:
    """The simulated stream as JSON lines; with ``bad_share``, that share of lines (between the
    events) the one-message decoder rejects."""
    rng = random.Random(2)
    with open(path, "wb") as handle:
        for event, _ in generate(Scenario(n_events=events, seed=1)):
            if bad_share and rng.random() < bad_share:
                handle.write(b"not json\n")
            handle.write(orjson.dumps(event) + b"\n")


def cpu(function: Callable[[], object]) -> float:
    started = time.process_time()
    function()
    return time.process_time() - started


def replay_today(settings: Settings, path: Path) -> None:
    """Today's path: one-message decode, value-by-value routing (the same batches as replay)."""
    pipeline = Pipeline(settings, None, join_labels=False)
    pipeline.monitor = Monitor(settings, columnar=False)
    decoder = Decoder(settings)
    out = io.BytesIO()
    batch: list[Record] = []
    with open(path, "rb") as handle:
        for line in handle:
            try:
                batch.append(Record(decoder.prediction(line.rstrip(b"\r\n")), 0, None))
            except BadMessage:
                continue
            if len(batch) >= settings.consumer.batch_size:
                for alert in pipeline.process(batch):
                    out.write(alert.to_json() + b"\n")
                batch = []
    for alert in pipeline.process(batch):
        out.write(alert.to_json() + b"\n")


def replay_batch(settings: Settings, path: Path) -> None:
    replay(settings, path, io.BytesIO())


@contextmanager
def decode_with(native: bool) -> Iterator[None]:
    """Blocks decoded by the compiled decoder (when built) or by msgspec, in what is built inside."""
    before = os.environ.get("STREAM_MONITOR_NATIVE_DECODE")
    os.environ["STREAM_MONITOR_NATIVE_DECODE"] = "1" if native else "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["STREAM_MONITOR_NATIVE_DECODE"]
        else:
            os.environ["STREAM_MONITOR_NATIVE_DECODE"] = before


@contextmanager
def stage_timers(targets: dict[str, tuple[type, str]],
                 clock: Callable[[], float] = time.process_time) -> Iterator[dict[str, float]]:
    """CPU seconds spent in each ``(class, method)`` of ``targets`` while the context is open."""
    spent = dict.fromkeys(targets, 0.0)
    originals = {name: getattr(cls, method) for name, (cls, method) in targets.items()}

    def timed(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = clock()
            try:
                return original(*args, **kwargs)
            finally:
                spent[name] += clock() - started
        return wrapper

    for name, (cls, method) in targets.items():
        setattr(cls, method, timed(name, originals[name]))
    try:
        yield spent
    finally:
        for name, (cls, method) in targets.items():
            setattr(cls, method, originals[name])


def stages(settings: Settings, path: Path, columnar: bool) -> dict[str, float]:
    """CPU seconds of decode+validate, route and detect, each run on its own.

    Today's path decodes message by message and routes value by value; the
    batch path decodes each chunk as one block of the schema the first chunk
    taught (that chunk is routed first, outside the timing, and the figures
    are scaled to the whole file) and routes it column-wise.
    """
    lines = [line.rstrip(b"\r\n") for line in path.read_bytes().splitlines()]
    decoder = Decoder(settings)
    size = settings.consumer.batch_size
    chunks = [lines[start:start + size] for start in range(0, len(lines), size)]
    pipeline = Pipeline(settings, None, join_labels=False)
    pipeline.monitor = Monitor(settings, columnar=columnar)
    batches: list[list[Any]] = []

    def decode_today() -> None:
        batches.clear()
        for chunk in chunks:
            out: list[Any] = []
            for raw in chunk:
                try:
                    out.append(Record(decoder.prediction(raw), 0, None))
                except BadMessage:
                    continue
            batches.append(out)

    def decode_blocks() -> None:
        batches.clear()
        for chunk in chunks:
            block = decoder.block(chunk, schema)
            assert block is not None, "a chunk of the simulated stream left the block path"
            batches.append([RecordBlock(block)])

    if columnar:
        first = [Record(e, 0, None) for e in decoder.predictions(chunks.pop(0)) if not isinstance(e, BadMessage)]
        pipeline.process(first)
        schema = pipeline.block_schema()
    decode_s = cpu(decode_blocks if columnar else decode_today)
    with stage_timers({"detect": (Monitor, "_detect")}) as spent:
        process_s = cpu(lambda: [pipeline.process(batch) for batch in batches])
    share = len(lines) / sum(map(len, chunks))
    detect_s = spent["detect"]
    return {"decode": decode_s * share, "route": (process_s - detect_s) * share, "detect": detect_s * share}


def bench_replay(events: int, repeats: int) -> None:
    settings = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        write_events(path, events)
        names = ("today", "msgspec", "batch")
        totals: dict[str, list[float]] = {name: [] for name in names}
        profile: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        dirty = Path(tmp) / "dirty.jsonl"
        write_events(dirty, events, bad_share=0.01)
        dirty_totals: dict[str, list[float]] = {"msgspec": [], "batch": []}
        for _ in range(repeats):
            for name in ("msgspec", "batch"):
                with decode_with(native=name == "batch"):
                    dirty_totals[name].append(cpu(lambda: replay_batch(settings, dirty)))
            totals["today"].append(cpu(lambda: replay_today(settings, path)))
            profile["today"].append(stages(settings, path, columnar=False))
            for name in ("msgspec", "batch"):
                with decode_with(native=name == "batch"):
                    totals[name].append(cpu(lambda: replay_batch(settings, path)))
                    profile[name].append(stages(settings, path, columnar=True))
    print(f"replay, {events} events of the 22-signal model, CPU s, median of {repeats} "
          f"(msgspec: the batch path with msgspec block decode):")
    print(f"{'path':<8}{'events/s':>11}{'decode+validate':>17}{'route':>9}{'detect':>9}{'rest':>8}  us/event")
    for name in names:
        total = statistics.median(totals[name])
        parts = {key: statistics.median(p[key] for p in profile[name]) for key in ("decode", "route", "detect")}
        rest = max(0.0, total - sum(parts.values()))
        per = {key: value / events * 1e6 for key, value in {**parts, "rest": rest}.items()}
        print(f"{name:<8}{events / total:>11,.0f}{per['decode']:>17.2f}{per['route']:>9.2f}"
              f"{per['detect']:>9.2f}{per['rest']:>8.2f}")
    print("replay of the same events with 1% rejected lines between them, events/s: "
          f"{events / statistics.median(dirty_totals['batch']):,.0f} "
          f"(msgspec block decode {events / statistics.median(dirty_totals['msgspec']):,.0f})")
    print(f"replay speed-up: {statistics.median(totals['today']) / statistics.median(totals['batch']):.2f}x "
          f"over today's path, {statistics.median(totals['msgspec']) / statistics.median(totals['batch']):.2f}x "
          "over msgspec block decode")


#: streams of several (model, version)s interleaved on one partition, beside the one-model stream
SHAPES: dict[str, Callable[[int], Scenario]] = {
    "one model": lambda events: Scenario(n_events=events, seed=1),
    "canary 20%, compared live": lambda events: Scenario(n_events=events, seed=1, candidate_version="2",
                                                         candidate_share=0.2),
    "4 models round robin": lambda events: Scenario(models=("fraud", "churn", "risk", "ltv"),
                                                    n_events=events // 4, seed=1),
}


@contextmanager
def without_mixed_blocks() -> Iterator[None]:
    """Only the messages of the last (model, version) seen go in blocks (no :class:`MixedBlock`)."""
    original = Pipeline.schema_of
    Pipeline.schema_of = lambda self, model, model_version: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        Pipeline.schema_of = original  # type: ignore[method-assign]


def _producer_shape(name: str) -> Callable[[dict[str, Any], int], dict[str, Any]]:
    """How a producer may write the simulated event (the contract allows each of these)."""
    import datetime

    def shaped(event: dict[str, Any], number: int) -> dict[str, Any]:
        if name == "ts as RFC 3339":
            when = datetime.datetime.fromtimestamp(event["ts"], datetime.timezone.utc)
            event["ts"] = when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        elif name == "a boolean feature":
            event["features"]["is_new"] = number % 3 == 0
        elif name == "a field of its own":
            event["request_id"] = f"r-{number}"
        elif name == "integer model_version":
            event["model_version"] = 3
        elif name == "101 features (over the cap)":
            event["features"].update({f"g{index:02d}": (number * 7 + index) % 101 / 10 for index in range(80)})
        return event
    return shaped


PRODUCER_SHAPES = ["as simulated", "ts as RFC 3339", "a boolean feature", "a field of its own",
                   "integer model_version", "101 features (over the cap)"]


def bench_producer_shapes(events: int, repeats: int) -> None:
    """``replay`` of the 22-signal stream as producers commonly write it, with the compiled decoder
    beside msgspec block decode (whose typed shape takes none of these but the first: they go
    message by message)."""
    settings = Settings()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in PRODUCER_SHAPES:
            shaped = _producer_shape(name)
            path = Path(tmp) / "events.jsonl"
            with open(path, "wb") as handle:
                for number, (event, _) in enumerate(generate(Scenario(n_events=events, seed=1))):
                    handle.write(orjson.dumps(shaped(event, number)) + b"\n")
            native, msgspec_only = [], []
            if not rows:
                replay_batch(settings, path)  # the detectors' compiled code built before any figure
            for _ in range(repeats):
                with decode_with(native=True):
                    native.append(cpu(lambda: replay_batch(settings, path)))
                with decode_with(native=False):
                    msgspec_only.append(cpu(lambda: replay_batch(settings, path)))
            rows.append((name, events / statistics.median(native), events / statistics.median(msgspec_only)))
    print(f"replay of the stream as producers write it, {events} events, events/s, median of {repeats}:")
    print(f"{'stream':<30}{'compiled':>10}{'msgspec':>10}")
    for name, native_rate, msgspec_rate in rows:
        print(f"{name:<30}{native_rate:>10,.0f}{msgspec_rate:>10,.0f}")


def bench_shapes(events: int, repeats: int) -> None:
    """``replay`` of each of :data:`SHAPES`, with mixed blocks and without (then each batch's messages
    of other (model, version)s than the last seen cut it, and mostly go one by one)."""
    settings = Settings()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in SHAPES.items():
            path = Path(tmp) / "events.jsonl"
            with open(path, "wb") as handle:
                for event, _ in generate(shape(events)):
                    handle.write(orjson.dumps(event) + b"\n")
            mixed, single = [], []
            for _ in range(repeats):
                mixed.append(cpu(lambda: replay_batch(settings, path)))
                with without_mixed_blocks():
                    single.append(cpu(lambda: replay_batch(settings, path)))
            rows.append((name, events / statistics.median(mixed), events / statistics.median(single),
                         statistics.median(s / m for s, m in zip(single, mixed))))
    print(f"replay of interleaved (model, version)s, {events} events, events/s, median of {repeats} "
          f"(start-up included: each model's detectors calibrate once):")
    print(f"{'stream':<28}{'mixed blocks':>14}{'without':>10}{'speed-up':>10}")
    for name, mixed_rate, single_rate, ratio in rows:
        print(f"{name:<28}{mixed_rate:>14,.0f}{single_rate:>10,.0f}{ratio:>9.2f}x")


def detector_classes() -> list[type]:
    """The detector classes of the default set and the registry (each has its own ``update``)."""
    from stream_monitor import detectors
    classes = {type(detectors.build(spec, family_tests=1))
               for kind in detectors.SIGNAL_KINDS for spec in detectors.default_specs(kind)}
    return sorted(classes, key=lambda cls: cls.__name__)


def bench_detectors(events: int) -> None:
    """Per detector class during a replay: CPU us per event and ns per value, calls per batch, and
    the fixed cost of one call (an update with one value, on a copy of a warmed detector)."""
    import copy

    import numpy as np
    settings = Settings()
    classes = detector_classes()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        write_events(path, events)
        pipeline = Pipeline(settings, None, join_labels=False)
        values_seen = dict.fromkeys(classes, 0)
        calls = dict.fromkeys(classes, 0)
        # the method the monitor calls: update_finite where the class has its own (numeric columns)
        methods = {cls: "update_finite" if "update_finite" in vars(cls) else "update" for cls in classes}
        originals = {cls: getattr(cls, methods[cls]) for cls in classes}

        def counting(cls: type) -> Callable[..., Any]:
            def update(self: Any, values: Any) -> Any:
                values_seen[cls] += len(values)
                calls[cls] += 1
                return originals[cls](self, values)
            return update

        for cls in classes:
            setattr(cls, methods[cls], counting(cls))
        try:
            with stage_timers({cls.__name__: (cls, methods[cls]) for cls in classes}) as spent:
                lines = path.read_bytes().splitlines()
                decoder = Decoder(settings)
                for start in range(0, len(lines), settings.consumer.batch_size):
                    chunk = lines[start:start + settings.consumer.batch_size]
                    block = decoder.block(chunk, pipeline.block_schema())
                    pipeline.process([RecordBlock(block)] if block is not None else
                                     [Record(e, 0, None) for e in decoder.predictions(chunk)])
        finally:
            for cls in classes:
                setattr(cls, methods[cls], originals[cls])
    # the fixed cost of one call: a warmed detector (a copy) updated with one value, many times
    fixed: dict[type, float] = {}
    for version in pipeline.monitor._versions.values():
        for state in (*version.by_feature.values(), version.prediction):
            for detector in getattr(state, "detectors", ()):
                if detector is None or type(detector) in fixed:
                    continue
                one: Any = (np.array([1.0]) if state.kind != "categorical" else ["a"])
                # a copy through the state round trip (a deepcopy trips on shared read-only tables)
                state_dict = detector.state_dict()
                copies = []
                for _ in range(200):
                    twin = type(detector).from_spec(detector.spec().params, family_tests=1)
                    twin.load_state_dict(state_dict)
                    copies.append(twin)
                started = time.process_time()
                for twin in copies:
                    twin.update(one)
                fixed[type(detector)] = (time.process_time() - started) / len(copies)
    batches = -(-events // settings.consumer.batch_size)
    print(f"detectors in replay, {events} events (per-call overhead: one update of 1 value on a warmed copy):")
    print(f"{'detector':<20}{'us/event':>10}{'ns/value':>10}{'calls/batch':>13}{'us/call fixed':>15}")
    for cls in classes:
        if not calls[cls]:
            continue
        seconds = spent[cls.__name__]
        print(f"{cls.__name__:<20}{seconds / events * 1e6:>10.2f}{seconds / values_seen[cls] * 1e9:>10.0f}"
              f"{calls[cls] / batches:>13.1f}{fixed.get(cls, float('nan')) * 1e6:>15.1f}")


def consume_only(servers: str, topic: str, events: int) -> float:
    """CPU seconds of a plain consume(1000) loop touching every value, until all are read."""
    from confluent_kafka import Consumer
    consumer = Consumer({"bootstrap.servers": servers, "group.id": f"bench-plain-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    seen = 0
    total = 0
    started = None
    while seen < events:
        messages = consumer.consume(1000, 1.0)
        if messages and started is None:
            started = time.process_time()
        for message in messages:
            if message.error() is None:
                total += len(message.value())
                seen += 1
    spent = time.process_time() - (started or time.process_time())
    consumer.close()
    return spent


def run_service(servers: str, topic: str, events: int, labels: bool = False,
                profiled: bool = False) -> tuple[float, dict[str, float]]:
    """CPU seconds of the service (in this process) from its start until caught up; with
    ``profiled``, also where the main thread's CPU went (seconds by stage; "other threads" is
    librdkafka's). The stage timers cost two clock reads per timed call, so the headline figures
    come from runs without them."""
    from prometheus_client import CollectorRegistry

    from stream_monitor.metrics import Health, Metrics
    from stream_monitor.runtime.service import Service
    settings = Settings(kafka={"bootstrap_servers": servers, "group_id": f"bench-run-{uuid.uuid4().hex[:8]}"},
                        topics={"predictions": topic, "alerts": f"{topic}.alerts",
                                "dead_letter": f"{topic}.dlq", "labels": f"{topic}.labels" if labels else None},
                        log_level="WARNING")
    metrics = Metrics(CollectorRegistry())
    service = Service(settings, metrics, Health())
    targets = {"batch": (Service, "_process"), "decode": (Service, "_decode_run"),
               "pipeline": (Pipeline, "process"), "detect": (Monitor, "_detect")}
    with stage_timers(targets if profiled else {}, time.thread_time) as spent:
        started, main_started = time.process_time(), time.thread_time()
        service.run(max_idle_s=2.0)
        spent_s, main_s = time.process_time() - started, time.thread_time() - main_started
    consumed = metrics.registry.get_sample_value("stream_monitor_events_consumed_total", {"topic": topic})
    assert consumed == events, f"the service read {consumed} of {events} events"
    if not profiled:
        return spent_s, {}
    stages = {"decode": spent["decode"], "route": spent["pipeline"] - spent["detect"], "detect": spent["detect"],
              "service": spent["batch"] - spent["decode"] - spent["pipeline"],
              "consume+loop": main_s - spent["batch"], "other threads": spent_s - main_s}
    return spent_s, stages


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):>10,.0f}  [{min(values):,.0f}-{max(values):,.0f}]"


def bench_run(servers: str, events: int, repeats: int, labels: bool = False, shape: str = "one model") -> None:
    """Each repeat measures the consume-only loop, ``run``, ``run`` with msgspec decode and the loop
    again, back to back, so a ratio compares figures of the same minute (this machine's speed
    drifts by a third within minutes): the repeat's loop figure is the mean of the two around its
    runs, and the ratio reported is the median of the repeats' ratios. One more run of each kind,
    with stage timers, gives where the CPU goes."""
    from confluent_kafka.admin import AdminClient
    topic = f"bench.throughput.{uuid.uuid4().hex[:8]}"
    preload(servers, topic, events, labels, SHAPES[shape](events))
    plain, ours, msgspec_run = [], [], []
    try:
        for _ in range(repeats):
            before = events / consume_only(servers, topic, events)
            with decode_with(native=True):
                ours.append(events / run_service(servers, topic, events, labels)[0])
            with decode_with(native=False):
                msgspec_run.append(events / run_service(servers, topic, events, labels)[0])
            # the loop again after the runs: the repeat's figure is the mean of the two around them
            plain.append((before + events / consume_only(servers, topic, events)) / 2)
        with decode_with(native=True):
            profile = run_service(servers, topic, events, labels, profiled=True)[1]
        with decode_with(native=False):
            msgspec_profile = run_service(servers, topic, events, labels, profiled=True)[1]
    finally:
        AdminClient({"bootstrap.servers": servers}).delete_topics(
            [topic, f"{topic}.alerts", f"{topic}.dlq"] + ([f"{topic}.labels"] if labels else []))
    with_labels = f" and {events} labels (joined, error rate monitored)" if labels else ""
    of = "" if shape == "one model" else f" ({shape})"
    print(f"run from the broker, {events} events{of}{with_labels}, events per CPU-second, "
          f"median of {repeats} [min-max]; ratio: median of the repeats' run / consume-only [min-max]:")
    print(f"  consume-only loop  {spread(plain)}")
    for name, figures in (("stream-monitor run ", ours), ("run, msgspec decode", msgspec_run)):
        ratios = [run / loop for run, loop in zip(figures, plain)]
        print(f"  {name}{spread(figures)}  (ratio {statistics.median(ratios):.3f} "
              f"[{min(ratios):.3f}-{max(ratios):.3f}])")
    for name, stages_of in (("run", profile), ("run, msgspec decode", msgspec_profile)):
        print(f"  where {name}'s CPU goes (one more run, with stage timers), us/event: " + ", ".join(
            f"{stage} {seconds / events * 1e6:.2f}" for stage, seconds in stages_of.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--run-events", type=int, default=200_000)
    parser.add_argument("--detectors", action="store_true", help="also each detector's cost in a replay")
    parser.add_argument("--labels", action="store_true",
                        help="also run with a label per prediction on a labels topic (the join)")
    parser.add_argument("--shapes", action="store_true",
                        help="also streams of several models or versions interleaved (replay, and run)")
    args = parser.parse_args()
    bench_replay(args.events, args.repeats)
    if args.shapes:
        bench_shapes(args.events, args.repeats)
        bench_producer_shapes(args.events, args.repeats)
    if args.detectors:
        bench_detectors(args.events)
    servers = os.environ.get("KAFKA_BOOTSTRAP")
    if servers:
        from stream_monitor.runtime.allocator import tune_allocator
        # as `stream-monitor run` does at start (replay keeps glibc's defaults); for the rest of this process
        print(f"glibc mmap threshold for the run: {tune_allocator()}")
        bench_run(servers, args.run_events, args.repeats)
        if args.labels:
            bench_run(servers, args.run_events, args.repeats, labels=True)
        if args.shapes:
            for shape in list(SHAPES)[1:]:
                bench_run(servers, args.run_events, args.repeats, shape=shape)
    else:
        print("run: set KAFKA_BOOTSTRAP to measure the service from a real broker")


if __name__ == "__main__":
    main()
