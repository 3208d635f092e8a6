"""Pacing of the two input topics (a fake consumer records pause and resume)."""

from __future__ import annotations

from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

from stream_monitor.config import Settings
from stream_monitor.events import LabelEvent, PredictionEvent
from stream_monitor.metrics import Health, Metrics
from stream_monitor.pipeline import Pipeline
from stream_monitor.runtime.service import Service
from stream_monitor.state.recovery import PartitionState
from stream_monitor.state.store import PartitionStore


class FakeConsumer:
    def __init__(self, high: int = 0) -> None:
        self.paused: set[tuple[str, int]] = set()
        self.high = high
        self.read = 0

    def pause(self, partitions):
        self.paused |= {(p.topic, p.partition) for p in partitions}

    def resume(self, partitions):
        self.paused -= {(p.topic, p.partition) for p in partitions}

    def position(self, partitions):
        return [TopicPartition(p.topic, p.partition, self.read) for p in partitions]

    def get_watermark_offsets(self, partition, cached=False):
        return 0, self.high

    def close(self):
        pass


def service_with(fake: FakeConsumer) -> Service:
    settings = Settings(kafka={"bootstrap_servers": "127.0.0.1:1"}, topics={"labels": "labels"},
                        labels={"retention_events": 100, "early_label_events": 20},
                        consumer={"batch_size": 5})
    service = Service(settings, Metrics(CollectorRegistry()), Health())
    service.consumer.close()
    service.consumer = fake  # type: ignore[assignment]
    service._labels_topic = "labels"
    service._assigned = {("ml.predictions", 0), ("labels", 0)}
    service.owned[0] = PartitionState(0, Pipeline(settings), PartitionStore(0))
    return service


def test_labels_ahead_of_their_predictions_pause_the_labels_topic_until_they_join():
    fake = FakeConsumer(high=50)  # predictions still unread: waiting for them can join the labels
    service = service_with(fake)
    join = service.owned[0].pipeline.join
    join.add_prediction(PredictionEvent("p0", "m", "1", 1.0, {}, 0.5))  # the model's predictions flow
    for number in range(15):  # more than half of the 20-label room
        join.add_label(LabelEvent(f"e{number}", "m", 1.0, 2.0))
    service._pace_inputs()
    assert fake.paused == {("labels", 0)}
    # a rebalance keeps the partition (no on_assign); the next batch still pauses it
    fake.paused.clear()
    service._pace_inputs()
    assert fake.paused == {("labels", 0)}
    for number in range(15):
        join.add_prediction(PredictionEvent(f"e{number}", "m", "1", 1.5, {}, 0.9))
    service._pace_inputs()
    assert fake.paused == set()


def test_predictions_crowding_the_join_pause_only_while_labels_are_unread():
    fake = FakeConsumer(high=50)
    service = service_with(fake)
    join = service.owned[0].pipeline.join
    for number in range(95):  # 95% of retention_events
        join.add_prediction(PredictionEvent(f"e{number}", "m", "1", float(number), {}, 0.9))
    service._pace_inputs()
    assert fake.paused == {("ml.predictions", 0)}
    fake.read = 50  # the labels are all read now: predictions must flow (and expire)
    service._pace_inputs()
    assert fake.paused == set()


def test_never_both_topics_at_once():
    fake = FakeConsumer(high=50)
    service = service_with(fake)
    join = service.owned[0].pipeline.join
    for number in range(95):
        join.add_prediction(PredictionEvent(f"e{number}", "crowded", "1", float(number), {}, 0.9))
    join.add_prediction(PredictionEvent("x", "other", "1", 1.0, {}, 0.9))
    service._pace_inputs()
    assert fake.paused == {("ml.predictions", 0)}  # only the predictions are ahead so far
    for number in range(15):  # now another model's labels crowd the waiting room as well
        join.add_label(LabelEvent(f"y{number}", "other", 1.0, 2.0))
    service._pace_inputs()
    assert fake.paused == set()  # pausing both could wait forever: both flow


def test_once_every_prediction_is_read_waiting_labels_never_keep_the_labels_paused():
    # the stall seen after a kill: labels whose predictions were read before the restart
    # wait for good; with nothing left to read on the predictions topic the labels resume
    fake = FakeConsumer(high=50)
    service = service_with(fake)
    join = service.owned[0].pipeline.join
    join.add_prediction(PredictionEvent("p0", "m", "1", 1.0, {}, 0.5))
    for number in range(15):
        join.add_label(LabelEvent(f"gone{number}", "m", 1.0, 2.0))
    service._pace_inputs()
    assert fake.paused == {("labels", 0)}
    fake.read = 50  # every prediction read (the labels too, for the fake: one position)
    service._pace_inputs()
    assert fake.paused == set()


def test_a_labels_pause_that_resolves_nothing_ends_after_a_window_of_predictions():
    # orphaned labels (their predictions were read before a restart) never resolve:
    # keeping the labels paused for them would only let the predictions run ahead
    fake = FakeConsumer(high=50)  # predictions still unread
    service = service_with(fake)
    join = service.owned[0].pipeline.join
    join.add_prediction(PredictionEvent("p0", "m", "1", 1.0, {}, 0.5))
    for number in range(15):
        join.add_label(LabelEvent(f"gone{number}", "m", 1.0, 2.0))
    service._pace_inputs()
    assert fake.paused == {("labels", 0)}
    predictions = service.settings.topics.predictions
    service._consumed_total[predictions] = 19  # within the window (20 = early_label_events)
    service._pace_inputs()
    assert fake.paused == {("labels", 0)}
    service._consumed_total[predictions] = 20  # a window of predictions, no label resolved
    service._pace_inputs()
    assert fake.paused == set()
    service._consumed_total[predictions] = 39  # the labels flow for the next window
    service._pace_inputs()
    assert fake.paused == set()
