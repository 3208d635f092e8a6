"""A broker outage does not stop the monitor: it waits, then carries on where it was.

Runs its own broker on another port (the shared one must stay up for the
other tests) and stops and restarts it under a running monitor.
"""

from __future__ import annotations

import os
import time
import uuid

import orjson
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from stream_monitor.simulate import Scenario, generate

from ..conftest import _local_kafka_module
from .service_harness import MonitorProcess, metric_sum, produce, wait_until, write_config

PORT = int(os.environ.get("OUTAGE_TEST_PORT", "19192"))


@pytest.fixture
def own_broker():
    local_kafka = _local_kafka_module()
    local_kafka.up(PORT)
    yield local_kafka
    local_kafka.down(PORT, quiet=True)


def test_monitor_survives_a_broker_restart(own_broker, tmp_path):
    bootstrap = own_broker.bootstrap(PORT)
    suffix = uuid.uuid4().hex[:10]
    topics = {"predictions": f"outage.{suffix}.predictions", "alerts": f"outage.{suffix}.alerts",
              "dead_letter": f"outage.{suffix}.dlq"}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in topics.values()]).values():
        future.result(30)
    events = [orjson.dumps(event) for event, _ in generate(Scenario(n_events=4000, seed=9))]
    config = write_config(tmp_path / "config.yaml", bootstrap, f"outage-{suffix}", topics)

    produce(bootstrap, topics["predictions"], events[:2000])
    monitor = MonitorProcess(config, tmp_path / "monitor.log")
    try:
        monitor.wait_consumed(topics["predictions"], 2000)
        own_broker.down(PORT, quiet=True)
        wait_until(lambda: metric_sum(monitor.scrape(), "stream_monitor_kafka_errors_total") >= 1, 60,
                   "the client to report the outage")
        time.sleep(3)  # the broker stays down a while longer: the monitor must ride it out
        assert monitor.process.poll() is None, monitor.log()
        assert monitor.get("/healthz")[0] == 200
        own_broker.up(PORT)
        produce(bootstrap, topics["predictions"], events[2000:])
        monitor.wait_consumed(topics["predictions"], 4000, timeout_s=120)
        code, elapsed = monitor.terminate()
        assert code == 0, monitor.log()
        assert elapsed < 10
        # every event once: the counter (read from the final log) is exactly the input, but for
        # the messages an aborted transaction rolled back (exactly-once, the default), which are
        # read again and counted apart
        consumed = monitor.consumed_at_exit(topics["predictions"])
        rolled_back = monitor.rolled_back_at_exit(topics["predictions"])
        assert consumed - rolled_back == 4000, (consumed, rolled_back)
    finally:
        monitor.close()
