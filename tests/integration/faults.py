"""Fault runs against the real broker, and the replay oracle they are judged by.

A fault run feeds a seeded stream to a consumer group of ``stream-monitor
run`` processes and faults it at chosen positions of the stream: SIGKILL,
SIGTERM, members joining and leaving, a hard bounce of the broker. The oracle
is the input, never the system under test: ``replay`` over the events of each
input partition, each partition as its own file (detector state is scoped by
input partition), gives the alerts the faulted run must publish. The run
passes when every replayed alert is published, no other ``alert_id`` is, and
a repeat (at-least-once delivery) has the same ``alert_id`` and the same body.

Why the stream is released in steps rather than produced whole first: the
monitor reads a 30k-event stream in well under a second, before its first
offset commit, so a fault could not be placed at a chosen position. The
:class:`Feeder` releases the stream up to a fault's position and the group
commits it (so the committed offset, where a restart resumes, is that
position); then a short tail is released and the fault lands after a seeded
delay of up to a few hundred milliseconds, while the tail is being processed
or just after: events processed, perhaps alerted on, not yet committed and
not yet in a snapshot.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from stream_monitor.config import load_settings
from stream_monitor.replay import ReplaySummary, replay
from stream_monitor.simulate import Scenario, generate, stream

from .service_harness import MonitorProcess, committed_offsets, read_all, wait_stable, write_config

#: the two values of the top-level ``delivery`` setting: every fault kind runs in both
DELIVERIES = ("at_least_once", "exactly_once")
#: the issue's bound on SIGTERM to exit
TERM_BOUND_S = 10.0
#: the smallest session timeout the broker accepts by default (group.min.session.timeout.ms):
#: a SIGKILLed member without static membership holds its partitions this long
SHORT_SESSION_MS = 6000


def event_id(model: str, number: int) -> str:
    """The id simulate gives the ``number``-th event of ``model`` (counted from 0)."""
    return f"{model}-{number:09d}"


# -- configuration ------------------------------------------------------------


def fault_config(path: Path, bootstrap: str, group_id: str, topics: Mapping[str, str], *,
                 snapshot_interval_s: float = 1.0, snapshot_events: int | None = None,
                 state_topic: str | None = None, instance_id: str | None = None,
                 session_timeout_ms: int = SHORT_SESSION_MS, commit_interval_s: float = 0.5,
                 batch_size: int = 500, delivery: str = "at_least_once", extra: str = "") -> Path:
    """A ``run`` config for a fault run: short session timeout, commits more often than snapshots.

    ``delivery`` is the top-level setting (``at_least_once`` or ``exactly_once``).
    """
    lines = [f"  snapshot_interval_s: {snapshot_interval_s}"]
    if snapshot_events is not None:
        lines.append(f"  snapshot_events: {snapshot_events}")
    if state_topic is not None:
        lines.append(f'  topic: "{state_topic}"')
    state = "state:\n" + "\n".join(lines) + "\n"
    return write_config(
        path, bootstrap, group_id, dict(topics), f"delivery: {delivery}\n" + state + extra,
        properties={"session.timeout.ms": session_timeout_ms,
                    "heartbeat.interval.ms": min(1000, session_timeout_ms // 3)},
        kafka={"instance_id": instance_id} if instance_id else None,
        consumer={"batch_size": batch_size, "commit_interval_s": commit_interval_s})


def state_topic_of(group_id: str) -> str:
    """The changelog topic the monitor creates when ``state.topic`` is not set."""
    return f"{group_id}.state"


def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)
                                   for name in names], operation_timeout=30)
    for future in futures.values():
        future.result(timeout=30)


def delete_topics(bootstrap: str, names: Iterable[str]) -> None:
    """Delete topics if they exist (clean-up only: errors are ignored)."""
    names = list(names)
    if not names:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(names, operation_timeout=30).values():
        with contextlib.suppress(Exception):
            future.result(timeout=30)


# -- the input ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message of the input stream."""

    topic: str
    key: bytes
    value: bytes
    event_id: str
    #: a message the monitor must reject: it belongs in the dead-letter topic
    poison: bool = False


def scenario_messages(scenario: Scenario, predictions_topic: str,
                      labels_topic: str | None = None) -> list[Outgoing]:
    """The scenario's events (and labels, when a topic is given) in arrival order, keyed by model."""
    if labels_topic is None:
        return [Outgoing(predictions_topic, event["model"].encode(), orjson.dumps(event), event["event_id"])
                for event, _ in generate(scenario)]
    return [Outgoing(predictions_topic if kind == "prediction" else labels_topic, item["model"].encode(),
                     orjson.dumps(item), item["event_id"])
            for kind, item in stream(scenario)]


