"""Delivery modes (issue 11): throughput of at_least_once beside exactly_once, and alert latency.

Usage::

    .venv/bin/python bench/delivery.py [--quick] [--bootstrap HOST:PORT]

Every figure is measured against a real broker (``--bootstrap``, else
``KAFKA_BOOTSTRAP``, else the local broker of ``deploy/local/kafka.py``,
started if needed), with ``stream-monitor run`` as a child process; the
baseline of each exactly-once figure is the at-least-once one of the same run.

1. **Throughput.** One topic (one partition) is preloaded with the same
   events for every run (one model: 20 numeric features, 1 categorical, a
   score prediction; a drift every 10,000 events so that alerts go out).
   ``stream-monitor run --exit-when-idle`` reads it with ``delivery:
   at_least_once`` and with ``delivery: exactly_once``, a fresh group each
   time, the two modes alternating (which goes first swaps each repeat).
   Between the first scrape of ``/metrics`` that shows consumed events and
   the first one that shows all of them, the CPU seconds of the whole monitor
   process (every thread: ``utime + stime`` of ``/proc/<pid>/stat``) and the
   wall seconds give events per CPU-second and per wall-second; medians over
   the repeats, and the ratio exactly_once / at_least_once. The issue's rule:
   exactly_once is the default if it costs at most 10% of throughput. The
   whole process (start, restore, idle exit) is printed too, from
   ``os.wait4``'s resource usage.
2. **Alert latency.** Four models (same shape), a drift every
   ``rate / 10`` events of a model on a rotating feature (about 20 alerts a
   second at either rate). A warm-up prefix (the detectors' reference
   windows, no drift) is produced at once and consumed; then a producer
   sends the rest at a steady rate (1,000 and 10,000 events/s) and keeps
   ``event_id -> produce time``. A ``read_committed`` reader (librdkafka's
   defaults otherwise, like ``stream-monitor alerts``) in a thread of this
   process notes when each alert arrives: the latency is that time minus the
   produce time of the event the alert names (``alert.event_id``). p50, p99
   and max for at_least_once and for exactly_once at the default
   ``consumer.transaction_interval_s`` (1 s) and at 0.2 s; with the
   monitor's CPU per event over the steady phase (the cost at a given rate).

Each run also prints what would be a bug or a distortion: a duplicate alert
for a ``read_committed`` reader, alerts that differ between runs of the same
input, transactions not committed (``stream_monitor_transactions_total``),
warnings and errors in the monitor's log, a producer that could not hold its
rate. Nothing is asserted: only a crash changes the exit status.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stream_monitor.simulate import Scenario, generate, parse_drift  # noqa: E402

MODES = ("at_least_once", "exactly_once")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: seconds between two scrapes of the monitor's /metrics while it works (each costs it a little CPU)
SCRAPE_EVERY_S = 0.25
#: the monitor stops after this long without a message
IDLE_EXIT_S = 3.0
#: after the last event is consumed, the last scrape waits this long (beyond the 1 s transaction
#: interval, within the idle exit) so that its counters include the last commit
SETTLE_S = 1.5
#: latency runs: models, and the events of each before its first drift (past every warm-up)
LATENCY_MODELS = ("fraud", "churn", "credit", "ads")
WARMUP_EVENTS = 2_000
#: the exactly-once transaction intervals of the latency runs (1.0 is the default)
INTERVALS = (1.0, 0.2)

Encoded = tuple[str, bytes]
#: a line librdkafka logs to stderr: %LEVEL|TIME|FACILITY|CLIENT| MESSAGE (syslog levels)
LIBRDKAFKA_LOG = re.compile(r"^%(?P<level>\d)\|[^|]*\|(?P<facility>[^|]*)\|[^|]*\|\s*(?P<message>.*)$")
#: the bench's own admin clients: warnings and worse only (not the notice of each one's exit)
ADMIN = {"log_level": 4}


# -- the broker ------------------------------------------------------------

def bootstrap(given: str | None) -> str:
    if given:
        return given
    subprocess.run([sys.executable, str(REPO / "deploy/local/kafka.py"), "up"], check=True)
    return f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"


@dataclass
class Topics:
    """Fresh topics of one partition each: the input, the alerts and the dead letters of a run."""

    servers: str
    prefix: str
    made: list[str] = field(default_factory=list)

    def new(self, name: str) -> str:
        topic = f"{self.prefix}.{name}.{uuid.uuid4().hex[:6]}"
        admin = AdminClient({"bootstrap.servers": self.servers, **ADMIN})
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
        self.made.append(topic)
        return topic

    def delete(self) -> None:
        """The topics made here and the changelogs of the groups that read them."""
        admin = AdminClient({"bootstrap.servers": self.servers, **ADMIN})
        existing = admin.list_topics(timeout=30).topics
        doomed = [t for t in existing if t in self.made or t.startswith(f"{self.prefix}-")]
        if doomed:
            for future in admin.delete_topics(doomed).values():
                future.result(60)


def encoded(scenario: Scenario) -> Iterator[Encoded]:
    for event, _label in generate(scenario):
        yield event["event_id"], orjson.dumps(event)


def make_producer(servers: str) -> Producer:
    return Producer({"bootstrap.servers": servers, "linger.ms": 5, "compression.type": "lz4",
                     "queue.buffering.max.messages": 500_000})


def produce(producer: Producer, topic: str, value: bytes, key: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value, key=key)
            return
        except BufferError:
            producer.poll(0.05)


def preload(servers: str, topic: str, items: Iterator[Encoded]) -> int:
    producer = make_producer(servers)
    count = 0
    for event_id, value in items:
        produce(producer, topic, value, event_id.rpartition("-")[0].encode())
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError(f"preloading {topic}: not every event was delivered")
    return count


def read_alerts(servers: str, topic: str) -> list[dict]:
    """Every alert on ``topic`` that a read_committed reader sees, in order."""
    consumer = Consumer({"bootstrap.servers": servers, "group.id": f"bench-read-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "enable.partition.eof": True, "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    alerts = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    break
                raise RuntimeError(f"reading {topic}: {message.error()}")
            alerts.append(orjson.loads(message.value()))
    finally:
        consumer.close()
    return alerts


# -- one monitor process -----------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of a live process."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rpartition(b")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Sample:
    """One scrape of the monitor: when, its CPU seconds then, and events consumed."""

    wall: float
    cpu: float
    consumed: float


class Monitor:
    """``stream-monitor run`` in a child process, with a fresh group."""

    def __init__(self, servers: str, workdir: Path, predictions: str, alerts: str, dead_letter: str,
                 delivery: str, interval_s: float, group_prefix: str) -> None:
        self.group = f"{group_prefix}-{uuid.uuid4().hex[:8]}"
        self.predictions = predictions
        self.alerts = alerts
        config = workdir / f"{self.group}.yaml"
        config.write_text(
            f"kafka: {{bootstrap_servers: '{servers}', group_id: {self.group}}}\n"
            f"topics: {{predictions: '{predictions}', alerts: '{alerts}', dead_letter: '{dead_letter}', "
            f"labels: null}}\n"
            f"delivery: {delivery}\n"
            f"consumer: {{transaction_interval_s: {interval_s}}}\n"
            "metrics: {host: 127.0.0.1, port: 0}\n")
        self.log_path = workdir / f"{self.group}.log"
        self._log = open(self.log_path, "wb")
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stream_monitor.cli", "run", "--config", str(config),
             "--exit-when-idle", str(IDLE_EXIT_S)], stdout=self._log, stderr=self._log,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get(
                "PYTHONPATH")))), "STREAM_MONITOR_LOG_LEVEL": "INFO"})
        self.port = self._metrics_port()
        #: the last scrape's samples, by name and labels
        self.last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        #: after exit: the return code, CPU seconds and wall seconds of the whole process
        self.returncode: int | None = None
        self.process_cpu = 0.0
        self.process_wall = 0.0

    def _metrics_port(self) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = re.search(rb':(\d+)/metrics"', self.log_path.read_bytes())
            if found:
                return int(found.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the monitor did not serve metrics:\n{self.log_path.read_text()[-3000:]}")

    def scrape(self) -> Sample:
        """Scrape /metrics, then read the process's CPU (the scrape's own cost is in it)."""
        if self.process.poll() is not None:
            raise RuntimeError(f"monitor exited {self.process.returncode}:\n"
                               f"{self.log_path.read_text()[-3000:]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            text = response.read().decode()
        now = time.perf_counter()
        cpu = cpu_seconds(self.process.pid)
        self.last = {(s.name, tuple(sorted(s.labels.items()))): s.value
                     for family in text_string_to_metric_families(text) for s in family.samples}
        return Sample(now, cpu, self.value("stream_monitor_events_consumed_total", topic=self.predictions))

    def value(self, name: str, **labels: str) -> float:
        return self.last.get((name, tuple(sorted(labels.items()))), 0.0)

    def transactions(self) -> dict[str, int]:
        return {dict(key[1])["outcome"]: int(value) for key, value in self.last.items()
                if key[0] == "stream_monitor_transactions_total"}

    def wait_consumed(self, count: int, timeout: float) -> tuple[Sample, Sample]:
        """Scrape until ``count`` events are consumed: the first sample with any and the first with all."""
        first = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sample = self.scrape()
            if first is None and sample.consumed > 0:
                first = sample
            if sample.consumed >= count:
                assert first is not None
                return first, sample
            time.sleep(SCRAPE_EVERY_S)
        got = self.value("stream_monitor_events_consumed_total", topic=self.predictions)
        raise RuntimeError(f"{count} events not consumed in {timeout:.0f} s (got {got:.0f})")

    def settle(self) -> None:
        """Scrape once more when the last transaction or flush is done (if it is still running)."""
        time.sleep(SETTLE_S)
        try:
            self.scrape()
        except (RuntimeError, OSError):
            pass  # it exited already: the counters are those of the last scrape

    def finish(self, timeout: float = 60.0) -> None:
        """Let it exit by itself (idle), keeping its resource usage."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
            if pid:
                self.process.returncode = self.returncode = os.waitstatus_to_exitcode(status)
                self.process_cpu = usage.ru_utime + usage.ru_stime
                self.process_wall = time.perf_counter() - self.started
                self._log.close()
                return
            time.sleep(0.05)
        self.process.kill()
        self.process.wait()
        self._log.close()
        raise RuntimeError(f"the monitor did not exit within {timeout:.0f} s")

    def problems(self) -> list[str]:
        """Warnings and errors of its log, each message once with its count."""
        seen: Counter[str] = Counter()
        for line in self.log_path.read_text(errors="replace").splitlines():
            librdkafka = LIBRDKAFKA_LOG.match(line)
            if librdkafka:
                if int(librdkafka["level"]) <= 4:  # warning or worse
                    seen[f"librdkafka {librdkafka['message'][:200]}"] += 1
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                seen[f"(not JSON) {line[:200]}"] += 1
                continue
            if isinstance(record, dict) and record.get("level") in ("WARNING", "ERROR", "CRITICAL"):
                seen[f"{record['level']} {record.get('message')} {record.get('error', '')}".strip()] += 1
        return [f"{message} (x{count})" for message, count in seen.items()]


