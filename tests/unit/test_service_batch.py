"""The service's per-batch bookkeeping, done run by run, matches message-by-message rules.

A batch mixes two partitions and both input topics in runs, a partition with a
silent prefix (re-read after a restore), bad messages and a partition this
member does not own. The expected positions, offsets, dead letters and records
are computed here message by message, the way the design notes state them.
"""

from __future__ import annotations

import orjson
from prometheus_client import CollectorRegistry

from stream_monitor.config import Settings
from stream_monitor.metrics import Health, Metrics
from stream_monitor.monitor import Record
from stream_monitor.pipeline import Pipeline
from stream_monitor.runtime.service import Service
from stream_monitor.state.recovery import PartitionState
from stream_monitor.state.store import PartitionStore

PREDICTIONS, LABELS = "ml.predictions", "ml.labels"


class Consumed:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes, error: object = None) -> None:
        self._topic, self._partition, self._offset, self._value, self._error = topic, partition, offset, value, error

    def error(self): return self._error
    def topic(self): return self._topic
    def partition(self): return self._partition
    def offset(self): return self._offset
    def key(self): return b"m"
    def value(self): return self._value
    def headers(self): return None
    def timestamp(self): return (1, 1_764_000_000_000 + self._offset)


def _batch() -> list[Consumed]:
    messages = []
    offsets = {(PREDICTIONS, 0): 10, (PREDICTIONS, 1): 0, (LABELS, 0): 5, (PREDICTIONS, 2): 0}
    runs = [(PREDICTIONS, 0, 6), (LABELS, 0, 3), (PREDICTIONS, 1, 4), (PREDICTIONS, 0, 5), (PREDICTIONS, 2, 2),
            (LABELS, 0, 2), (PREDICTIONS, 1, 3)]
    for topic, partition, count in runs:
        for _ in range(count):
            offset = offsets[(topic, partition)]
            offsets[(topic, partition)] += 1
            number = f"{partition}-{offset}"
            if offset % 4 == 3:
                value = b'{"event_id": "bad"' if topic == PREDICTIONS else b"[]"
            elif topic == PREDICTIONS:
                value = orjson.dumps({"event_id": number, "model": "m", "features": {"x": float(offset)},
                                      "prediction": 0.5})
            else:
                value = orjson.dumps({"event_id": number, "model": "m", "label": 1})
            messages.append(Consumed(topic, partition, offset, value))
    return messages


def _service(silent_until: int) -> Service:
    settings = Settings(kafka={"bootstrap_servers": "127.0.0.1:1"}, delivery="at_least_once",
                        topics={"labels": LABELS})
    service = Service(settings, Metrics(CollectorRegistry()), Health())
    for number in (0, 1):
        service.owned[number] = PartitionState(number, Pipeline(settings), PartitionStore(number))
        service._assigned.update({(PREDICTIONS, number), (LABELS, number)})
    service.owned[0].silent_until["predictions"] = silent_until
    return service


def test_run_by_run_bookkeeping_equals_the_message_by_message_rules() -> None:
    for silent_until in (0, 13, 14, 21):
        service = _service(silent_until)
        seen: dict[int, list] = {0: [], 1: []}
        for number, state in service.owned.items():
            state.pipeline.process = lambda items, number=number: seen[number].extend(items) or []  # type: ignore
        dead: list[tuple[str, int, int, str]] = []
        service._dead_letter = lambda message, bad: dead.append(  # type: ignore[method-assign]
            (message.topic(), message.partition(), message.offset(), bad.reason))
        stored: list = []
        service.checkpoint.after_batch = lambda states, offsets: stored.append(  # type: ignore[method-assign]
            (sorted(s.number for s in states), sorted((tp.topic, tp.partition, tp.offset) for tp in offsets))) or True
        messages = _batch()
        service._process(messages)

        positions: dict[tuple[int, str], int] = {}
        offsets: dict[tuple[str, int], int] = {}
        expected_dead, expected_items = [], {0: [], 1: []}
        for message in messages:
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if partition not in service.owned:
                continue
            kind = "labels" if topic == LABELS else "predictions"
            positions[(partition, kind)] = offset + 1
            silent = kind == "predictions" and partition == 0 and offset < silent_until
            if not silent or offset + 1 == silent_until:
                offsets[(topic, partition)] = offset + 1
            if offset % 4 == 3:
                if not silent:
                    expected_dead.append((topic, partition, offset, "invalid_json" if kind == "predictions"
                                          else "not_an_object"))
                continue
            expected_items[partition].append((kind, f"{partition}-{offset}", 1_764_000_000.0 + offset / 1000,
                                              silent))
        assert dead == expected_dead
        for number, state in service.owned.items():
            got = [("predictions" if isinstance(item, Record) else "labels",
                    (item.event if isinstance(item, Record) else item.label).event_id, item.timestamp,
                    item.silent) for item in seen[number]]
            assert got == expected_items[number]
            assert state.positions == {kind: position for (p, kind), position in positions.items() if p == number}
        assert service.owned[0].since_snapshot == 6 + 3 + 5 + 2 and service.owned[1].since_snapshot == 7
        assert stored == [([0, 1], sorted((t, p, o) for (t, p), o in offsets.items()))]
        replayed = service.metrics.registry.get_sample_value(
            "stream_monitor_state_replayed_messages_total", {"topic": PREDICTIONS}) or 0
        assert replayed == sum(1 for m in messages if m.partition() == 0 and m.topic() == PREDICTIONS
                               and m.offset() < silent_until)
        service.consumer.close()


def test_a_batch_of_one_run_reaches_the_pipeline_whole() -> None:
    service = _service(0)
    seen: list = []
    service.owned[1].pipeline.process = lambda items: seen.extend(items) or []  # type: ignore[method-assign]
    service.checkpoint.after_batch = lambda states, offsets: True  # type: ignore[method-assign]
    messages = [m for m in _batch() if m.partition() == 1 and m.offset() % 4 != 3][:5]
    assert len({(m.topic(), m.partition()) for m in messages}) == 1
    service._process(messages)  # type: ignore[arg-type]
    assert [item.event.event_id for item in seen] == [f"1-{m.offset()}" for m in messages]
    assert service.owned[1].positions == {"predictions": messages[-1].offset() + 1}
    service.consumer.close()


def test_runs_of_a_single_topic_batch():
    from stream_monitor.runtime.service import _runs

    one = [Consumed(PREDICTIONS, 3, offset, b"{}") for offset in range(5)]
    assert _runs(one, one_topic=True) == [(PREDICTIONS, 3, one)]
    assert _runs(one) == [(PREDICTIONS, 3, one)]
    mixed = one[:2] + [Consumed(PREDICTIONS, 1, 0, b"{}")] + one[2:]
    assert _runs(mixed, one_topic=True) == [(PREDICTIONS, 3, one[:2]), (PREDICTIONS, 1, mixed[2:3]),
                                            (PREDICTIONS, 3, one[2:])]
    # two topics, one partition number: one run each, unless the consumer reads one topic only
    both = one[:2] + [Consumed(LABELS, 3, 0, b"{}")]
    assert _runs(both) == [(PREDICTIONS, 3, one[:2]), (LABELS, 3, both[2:])]
    assert _runs([]) == []