#: Bad predictions, one per way a message can be unusable (reason, then the payload made
#: from the model and a number). Each is keyed by its neighbour's model, so it lands on
#: that model's partition; none holds a newline (replay reads a partition as JSON lines).
POISON: tuple[tuple[str, Callable[[str, int], bytes]], ...] = (
    ("invalid_json", lambda model, n: f'{{"event_id": "poison-{n}", "model": "{model}", "predic'.encode()),
    ("invalid_json", lambda model, n: f"poison {n} for {model}: not JSON".encode()),
    ("missing_field", lambda model, n: f'{{"model": "{model}", "prediction": 0.5}}'.encode()),
    ("missing_field", lambda model, n: f'{{"event_id": "poison-{n}", "prediction": 0.5}}'.encode()),
    ("non_finite", lambda model, n: f'{{"event_id": "poison-{n}", "model": "{model}", '
                                    f'"features": {{"f00": NaN}}, "prediction": 0.5}}'.encode()),
    ("non_finite", lambda model, n: f'{{"event_id": "poison-{n}", "model": "{model}", '
                                    f'"prediction": -Infinity}}'.encode()),
    ("wrong_type", lambda model, n: f'{{"event_id": "poison-{n}", "model": "{model}", '
                                    f'"features": "f00=1", "prediction": 0.5}}'.encode()),
    ("wrong_type", lambda model, n: f'{{"event_id": {n}, "model": "{model}", "prediction": 0.5}}'.encode()),
    ("nested_value", lambda model, n: f'{{"event_id": "poison-{n}", "model": "{model}", '
                                      f'"prediction": [0.5]}}'.encode()),
    ("not_an_object", lambda model, n: f'["poison-{n}", "{model}", 0.5]'.encode()),
    ("invalid_utf8", lambda model, n: b'{"event_id": "poison-\xff\xfe", "model": "' + model.encode() + b'"}'),
    ("empty_value", lambda model, n: b""),
)


def with_poison(messages: Sequence[Outgoing], topic: str, share: float = 0.01,
                seed: int = 0) -> list[Outgoing]:
    """``messages`` with bad predictions mixed in: ``share`` of the predictions, at seeded places.

    Each bad message follows a prediction chosen at random, with that
    prediction's key, and cycles through every kind in :data:`POISON`.
    """
    rng = random.Random(seed)
    predictions = [position for position, message in enumerate(messages) if message.topic == topic]
    chosen = set(rng.sample(predictions, max(1, round(share * len(predictions)))))
    mixed: list[Outgoing] = []
    for position, message in enumerate(messages):
        mixed.append(message)
        if position in chosen:
            number = len(mixed) - position - 1  # bad messages so far
            reason, payload = POISON[number % len(POISON)]
            mixed.append(Outgoing(topic, message.key, payload(message.key.decode(), number),
                                  f"poison-{number}-{reason}", poison=True))
    return mixed


#: (topic, partition, offset) of an input message: how a dead letter names its source
Source = tuple[str, int, int]


class Feeder:
    """Produces a fixed list of messages in order, a prefix at a time, and records where each landed."""

    def __init__(self, bootstrap: str, messages: Sequence[Outgoing]) -> None:
        self.bootstrap = bootstrap
        self.messages = messages
        #: messages produced so far (the stream's prefix [0, released))
        self.released = 0
        self._landed: dict[tuple[str, int], list[tuple[int, bytes]]] = {}
        #: stream position -> where the message landed
        self._where: dict[int, Source] = {}
        self._positions: dict[tuple[str, str], int] = {
            (message.topic, message.event_id): position for position, message in enumerate(messages)}

    def position(self, topic: str, event_id: str) -> int:
        """Where the message of ``topic`` with this event id is in the stream."""
        return self._positions[(topic, event_id)]

    def release_to(self, position: int) -> None:
        """Produce the stream up to ``position`` (exclusive) and wait until all of it is written.

        A fresh idempotent producer each time: one kept across a broker hard
        bounce could be fenced by state the broker lost.
        """
        position = min(position, len(self.messages))
        if position <= self.released:
            return
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5,
                             "enable.idempotence": True})
        failures: list[Any] = []

        def landed(position: int, error: Any, message: Any) -> None:
            if error is not None:
                failures.append(error)
            else:
                self._landed.setdefault((message.topic(), message.partition()), []).append(
                    (message.offset(), message.value()))
                self._where[position] = (message.topic(), message.partition(), message.offset())

        for number in range(self.released, position):
            message = self.messages[number]
            while True:
                try:
                    producer.produce(message.topic, message.value, key=message.key,
                                     on_delivery=functools.partial(landed, number))
                    break
                except BufferError:
                    producer.poll(0.2)
        remaining = producer.flush(120)
        assert remaining == 0 and not failures, f"producing the stream failed: {remaining} left, {failures[:3]}"
        self.released = position

    def release_all(self) -> None:
        self.release_to(len(self.messages))

    def ends(self) -> dict[tuple[str, int], int]:
        """The next offset of each partition written so far: what a caught-up group has committed."""
        return {partition: max(offset for offset, _ in landed) + 1
                for partition, landed in self._landed.items()}

    def poison(self) -> dict[Source, bytes]:
        """Every bad message written so far, by where it landed: the dead letters a run owes."""
        return {self._where[position]: message.value for position, message in enumerate(self.messages)
                if message.poison and position in self._where}

    def values(self, topic: str) -> dict[int, list[bytes]]:
        """The values written to each partition of ``topic``, in offset order."""
        return {partition: [value for _, value in sorted(landed)]
                for (landed_topic, partition), landed in sorted(self._landed.items()) if landed_topic == topic}