def oddities(monitor: Monitor, delivery: str, alerts_read: int) -> list[str]:
    """What in a finished run is not the clean run it should be."""
    found = []
    if monitor.returncode != 0:
        found.append(f"exit status {monitor.returncode}")
    counted = monitor.value("stream_monitor_alerts_produced_total")
    if counted != alerts_read:
        found.append(f"stream_monitor_alerts_produced_total is {counted:.0f}; the reader saw "
                     f"{alerts_read} alerts")
    transactions = monitor.transactions()
    if delivery == "exactly_once" and set(transactions) - {"committed"}:
        found.append(f"transactions {transactions}")
    found += monitor.problems()
    return found


# -- 1: throughput -------------------------------------------------------------

@dataclass
class ThroughputRun:
    delivery: str
    events: float
    cpu: float
    wall: float
    process_cpu: float
    process_wall: float
    transactions: dict[str, int]
    alert_ids: list[str]
    oddities: list[str]

    @property
    def per_cpu(self) -> float:
        return self.events / self.cpu

    @property
    def per_wall(self) -> float:
        return self.events / self.wall


def throughput_scenario(events: int) -> Scenario:
    drifts = tuple(parse_drift(f"feature:f{number % 20:02d}@{at}:shift=1.5")
                   for number, at in enumerate(range(10_000, events, 10_000)))
    return Scenario(n_events=events, seed=1, drifts=drifts)


