"""Topics for a throughput run, filled with the simulated stream (``bench/e2e.py``, ``bench/throughput.py``)."""

from __future__ import annotations

import time

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from stream_monitor.simulate import Scenario, generate


def preload(servers: str, topic: str, events: int, labels: bool = False, scenario: Scenario | None = None) -> float:
    """Create ``topic`` with its ``.alerts`` and ``.dlq`` topics and write ``events`` predictions of the
    simulated 22-signal model to it (or those of ``scenario``); with ``labels``, every label to
    ``topic.labels`` too. Returns the seconds of writing."""
    admin = AdminClient({"bootstrap.servers": servers})
    names = [topic, f"{topic}.alerts", f"{topic}.dlq"] + ([f"{topic}.labels"] if labels else [])
    for future in admin.create_topics([NewTopic(name, 1, 1) for name in names]).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": servers, "linger.ms": 50, "batch.size": 1_000_000,
                         "compression.type": "lz4", "queue.buffering.max.messages": 500_000})
    started = time.perf_counter()
    for count, (event, label) in enumerate(generate(scenario or Scenario(n_events=events, seed=1))):
        for name, value in ((topic, event), (f"{topic}.labels", label)) if labels else ((topic, event),):
            while True:
                try:
                    producer.produce(name, orjson.dumps(value), key=b"fraud")
                    break
                except BufferError:
                    producer.poll(0.1)
        if count % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0
    return time.perf_counter() - started