# -- the group ----------------------------------------------------------------


class Group:
    """The ``stream-monitor run`` processes of one consumer group, by member name."""

    def __init__(self, configs: Mapping[str, Path], log_dir: Path) -> None:
        self.configs = configs
        self.log_dir = log_dir
        self.running: dict[str, MonitorProcess] = {}
        self._ended: list[MonitorProcess] = []
        self._starts: Counter[str] = Counter()

    def start(self, member: str = "a") -> MonitorProcess:
        assert member not in self.running, f"member {member} is already running"
        number = self._starts[member]
        self._starts[member] += 1
        process = MonitorProcess(self.configs[member], self.log_dir / f"monitor-{member}-{number}.log")
        self.running[member] = process
        return process

    def kill(self, member: str = "a") -> MonitorProcess:
        process = self.running.pop(member)
        self._ended.append(process)
        process.kill()
        return process

    def terminate(self, member: str = "a") -> tuple[MonitorProcess, float]:
        """SIGTERM; fails unless the member exits 0 within :data:`TERM_BOUND_S`."""
        process = self.running.pop(member)
        self._ended.append(process)
        try:
            code, seconds = process.terminate(timeout_s=TERM_BOUND_S)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(f"member {member} did not exit within {TERM_BOUND_S} s of SIGTERM; "
                                 f"log tail:\n{_tail(process)}") from None
        assert code == 0, f"member {member} exited {code} after SIGTERM; log tail:\n{_tail(process)}"
        return process, seconds

    def restart_fenced(self) -> list[str]:
        """Start again each member that exited 1 because it was fenced, as an orchestrator does.

        ``delivery: exactly_once`` exits 1 when its transactional producer is
        fenced (the design: the orchestrator restarts it). The broker fences a
        producer whose transaction outlived ``transaction.timeout.ms``, e.g.
        across a broker outage longer than that. Any other exit fails the run
        (:meth:`check_alive`). Returns the members restarted.
        """
        restarted = []
        for member, process in list(self.running.items()):
            if process.process.poll() == 1 and _fenced(process):
                self._ended.append(self.running.pop(member))
                self.start(member)
                restarted.append(member)
        return restarted

    def stacks(self) -> str:
        """Every running member's thread stacks (SIGUSR1: the service's faulthandler), from its log."""
        for process in self.running.values():
            process.process.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
        parts = []
        for member, process in sorted(self.running.items()):
            lines = [line for line in process.log().splitlines() if not line.startswith("%")]
            parts.append(f"-- {member}:\n" + "\n".join(lines[-80:]))
        return "\n".join(parts)

    def check_alive(self) -> None:
        for member, process in self.running.items():
            code = process.process.poll()
            assert code is None, f"member {member} exited by itself with {code}; log tail:\n{_tail(process)}"

    def close(self) -> None:
        for process in [*self.running.values(), *self._ended]:
            process.close()
        self.running.clear()


def _fenced(process: MonitorProcess) -> bool:
    """Whether the process's last words say it stopped because its transactional producer was
    fenced, or stuck in a call that never returned (both: the orchestrator restarts it)."""
    for line in reversed(process.log().splitlines()):
        if line.startswith("{") and '"stopped with exit 1"' in line:
            reason = orjson.loads(line).get("reason", "")
            return "_FENCED" in reason or "transactional producer is stuck" in reason
    return False