def throughput_run(servers: str, topics: Topics, workdir: Path, predictions: str, events: int,
                   delivery: str) -> ThroughputRun:
    alerts, dead_letter = topics.new("alerts"), topics.new("dlq")
    monitor = Monitor(servers, workdir, predictions, alerts, dead_letter, delivery, 1.0,
                      f"{topics.prefix}-{delivery}")
    try:
        first, last = monitor.wait_consumed(events, timeout=600)
        monitor.settle()
        monitor.finish()
    except BaseException:
        monitor.process.kill()
        raise
    alert_ids = [alert["alert_id"] for alert in read_alerts(servers, alerts)]
    return ThroughputRun(delivery, last.consumed - first.consumed, last.cpu - first.cpu,
                         last.wall - first.wall, monitor.process_cpu, monitor.process_wall,
                         monitor.transactions(), alert_ids, oddities(monitor, delivery, len(alert_ids)))


def measure_throughput(servers: str, workdir: Path, events: int, repeats: int) -> None:
    topics = Topics(servers, "bench.delivery")
    try:
        predictions = topics.new("events")
        began = time.perf_counter()
        preload(servers, predictions, encoded(throughput_scenario(events)))
        print(f"1. throughput: {events:,} events (one model: 20 numeric, 1 categorical, prediction; a drift "
              f"every 10,000) preloaded in {time.perf_counter() - began:.1f} s; {repeats} repeat(s) of each "
              f"mode, alternating, fresh group each")
        runs: list[ThroughputRun] = []
        for repeat in range(repeats):
            for delivery in (MODES if repeat % 2 == 0 else MODES[::-1]):
                run = throughput_run(servers, topics, workdir, predictions, events, delivery)
                runs.append(run)
                print(f"   {delivery:14} {run.per_cpu:9,.0f} events/CPU-s {run.per_wall:9,.0f} events/s  "
                      f"({run.events:,.0f} events, {run.cpu:.2f} CPU-s, {run.wall:.2f} s; whole process "
                      f"{run.process_cpu:.2f} CPU-s, {run.process_wall:.1f} s; {len(run.alert_ids)} alerts"
                      f"{'; transactions ' + str(run.transactions) if run.transactions else ''})")
                for odd in run.oddities:
                    print(f"      ! {odd}")
        report_throughput(runs)
    finally:
        topics.delete()


