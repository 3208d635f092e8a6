"""Helpers for running ``stream-monitor run`` against the real broker in tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient


def write_config(path: Path, bootstrap: str, group_id: str, topics: dict[str, str],
                 extra: str = "", *, properties: dict[str, str | int | float] | None = None,
                 kafka: dict[str, str] | None = None, consumer: dict[str, float] | None = None) -> Path:
    """A ``run`` config for the test's broker and topics.

    ``properties`` are added to ``kafka.properties``, ``kafka`` adds settings
    under ``kafka:`` (e.g. ``instance_id``), ``consumer`` overrides the
    consumer settings below; ``extra`` is appended as it is (other sections).
    """
    # statistics every 500 ms so consumer lag shows up within a short test
    merged_properties = {"statistics.interval.ms": 500, **(properties or {})}
    properties_text = ", ".join(f"{key}: {value}" for key, value in merged_properties.items())
    kafka_text = "".join(f'  {key}: "{value}"\n' for key, value in (kafka or {}).items())
    consumer_settings = {"batch_size": 1000, "poll_timeout_s": 0.2, "commit_interval_s": 1.0,
                         **(consumer or {})}
    consumer_text = "".join(f"  {key}: {value}\n" for key, value in consumer_settings.items())
    path.write_text(f"""\
kafka:
  bootstrap_servers: "{bootstrap}"
  group_id: "{group_id}"
  properties: {{{properties_text}}}
{kafka_text}topics:
  predictions: "{topics['predictions']}"
  labels: {('"' + topics['labels'] + '"') if topics.get('labels') else 'null'}
  alerts: "{topics['alerts']}"
  dead_letter: "{topics['dead_letter']}"
consumer:
{consumer_text}metrics:
  host: 127.0.0.1
  port: 0
{extra}""")
    return path


def produce(bootstrap: str, topic: str, values: Iterable[bytes | tuple[bytes | None, bytes | None]],
            key: bytes | None = b"fraud") -> int:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    count = 0
    for item in values:
        message_key, value = item if isinstance(item, tuple) else (key, item)
        while True:
            try:
                producer.produce(topic, value, key=message_key)
                break
            except BufferError:
                producer.poll(0.2)
        count += 1
        if count % 5000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    return count


def read_all(bootstrap: str, topic: str, timeout_s: float = 60.0,
             isolation: str = "read_committed") -> list[Any]:
    """Every message of a topic, from the beginning to the end of every partition.

    Stops once each partition has reported its end; fails when that takes longer
    than ``timeout_s`` (so an empty result means an empty topic, never a slow join).
    ``read_committed`` (as a subscriber of the alerts must read) sees only the
    messages of committed transactions, and its end is the last stable offset:
    see :func:`wait_stable` to read everything a finished run wrote.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = len(admin.list_topics(topic, timeout=30).topics[topic].partitions)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.monotonic_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "enable.partition.eof": True, "isolation.level": isolation})
    consumer.subscribe([topic])
    messages = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(at_end) < partitions:
            assert time.monotonic() < deadline, f"{topic}: end not reached in {timeout_s} s"
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error():
                assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
                at_end.add(message.partition())
                continue
            at_end.discard(message.partition())
            messages.append(message)
    finally:
        consumer.close()
    return messages


