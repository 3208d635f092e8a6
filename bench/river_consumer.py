"""The consumer a user would write by hand today: a per-event loop over river's
ADWIN, PageHinkley and KSWIN on every numeric signal (river has no categorical
drift detector, so categorical features are skipped). The baseline for
``bench/e2e.py``.

    python bench/river_consumer.py --bootstrap 127.0.0.1:9092 --topic T --events 5000
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

from confluent_kafka import Consumer, KafkaError, Producer
from river import drift


def run(bootstrap: str, topic: str, events: int, alerts_topic: str | None = None) -> tuple[int, float, int]:
    """Consume ``events`` events; return (events, seconds, detections)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"river-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    producer = Producer({"bootstrap.servers": bootstrap}) if alerts_topic else None
    consumer.subscribe([topic])
    detectors: dict[tuple[str, str], list] = {}
    seen = detections = 0
    started = None
    while seen < events:
        message = consumer.poll(1.0)
        if message is None:
            continue
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise RuntimeError(message.error())
        if started is None:
            started = time.perf_counter()
        event = json.loads(message.value())
        signals = dict(event.get("features", {}))
        signals["prediction"] = event.get("prediction")
        for name, value in signals.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            key = (event["model"], name)
            if key not in detectors:
                detectors[key] = [drift.ADWIN(), drift.PageHinkley(), drift.KSWIN(seed=1)]
            for detector in detectors[key]:
                detector.update(value)
                if detector.drift_detected:
                    detections += 1
                    if producer:
                        producer.produce(alerts_topic, json.dumps(
                            {"model": key[0], "signal": name, "event_id": event["event_id"]}).encode())
        seen += 1
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    if producer:
        producer.flush(10)
    return seen, elapsed, detections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    seen, seconds, detections = run(args.bootstrap, args.topic, args.events)
    print(f"river per-event consumer: {seen} events in {seconds:.2f} s = {seen / seconds:,.0f} events/s "
          f"({detections} detections)")


if __name__ == "__main__":
    main()