def report_throughput(runs: Sequence[ThroughputRun]) -> None:
    medians = {}
    for delivery in MODES:
        mine = [run for run in runs if run.delivery == delivery]
        medians[delivery] = (statistics.median(run.per_cpu for run in mine),
                             statistics.median(run.per_wall for run in mine),
                             statistics.median(run.process_cpu for run in mine))
        print(f"   median {delivery:14} {medians[delivery][0]:9,.0f} events/CPU-s "
              f"{medians[delivery][1]:9,.0f} events/s  (whole process {medians[delivery][2]:.2f} CPU-s)")
    cpu_ratio = medians["exactly_once"][0] / medians["at_least_once"][0]
    wall_ratio = medians["exactly_once"][1] / medians["at_least_once"][1]
    print(f"   exactly_once / at_least_once: {cpu_ratio:.3f} per CPU-second ({1 - cpu_ratio:+.1%} cost), "
          f"{wall_ratio:.3f} per wall-second ({1 - wall_ratio:+.1%} cost)")
    # each repeat ran both modes back to back: its own ratio shows how far the neighbours moved them
    paired = [eos.per_cpu / alo.per_cpu for alo, eos in zip(
        [run for run in runs if run.delivery == "at_least_once"],
        [run for run in runs if run.delivery == "exactly_once"])]
    print(f"   per repeat (exactly_once / at_least_once per CPU-second): "
          f"{', '.join(f'{ratio:.3f}' for ratio in paired)}")
    verdict = "within" if cpu_ratio >= 0.9 else "beyond"
    print(f"   the issue's rule (exactly_once by default if it costs at most 10%): {verdict} it, by CPU")
    reference = runs[0].alert_ids
    same = all(run.alert_ids == reference for run in runs)
    duplicated = sum(len(run.alert_ids) - len(set(run.alert_ids)) for run in runs)
    print(f"   alerts: {len(reference)} per run, {'identical' if same else 'DIFFERENT'} in every run and "
          f"mode; {duplicated} duplicated (read_committed)")
    print()


# -- 2: alert latency ----------------------------------------------------------