def _tail(process: MonitorProcess, lines: int = 40) -> str:
    return "\n".join(process.log().splitlines()[-lines:])


# -- a broker of its own ------------------------------------------------------


def _free_port_pair() -> int:
    """A port p such that p and p + 1 (the controller's) are free now."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise AssertionError("no two consecutive free ports")


class PrivateBroker:
    """A broker of its own (deploy/local/kafka.py) for tests that bounce it.

    The shared broker must stay up for the other tests. This one reuses the
    broker jars of the local cache, keeps its config, data and log under
    ``folder`` (so a hard bounce restarts on the same data, as a real one
    does), and listens on ``BOUNCE_TEST_PORT`` or a free port.
    """

    def __init__(self, folder: Path) -> None:
        from tests.conftest import _local_kafka_module

        self._kafka = _local_kafka_module()
        self.port = int(os.environ.get("BOUNCE_TEST_PORT") or _free_port_pair())
        shared = self._kafka.Layout(self.port)
        self._kafka.fetch(shared)  # once per machine; the shared broker's start did it already
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "libs").symlink_to(shared.libs, target_is_directory=True)
        shutil.copy(shared.libs_done, folder / "libs.complete")
        self.folder = folder
        self.bootstrap = self._kafka.bootstrap(self.port)

    @contextlib.contextmanager
    def _own_cache(self) -> Iterator[Any]:
        previous = os.environ.get("KAFKA_CACHE_DIR")
        os.environ["KAFKA_CACHE_DIR"] = str(self.folder)
        try:
            yield self._kafka.Layout(self.port)
        finally:
            if previous is None:
                del os.environ["KAFKA_CACHE_DIR"]
            else:
                os.environ["KAFKA_CACHE_DIR"] = previous

    def up(self) -> None:
        with self._own_cache():
            self._kafka.up(self.port)

    def hard_bounce(self, down_s: float) -> float:
        """SIGKILL the broker, keep it down ``down_s``, start it again; the seconds it was away."""
        started = time.monotonic()
        with self._own_cache() as layout:
            pid = self._kafka._read_pid(layout)
            assert pid is not None, "the private broker is not running"
            os.killpg(pid, signal.SIGKILL)  # it runs in its own session: the group id is its pid
            while self._kafka._alive(pid):
                time.sleep(0.05)
        time.sleep(down_s)
        self.up()
        return time.monotonic() - started

    def down(self) -> None:
        with self._own_cache():
            self._kafka.down(self.port, quiet=True)


# -- faults -------------------------------------------------------------------


#: the action of a record the run adds itself: a member fenced (exit 1) started again
FENCED_RESTART = "restart after a fenced (or stuck) exit 1"


@dataclass(frozen=True)
class Fault:
    """One step of a fault run.

    ``position``: release the stream up to this position and wait until the
    group has committed all of it, then release the tail and act after a
    seeded delay; None: act at once. ``action``: ``kill`` (SIGKILL), ``term``
    (SIGTERM; the member must exit 0 within 10 s), ``start``, ``bounce`` (the
    broker: SIGKILL, then start it again on the same data).
    """

    position: int | None
    action: str
    member: str = "a"


def restarts(positions: Iterable[int], action: str, member: str = "a") -> list[Fault]:
    """``action`` on the member at each position, each followed by starting it again."""
    return [fault for position in positions
            for fault in (Fault(position, action, member), Fault(None, "start", member))]


@dataclass
class FaultRecord:
    """What happened at one fault."""

    fault: Fault
    #: stream position released when the fault landed
    released: int
    #: the group's committed offsets right after the fault (where the next owner resumes)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    #: SIGTERM to exit, or the broker's time away
    seconds: float | None = None
    #: the member's metrics scraped just before a kill or a SIGTERM
    metrics: str | None = None

    def describe(self) -> str:
        fault = self.fault
        where = "" if fault.position is None else f" at {fault.position}"
        committed = ", ".join(f"{_short(topic)}[{partition}]={offset}"
                              for (topic, partition), offset in sorted(self.committed.items()))
        took = "" if self.seconds is None else f", {self.seconds:.1f} s"
        member = "" if fault.action == "bounce" else f" {fault.member}"
        return f"{fault.action}{member}{where} (released {self.released}; committed {committed}{took})"


def _short(topic: str) -> str:
    """``predictions`` or ``labels`` for the tests' topic names, else the name."""
    return next((part for part in topic.split(".") if part in ("predictions", "labels")), topic)


