"""End-to-end throughput: ``stream-monitor run`` over events preloaded in Kafka,
beside the per-event river consumer a user would write by hand (same run).

    python bench/e2e.py [--events 500000] [--baseline-events 5000] [--repeats 1]

Preloads the events (20 numeric features, 1 categorical, a score prediction,
one model) into a fresh topic of the broker at KAFKA_BOOTSTRAP (default: the
local broker, started if needed), then measures events/s until caught up.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import river_consumer  # noqa: E402
from _preload import preload  # noqa: E402


def bootstrap() -> str:
    if os.environ.get("KAFKA_BOOTSTRAP"):
        return os.environ["KAFKA_BOOTSTRAP"]
    subprocess.run([sys.executable, str(REPO / "deploy/local/kafka.py"), "up"], check=True)
    return f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"


def consumed(port: int, topic: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError as exc:
        print(f"scrape failed: {exc!r}", file=sys.stderr)
        return 0.0
    match = re.search(rf'stream_monitor_events_consumed_total\{{topic="{re.escape(topic)}"\}} (\S+)', text)
    return float(match.group(1)) if match else 0.0


def run_monitor(servers: str, topic: str, events: int, workdir: Path) -> float:
    """Seconds from the first event consumed to caught up."""
    config = workdir / f"bench-{uuid.uuid4().hex[:6]}.yaml"
    config.write_text(f"kafka: {{bootstrap_servers: '{servers}', group_id: bench-{uuid.uuid4().hex[:8]}}}\n"
                      f"topics: {{predictions: '{topic}', alerts: '{topic}.alerts', "
                      f"dead_letter: '{topic}.dlq', labels: null}}\n"
                      "metrics: {host: 127.0.0.1, port: 0}\nlog_level: WARNING\n")
    log_path = workdir / "monitor.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "stream_monitor.cli", "run", "--config",
                                    str(config), "--exit-when-idle", "3"], stdout=log, stderr=log,
                                   env={**os.environ, "STREAM_MONITOR_LOG_LEVEL": "INFO"})
        try:
            port = None
            while port is None:
                found = re.search(rb':(\d+)/metrics"', log_path.read_bytes())
                port = int(found.group(1)) if found else None
                if process.poll() is not None:
                    raise RuntimeError(log_path.read_text())
                time.sleep(0.05)
            first = None
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"monitor exited {process.returncode}:\n{log_path.read_text()[-3000:]}")
                seen = consumed(port, topic)
                if seen > 0 and first is None:
                    first = time.perf_counter()
                if seen >= events:
                    return time.perf_counter() - first
                time.sleep(0.05)
        finally:
            process.terminate()
            process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--baseline-events", type=int, default=5_000,
                        help="events for the river consumer (it is slow; its rate is what counts)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    servers = bootstrap()
    topic = f"bench.e2e.{uuid.uuid4().hex[:8]}"
    seconds = preload(servers, topic, args.events)
    print(f"preloaded {args.events} events into {topic} in {seconds:.1f} s")
    rates = []
    baseline_rates = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            elapsed = run_monitor(servers, topic, args.events, Path(tmp))
            rates.append(args.events / elapsed)
            print(f"stream-monitor run: {args.events} events in {elapsed:.2f} s = {rates[-1]:,.0f} events/s")
            seen, river_seconds, detections = river_consumer.run(servers, topic, args.baseline_events)
            baseline_rates.append(seen / river_seconds)
            print(f"river per-event consumer: {seen} events in {river_seconds:.2f} s = "
                  f"{baseline_rates[-1]:,.0f} events/s ({detections} detections on stationary data)")
    ours, theirs = statistics.median(rates), statistics.median(baseline_rates)
    print(f"median: stream-monitor {ours:,.0f} events/s, river consumer {theirs:,.0f} events/s, "
          f"ratio {ours / theirs:,.1f}x")
    AdminClient({"bootstrap.servers": servers}).delete_topics([topic, f"{topic}.alerts", f"{topic}.dlq"])


if __name__ == "__main__":
    main()