def wait_stable(bootstrap: str, topic: str, timeout_s: float = 60.0) -> None:
    """Wait until no transaction is open on any partition of ``topic``.

    The last stable offset (the end a ``read_committed`` reader sees) stays
    below the high watermark while a transaction is open: one left by a
    killed producer is aborted by the broker after its ``transaction.timeout.ms``.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = [TopicPartition(topic, number)
                  for number in admin.list_topics(topic, timeout=30).topics[topic].partitions]
    group = f"stable-{time.monotonic_ns()}"
    committed = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "isolation.level": "read_committed"})
    uncommitted = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                            "isolation.level": "read_uncommitted"})
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            open_ = {tp.partition: (committed.get_watermark_offsets(tp, timeout=10)[1],
                                    uncommitted.get_watermark_offsets(tp, timeout=10)[1]) for tp in partitions}
            open_ = {number: ends for number, ends in open_.items() if ends[0] != ends[1]}
            if not open_:
                return
            assert time.monotonic() < deadline, (
                f"{topic}: transactions still open after {timeout_s} s (partition: (stable, high)) {open_}")
            time.sleep(0.5)
    finally:
        committed.close()
        uncommitted.close()


def high_watermark(bootstrap: str, topic: str, partition: int = 0) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"watermark-{time.monotonic_ns()}"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
    finally:
        consumer.close()


def committed_offset(bootstrap: str, group_id: str, topic: str, partition: int = 0) -> int:
    return committed_offsets(bootstrap, group_id, [(topic, partition)])[(topic, partition)]


#: how long a read of committed offsets may wait: a member killed inside a transaction leaves its
#: offsets unstable until the broker aborts it (transaction.timeout.ms, 10 s) or a restart fences it
COMMITTED_TIMEOUT_S = 60.0


def committed_offsets(bootstrap: str, group_id: str,
                      partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """The group's committed offset of each (topic, partition), in one request (negative: none).

    The broker answers only once no transaction holds the group's offsets, so
    after a kill -9 mid-transaction the read is retried for up to
    :data:`COMMITTED_TIMEOUT_S`.
    """
    wanted = [TopicPartition(topic, partition) for topic, partition in partitions]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id})
    deadline = time.monotonic() + COMMITTED_TIMEOUT_S
    try:
        while True:
            try:
                return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(wanted, timeout=10)}
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError._TIMED_OUT or time.monotonic() > deadline:
                    raise
    finally:
        consumer.close()


def wait_until(check, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.2)


class MonitorProcess:
    """``stream-monitor run`` in a subprocess; learns its metrics port from its log."""

    def __init__(self, config: Path, log_path: Path, *extra_args: str) -> None:
        self.log_path = log_path
        #: time.monotonic() just before the process was started
        self.started_at = time.monotonic()
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stream_monitor.cli", "run", "--config", str(config), *extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.port = self._wait_for_port()

    def _wait_for_port(self, timeout_s: float = 30.0) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            match = re.search(rb'"url":"http://[^:]+:(\d+)/metrics"', self.log_path.read_bytes())
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                raise AssertionError(f"monitor exited early:\n{self.log()}")
            time.sleep(0.1)
        raise AssertionError(f"monitor did not serve metrics:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def scrape(self) -> str:
        status, body = self.get("/metrics")
        assert status == 200
        return body

    def wait_consumed(self, topic: str, expected: int, timeout_s: float = 120.0) -> None:
        """Until ``expected`` messages of ``topic`` are read, not counting those read again after an
        aborted transaction rolled them back (exactly-once)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            body = self.scrape()
            read = (metric_sum(body, "stream_monitor_events_consumed_total", topic=topic)
                    - metric_sum(body, "stream_monitor_transaction_rolled_back_messages_total", topic=topic))
            if read >= expected:
                return
            if self.process.poll() is not None:
                raise AssertionError(f"monitor exited:\n{self.log()}")
            time.sleep(0.3)
        raise AssertionError(f"monitor did not consume {expected} events of {topic} in {timeout_s} s")

    def consumed_at_exit(self, topic: str) -> int:
        """Messages of ``topic`` the process read over its life, from its last log line."""
        return int(self._stopped_line()["consumed"].get(topic, 0))

    def rolled_back_at_exit(self, topic: str) -> int:
        """Messages of ``topic`` read again because an aborted transaction rolled them back."""
        return int(self._stopped_line().get("rolled_back", {}).get(topic, 0))

    def _stopped_line(self) -> dict:
        for line in reversed(self.log().splitlines()):
            if line.startswith("{"):
                record = orjson.loads(line)
                if record.get("message") == "stopped":
                    return record
        raise AssertionError(f"no 'stopped' line in the log:\n{self.log()[-2000:]}")

    def terminate(self, timeout_s: float = 10.0) -> tuple[int, float]:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout_s)
        return code, time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL: nothing is finished, flushed or committed."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def wait(self, timeout_s: float = 120.0) -> int:
        return self.process.wait(timeout=timeout_s)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample of ``name`` with these labels, or None when there is none."""
    values = metric_values(text, name, **labels)
    assert len(values) <= 1, f"{name} {labels}: {len(values)} samples match; name more labels"
    return values[0] if values else None


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum over every sample of ``name`` that has these labels (0 when none)."""
    return sum(metric_values(text, name, **labels))


def metric_values(text: str, name: str, **labels: str) -> list[float]:
    values = []
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{(?P<labels>[^}}]*)\}})? (?P<value>\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"] or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            values.append(float(match["value"]))
    return values


def alerts_of(messages: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(message.value()) for message in messages]