@dataclass
class FaultRun:
    """Drives a :class:`Group` through a list of faults while a :class:`Feeder` releases the stream."""

    bootstrap: str
    group_id: str
    feeder: Feeder
    group: Group
    #: messages released after a fault's position is committed, before the fault lands
    tail: int = 300
    max_delay_s: float = 0.3
    seed: int = 0
    broker: PrivateBroker | None = None
    #: how long a bounced broker stays down before it is started again
    #: (a restart on unclean logs takes 10 s or more here: away longer than the session
    #: timeout, so the member's partitions are lost, as in the issue's measurement)
    bounce_down_s: float = 2.0
    commit_timeout_s: float = 120.0
    records: list[FaultRecord] = field(default_factory=list)
    #: the metrics of every member still running at the end, scraped just before its SIGTERM
    final_scrapes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def apply(self, faults: Iterable[Fault]) -> None:
        for fault in faults:
            self.step(fault)

    def step(self, fault: Fault) -> None:
        if fault.position is not None:
            self.feeder.release_to(fault.position)
            self.wait_committed(self.feeder.ends())
            self.feeder.release_to(fault.position + self.tail)
            time.sleep(self._rng.uniform(0.0, self.max_delay_s))
        record = FaultRecord(fault, self.feeder.released)
        if fault.action in ("kill", "term"):
            with contextlib.suppress(Exception):  # best effort: the member may be busy
                record.metrics = self.group.running[fault.member].scrape()
        if fault.action == "start":
            self.group.start(fault.member)
        elif fault.action == "kill":
            self.group.kill(fault.member)
        elif fault.action == "term":
            _, record.seconds = self.group.terminate(fault.member)
        elif fault.action == "bounce":
            assert self.broker is not None, "a bounce needs a PrivateBroker"
            record.seconds = self.broker.hard_bounce(self.bounce_down_s)
        else:
            raise ValueError(f"unknown fault action {fault.action!r}")
        record.committed = self._committed(self.feeder.ends())
        self.records.append(record)

    def _committed(self, ends: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        return committed_offsets(self.bootstrap, self.group_id, ends)

    def wait_committed(self, ends: Mapping[tuple[str, int], int], timeout_s: float | None = None) -> None:
        """Wait until the group has committed every partition up to ``ends``."""
        assert self.group.running, "no member is running: nothing would ever commit"
        deadline = time.monotonic() + (timeout_s or self.commit_timeout_s)
        while True:
            for member in self.group.restart_fenced():
                self.records.append(FaultRecord(Fault(None, FENCED_RESTART, member), self.feeder.released))
            self.group.check_alive()
            committed = self._committed(ends)
            if all(committed.get(partition, -1) >= end for partition, end in ends.items()):
                return
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out waiting for the group to commit {dict(ends)}: committed {committed}; "
                    f"running {sorted(self.group.running)}; faults so far:\n{self.describe()}\n"
                    f"where the running members wait:\n{self.group.stacks()}")
            time.sleep(0.2)

    def finish(self) -> None:
        """Release the rest, wait until it is all committed, then SIGTERM every member."""
        self.feeder.release_all()
        self.wait_committed(self.feeder.ends(), timeout_s=max(self.commit_timeout_s, 180.0))
        for member in sorted(self.group.running):
            self.final_scrapes.append(self.group.running[member].scrape())
            self.group.terminate(member)

    def wall_s(self) -> float:
        return time.monotonic() - self.started

    def describe(self) -> str:
        return "\n".join(f"  {number}. {record.describe()}" for number, record in enumerate(self.records, 1))


def run_faults(bootstrap: str, group_id: str, feeder: Feeder, configs: Mapping[str, Path], log_dir: Path,
               faults: Iterable[Fault], first: Sequence[str] = ("a",), **options: Any) -> FaultRun:
    """Start the ``first`` members, apply the faults, finish the stream; every process is ended after."""
    group = Group(configs, log_dir)
    run = FaultRun(bootstrap, group_id, feeder, group, **options)
    try:
        for member in first:
            group.start(member)
        run.apply(faults)
        run.finish()
    finally:
        group.close()
    return run


def fault_topics(topic_factory: Callable[..., str], partitions: int = 1, labels: bool = False) -> dict[str, str]:
    """Input (``partitions`` each), alerts and dead-letter topics from the ``topic_factory`` fixture."""
    topics = {"predictions": topic_factory("predictions", partitions=partitions),
              "alerts": topic_factory("alerts"), "dead_letter": topic_factory("dead-letter")}
    if labels:
        topics["labels"] = topic_factory("labels", partitions=partitions)
    return topics