def latency_scenario(rate: int, steady_s: float) -> tuple[Scenario, int]:
    """The stream of a latency run, and how many of its first events are the warm-up prefix."""
    per_model = WARMUP_EVENTS + int(rate * steady_s / len(LATENCY_MODELS))
    gap = max(rate // 10, 1)
    drifts = []
    for position, model in enumerate(LATENCY_MODELS):
        # the models' drifts interleave: one every rate/10/models events of the stream
        offset = WARMUP_EVENTS + position * gap // len(LATENCY_MODELS)
        drifts += [parse_drift(f"{model}:feature:f{number % 20:02d}@{at}:shift=1.5")
                   for number, at in enumerate(range(offset, per_model, gap))]
    scenario = Scenario(models=LATENCY_MODELS, n_events=per_model, seed=3, drifts=tuple(drifts))
    return scenario, WARMUP_EVENTS * len(LATENCY_MODELS)


class AlertReader(threading.Thread):
    """A read_committed subscriber that notes when each alert arrives (``time.perf_counter``)."""

    def __init__(self, servers: str, topic: str) -> None:
        super().__init__(daemon=True)
        self._consumer = Consumer({"bootstrap.servers": servers,
                                   "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
                                   "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                   "isolation.level": "read_committed"})
        self._consumer.subscribe([topic])
        self._done = threading.Event()
        #: (received at, alert_id, event_id)
        self.received: list[tuple[float, str, str]] = []
        self.errors: list[str] = []

    def run(self) -> None:
        try:
            while not self._done.is_set():
                message = self._consumer.poll(0.1)
                if message is None:
                    continue
                now = time.perf_counter()
                if message.error():
                    self.errors.append(str(message.error()))
                    continue
                alert = orjson.loads(message.value())
                self.received.append((now, alert["alert_id"], alert["event_id"]))
        finally:
            self._consumer.close()

    def stop(self) -> None:
        self._done.set()
        self.join(30)


def steady(producer: Producer, topic: str, items: Sequence[Encoded], rate: float,
           sent: dict[str, float]) -> float:
    """Produce ``items`` at ``rate`` per second, noting each one's produce time; the achieved rate."""
    began = time.perf_counter()
    done = 0
    while done < len(items):
        now = time.perf_counter()
        due = min(len(items), int((now - began) * rate) + 1)
        while done < due:
            event_id, value = items[done]
            sent[event_id] = time.perf_counter()
            produce(producer, topic, value, event_id.rpartition("-")[0].encode())
            done += 1
        producer.poll(0)
        time.sleep(0.001)
    return len(items) / (time.perf_counter() - began)


@dataclass
class LatencyRun:
    delivery: str
    interval_s: float
    rate: int
    achieved: float
    latencies: list[float]
    alert_ids: list[str]
    duplicated: int
    in_prefix: int
    unknown: int
    cpu_per_event_us: float
    cpu_share: float
    transactions: dict[str, int]
    oddities: list[str]


def latency_run(servers: str, workdir: Path, items: Sequence[Encoded], prefix: int, rate: int,
                delivery: str, interval_s: float) -> LatencyRun:
    topics = Topics(servers, "bench.latency")
    try:
        predictions, alerts, dead_letter = topics.new("events"), topics.new("alerts"), topics.new("dlq")
        monitor = Monitor(servers, workdir, predictions, alerts, dead_letter, delivery, interval_s,
                          f"{topics.prefix}-{delivery}")
        reader = AlertReader(servers, alerts)
        reader.start()
        try:
            producer = make_producer(servers)
            sent: dict[str, float] = {}
            for event_id, value in items[:prefix]:
                produce(producer, predictions, value, event_id.rpartition("-")[0].encode())
            producer.flush(60)
            monitor.wait_consumed(prefix, timeout=120)
            start = monitor.scrape()
            achieved = steady(producer, predictions, items[prefix:], rate, sent)
            producer.flush(60)
            _, end = monitor.wait_consumed(len(items), timeout=300)
            monitor.settle()
            monitor.finish()
            time.sleep(0.5)  # the last transaction, committed at exit, reaches the reader
        except BaseException:
            monitor.process.kill()
            raise
        finally:
            reader.stop()
    finally:
        topics.delete()
    latencies, in_prefix, unknown = [], 0, 0
    ids = Counter(alert_id for _, alert_id, _ in reader.received)
    first_seen: set[str] = set()
    warmup = {event_id for event_id, _ in items[:prefix]}
    for received, alert_id, event_id in reader.received:
        if alert_id in first_seen:
            continue
        first_seen.add(alert_id)
        if event_id in sent:
            latencies.append(received - sent[event_id])
        elif event_id in warmup:
            in_prefix += 1
        else:
            unknown += 1
    events = end.consumed - start.consumed
    cpu = end.cpu - start.cpu
    odd = oddities(monitor, delivery, len(ids)) + [f"reader: {error}" for error in reader.errors]
    return LatencyRun(delivery, interval_s, rate, achieved, latencies, sorted(ids),
                      sum(count - 1 for count in ids.values()), in_prefix, unknown,
                      cpu / events * 1e6 if events else float("nan"), cpu / (end.wall - start.wall),
                      monitor.transactions(), odd)


def measure_latency(servers: str, workdir: Path, rates: Sequence[int], steady_s: float,
                    intervals: Sequence[float]) -> None:
    print(f"2. alert latency, produce -> visible to a read_committed reader: {len(LATENCY_MODELS)} models "
          f"(20 numeric, 1 categorical, prediction), warm-up prefix {WARMUP_EVENTS:,} events a model, then "
          f"{steady_s:.0f} s at a steady rate with a drift every rate/10 events of a model")
    print(f"   {'rate/s':>7} {'delivery':14} {'interval':>8} {'alerts':>6} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'CPU us/event':>12} {'CPU share':>9} {'achieved/s':>10}")
    for rate in rates:
        scenario, prefix = latency_scenario(rate, steady_s)
        items = list(encoded(scenario))
        configs = [("at_least_once", 1.0)] + [("exactly_once", interval) for interval in intervals]
        alert_sets = []
        for delivery, interval in configs:
            run = latency_run(servers, workdir, items, prefix, rate, delivery, interval)
            alert_sets.append(run.alert_ids)
            shown = f"{interval:.1f} s" if delivery == "exactly_once" else "-"
            if run.latencies:
                p50, p99 = np.percentile(np.array(run.latencies) * 1e3, [50, 99])
                worst = max(run.latencies) * 1e3
            else:
                p50 = p99 = worst = float("nan")
            print(f"   {rate:7,} {delivery:14} {shown:>8} {len(run.latencies):6} {p50:8.0f} {p99:8.0f} "
                  f"{worst:8.0f} {run.cpu_per_event_us:12.1f} {run.cpu_share:9.1%} {run.achieved:10,.0f}")
            notes = list(run.oddities)
            if run.duplicated:
                notes.append(f"{run.duplicated} duplicated alerts (read_committed)")
            if run.in_prefix or run.unknown:
                notes.append(f"{run.in_prefix} alerts named a warm-up event, {run.unknown} an unknown one "
                             f"(not in the latency figures)")
            if run.achieved < 0.95 * rate:
                notes.append(f"the producer held only {run.achieved:,.0f} events/s")
            if run.transactions:
                notes.append(f"transactions {run.transactions}")
            for note in notes:
                print(f"      {'!' if note in run.oddities else '-'} {note}")
        same = all(ids == alert_sets[0] for ids in alert_sets)
        print(f"   {rate:7,} alerts (by alert_id): {'the same' if same else 'DIFFERENT'} in the "
              f"{len(alert_sets)} runs of this input")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller streams, one repeat (a smoke run)")
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"),
                        help="the broker (default: KAFKA_BOOTSTRAP, else the local one, started if needed)")
    args = parser.parse_args(argv)
    if args.quick:
        events, repeats, steady_s, intervals = 30_000, 1, 6.0, INTERVALS[:1]
    else:
        events, repeats, steady_s, intervals = 200_000, 3, 20.0, INTERVALS
    servers = bootstrap(args.bootstrap)
    import confluent_kafka

    print(f"python {platform.python_version()}, confluent-kafka {confluent_kafka.version()[0]}, "
          f"librdkafka {confluent_kafka.libversion()[0]}, {platform.machine()}, {os.cpu_count()} CPUs; "
          f"broker {servers}; CPU seconds of the whole monitor process (/proc/<pid>/stat, every thread)\n")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        measure_throughput(servers, Path(folder), events, repeats)
        measure_latency(servers, Path(folder), (1_000, 10_000), steady_s, intervals)
    print(f"total {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