# -- the oracle and the comparison --------------------------------------------


@dataclass
class Expected:
    """Replay's alerts over each input partition, and its summary per partition."""

    alerts: list[dict[str, Any]]
    summaries: dict[int, ReplaySummary]

    def rejected(self) -> int:
        """Messages replay rejected (they belong in the dead-letter topic)."""
        return sum(sum(summary.rejected.values()) for summary in self.summaries.values())

    def label_outcomes(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for summary in self.summaries.values():
            total.update(summary.label_outcomes)
        return total


def replay_by_partition(config: Path, feeder: Feeder, predictions_topic: str, folder: Path,
                        labels_topic: str | None = None) -> Expected:
    """Replay each input partition's events (and its labels partition) as its own file.

    Each alert gets the partition it was replayed for, as ``run`` names it.
    """
    settings = load_settings(config)
    folder.mkdir(parents=True, exist_ok=True)
    labels = feeder.values(labels_topic) if labels_topic else {}
    alerts: list[dict[str, Any]] = []
    summaries: dict[int, ReplaySummary] = {}
    for partition, values in feeder.values(predictions_topic).items():
        events_path = folder / f"events-{partition}.jsonl"
        events_path.write_bytes(b"".join(value + b"\n" for value in values))
        labels_path = None
        if labels_topic:
            labels_path = folder / f"labels-{partition}.jsonl"
            labels_path.write_bytes(b"".join(value + b"\n" for value in labels.get(partition, [])))
        out = io.BytesIO()
        summaries[partition] = replay(settings, events_path, out, labels_path=labels_path)
        for line in out.getvalue().splitlines():
            alert = orjson.loads(line)
            alert["partition"] = partition
            alerts.append(alert)
    ids = Counter(alert["alert_id"] for alert in alerts)
    assert all(count == 1 for count in ids.values()), "replay itself gave one alert_id twice"
    return Expected(alerts, summaries)


def _describe_alert(alert: Mapping[str, Any]) -> str:
    return (f"p{alert.get('partition')} {alert.get('model')}@{alert.get('model_version')} "
            f"{alert.get('signal')} {alert.get('detector')} at {alert.get('event_id')} "
            f"(n_seen {alert.get('n_seen')}) id {str(alert.get('alert_id'))[:12]}")


def _order(alert: Mapping[str, Any]) -> tuple:
    return (alert.get("partition", 0), alert.get("model", ""), alert.get("signal", ""),
            alert.get("n_seen", 0), alert.get("detector", ""))


@dataclass
class Comparison:
    """The published alerts of a faulted run against replay's, by ``alert_id``.

    ``exactly_once``: a copy beyond the first of an alert_id fails the run too.
    """

    expected: list[dict[str, Any]]
    published: list[dict[str, Any]]
    exactly_once: bool = False
    lost: list[dict[str, Any]] = field(init=False)
    spurious: list[dict[str, Any]] = field(init=False)
    #: copies beyond the first of an alert_id (allowed in at-least-once delivery only)
    duplicated: int = field(init=False)
    #: (replay's, published) pairs with the same alert_id but a different body
    changed: list[tuple[dict[str, Any], dict[str, Any]]] = field(init=False)

    def __post_init__(self) -> None:
        expected = {alert["alert_id"]: alert for alert in self.expected}
        published_ids = Counter(alert.get("alert_id") for alert in self.published)
        self.lost = sorted((alert for alert_id, alert in expected.items() if alert_id not in published_ids),
                           key=_order)
        spurious: dict[Any, dict[str, Any]] = {}
        changed: dict[Any, tuple[dict[str, Any], dict[str, Any]]] = {}
        for alert in self.published:
            alert_id = alert.get("alert_id")
            if alert_id not in expected:
                spurious.setdefault(alert_id, alert)
            elif alert != expected[alert_id]:
                changed.setdefault(alert_id, (expected[alert_id], alert))
        self.spurious = sorted(spurious.values(), key=_order)
        self.changed = list(changed.values())
        self.duplicated = sum(count - 1 for count in published_ids.values())

    def __repr__(self) -> str:  # pytest prints it under a failed assert: the counts, not every alert
        return f"Comparison({self.counts()})"

    @property
    def ok(self) -> bool:
        return not (self.lost or self.spurious or self.changed or (self.exactly_once and self.duplicated))

    def counts(self) -> dict[str, int]:
        return {"expected": len(self.expected), "published": len(self.published), "lost": len(self.lost),
                "duplicated": self.duplicated, "spurious": len(self.spurious), "changed": len(self.changed)}

    def report(self, run: FaultRun | None = None, limit: int = 40) -> str:
        counts = self.counts()
        lines = [f"faulted run vs replay: {counts['expected']} expected, {counts['published']} published; "
                 f"lost {counts['lost']}, spurious {counts['spurious']}, changed {counts['changed']}, "
                 f"duplicated {counts['duplicated']}{'' if self.exactly_once else ' (allowed)'}"]
        for title, alerts in (("lost (replay has it, the run did not publish it)", self.lost),
                              ("spurious (published, replay has no such alert_id)", self.spurious)):
            if alerts:
                lines.append(f"{title}:")
                lines += [f"  {_describe_alert(alert)}" for alert in alerts[:limit]]
                if len(alerts) > limit:
                    lines.append(f"  ... and {len(alerts) - limit} more")
        for replayed, published in self.changed[:limit]:
            fields = sorted(key for key in replayed.keys() | published.keys()
                            if replayed.get(key) != published.get(key))
            lines.append(f"changed: {_describe_alert(replayed)}: "
                         + "; ".join(f"{key} {replayed.get(key)!r} -> {published.get(key)!r}" for key in fields))
        if run is not None:
            lines.append(f"faults ({len(run.records)}):")
            lines.append(run.describe())
        return "\n".join(lines)


def read_committed(bootstrap: str, topic: str) -> list[Any]:
    """Every message of committed transactions (and of non-transactional producers) on ``topic``.

    Waits first until no transaction is open (a killed member's is aborted by
    the broker after its timeout), so that the end read is the topic's end.
    """
    wait_stable(bootstrap, topic, timeout_s=120)
    return read_all(bootstrap, topic, timeout_s=120, isolation="read_committed")


def published_alerts(bootstrap: str, alerts_topic: str) -> list[dict[str, Any]]:
    """The alerts a ``read_committed`` subscriber sees."""
    return [orjson.loads(message.value()) for message in read_committed(bootstrap, alerts_topic)]


def source_of(headers: Sequence[tuple[str, bytes | None]] | None) -> Source | None:
    """The input message a dead letter stands for, from its ``source.*`` headers (None: not named)."""
    found = {name: value for name, value in headers or [] if name.startswith("source.")}
    try:
        return (found["source.topic"].decode(), int(found["source.partition"]), int(found["source.offset"]))
    except (KeyError, AttributeError, ValueError):
        return None


def published_dead_letters(bootstrap: str, dead_letter_topic: str) -> list[tuple[Source | None, bytes]]:
    """(source, value) of every dead letter a ``read_committed`` reader sees."""
    return [(source_of(message.headers()), message.value() or b"")
            for message in read_committed(bootstrap, dead_letter_topic)]


@dataclass
class DeadLetterComparison:
    """The dead letters of a faulted run against the bad messages of its input, by source offset.

    ``exactly_once``: each bad message exactly once; else at least once.
    """

    expected: Mapping[Source, bytes]
    published: Sequence[tuple[Source | None, bytes]]
    exactly_once: bool = False
    lost: list[Source] = field(init=False)
    #: dead letters of no bad input message (a good one, or no source headers)
    spurious: list[Source | None] = field(init=False)
    #: copies beyond the first of a source
    duplicated: int = field(init=False)
    #: sources whose dead letter does not hold the original value
    changed: list[Source] = field(init=False)

    def __post_init__(self) -> None:
        sources = Counter(source for source, _ in self.published)
        self.lost = sorted(source for source in self.expected if source not in sources)
        self.spurious = [source for source in sources if source is None or source not in self.expected]
        self.duplicated = sum(count - 1 for source, count in sources.items() if source in self.expected)
        self.changed = sorted({source for source, value in self.published
                               if source in self.expected and value != self.expected[source]})

    @property
    def ok(self) -> bool:
        return not (self.lost or self.spurious or self.changed or (self.exactly_once and self.duplicated))

    def counts(self) -> dict[str, int]:
        return {"expected": len(self.expected), "published": len(self.published), "lost": len(self.lost),
                "duplicated": self.duplicated, "spurious": len(self.spurious), "changed": len(self.changed)}

    def report(self, limit: int = 20) -> str:
        counts = self.counts()
        lines = [f"dead letters vs the bad input messages: {counts['expected']} expected, "
                 f"{counts['published']} published; lost {counts['lost']}, spurious {counts['spurious']}, "
                 f"changed {counts['changed']}, duplicated {counts['duplicated']}"
                 f"{'' if self.exactly_once else ' (allowed)'}"]
        for title, sources in (("lost", self.lost), ("spurious", self.spurious), ("changed", self.changed)):
            if sources:
                lines.append(f"{title}: " + ", ".join(map(str, sources[:limit]))
                             + (f" ... and {len(sources) - limit} more" if len(sources) > limit else ""))
        return "\n".join(lines)


@dataclass
class Verdict:
    """A faulted run judged: its alerts against replay's, its dead letters against the bad input."""

    name: str
    delivery: str
    run: FaultRun
    expected: Expected
    alerts: Comparison
    dead_letters: DeadLetterComparison

    @property
    def ok(self) -> bool:
        return self.alerts.ok and self.dead_letters.ok

    def report(self) -> str:
        return f"{self.name}, delivery {self.delivery}:\n{self.alerts.report(self.run)}\n{self.dead_letters.report()}"

    def row(self) -> dict[str, Any]:
        """One line of the fault table."""
        return summary_row(self.name, self.run, self.alerts, self.dead_letters, self.delivery)


#: the rows of every fault run judged in this session (conftest prints them at the end)
RESULTS: list[dict[str, Any]] = []


def judge(name: str, bootstrap: str, config: Path, feeder: Feeder, topics: Mapping[str, str],
          run: FaultRun, folder: Path, at_least: int) -> Verdict:
    """Compare a finished run with the oracle (replay, and the bad messages fed), record its row.

    The delivery mode is the config's. The test asserts ``verdict.ok``; the
    stream must exercise the detectors (``at_least`` replayed alerts), and
    every bad message fed must be one replay rejects, or the oracle is wrong.
    """
    delivery = load_settings(config).delivery
    exactly_once = delivery == "exactly_once"
    expected = replay_by_partition(config, feeder, topics["predictions"], folder / "replay", topics.get("labels"))
    assert len(expected.alerts) >= at_least, f"replay found only {len(expected.alerts)} alerts"
    poison = feeder.poison()
    assert expected.rejected() == len(poison), (
        f"replay rejected {expected.rejected()} messages, {len(poison)} bad ones were fed")
    verdict = Verdict(name, delivery, run, expected,
                      Comparison(expected.alerts, published_alerts(bootstrap, topics["alerts"]), exactly_once),
                      DeadLetterComparison(poison, published_dead_letters(bootstrap, topics["dead_letter"]),
                                           exactly_once))
    RESULTS.append(verdict.row())
    return verdict


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of equal keys as an aligned text table.

    >>> print(table([{"fault": "kill -9", "mode": "exactly_once", "lost": 0},
    ...              {"fault": "SIGTERM", "mode": "at_least_once", "lost": 12}]))
    fault    mode           lost
    -------  -------------  ----
    kill -9  exactly_once      0
    SIGTERM  at_least_once    12
    """
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [[str(row[column]) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    header = "  ".join(column.ljust(width) for column, width in zip(columns, widths))
    # names to the left, numbers to the right
    body = ["  ".join(cell.rjust(width) if _numeric(cell) else cell.ljust(width)
                      for cell, width in zip(line, widths)) for line in cells]
    return "\n".join([header, "  ".join("-" * width for width in widths), *body])


def _numeric(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def summary_row(fault: str, run: FaultRun, comparison: Comparison,
                dead_letters: DeadLetterComparison | None = None,
                delivery: str = "at_least_once") -> dict[str, Any]:
    """One line of the fault table: alerts, then dead letters (``dl_``), then the wall time."""
    counts = comparison.counts()
    letters = dead_letters.counts() if dead_letters is not None else dict.fromkeys(counts, 0)
    # restarts right after a fault (no position of their own) are part of that fault
    return {"fault": fault, "delivery": delivery,
            "count": sum(1 for record in run.records if record.fault.position is not None),
            "expected": counts["expected"], "lost": counts["lost"], "duplicated": counts["duplicated"],
            "spurious": counts["spurious"], "changed": counts["changed"],
            "dl_expected": letters["expected"], "dl_lost": letters["lost"],
            "dl_duplicated": letters["duplicated"], "dl_spurious": letters["spurious"],
            "dl_changed": letters["changed"],
            "fenced_exits": sum(1 for record in run.records if record.fault.action == FENCED_RESTART),
            "wall_s": f"{run.wall_s():.1f}"}
