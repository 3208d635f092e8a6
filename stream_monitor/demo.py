"""`make demo`: the whole product on the local broker, in one terminal.

Creates the demo topics, starts ``stream-monitor run`` with
``config/demo.yaml``, produces a simulated stream (two models, 20 numeric
features and one categorical each) in which model ``fraud`` drifts: feature
``f03`` shifts by +1 standard deviation at event 15,000 and the first category
of ``c00`` goes from 20% to 50% at event 30,000. Alerts are printed as they
arrive on the alerts topic; metrics are served on the URL shown. Ctrl-C (or
``--duration``) stops everything cleanly.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import os

import orjson

from stream_monitor.alerts import format_alert

REPO = Path(__file__).resolve().parents[1]


def _create_topics(bootstrap: str, names: list[str]) -> None:
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for name, future in admin.create_topics([NewTopic(n, 1, 1) for n in names]).items():
        try:
            future.result(30)
        except Exception as exc:  # noqa: BLE001 - "already exists" is fine on a second run
            if exc.args and getattr(exc.args[0], "code", lambda: None)() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--config", default=str(REPO / "config" / "demo.yaml"))
    parser.add_argument("--rate", type=float, default=2000, help="events per second per model")
    parser.add_argument("--events", type=int, default=45_000, help="events per model")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: Ctrl-C)")
    args = parser.parse_args(argv)

    from confluent_kafka import Consumer

    from stream_monitor.config import load_settings

    # fresh topics and group per run: the broker keeps earlier runs' events, which
    # would otherwise be read again as one more (spurious) change
    run_id = uuid.uuid4().hex[:6]
    base = load_settings(args.config)
    settings = load_settings(args.config, kafka={**base.kafka.model_dump(),
                                                 "group_id": f"{base.kafka.group_id}-{run_id}"},
                             topics={name: (f"{topic}.{run_id}" if topic else None)
                                     for name, topic in base.topics.model_dump().items()})
    topics = settings.topics
    _create_topics(args.bootstrap, [t for t in (topics.predictions, topics.labels, topics.alerts,
                                                topics.dead_letter) if t])
    print(f"demo: topics ready on {args.bootstrap}: {topics.predictions} -> {topics.alerts}", flush=True)

    log_dir = REPO / ".cache" / "demo"
    log_dir.mkdir(parents=True, exist_ok=True)
    monitor_log = open(log_dir / "monitor.log", "wb")
    env_group = {"STREAM_MONITOR_KAFKA__BOOTSTRAP_SERVERS": args.bootstrap,
                 "STREAM_MONITOR_KAFKA__GROUP_ID": settings.kafka.group_id,
                 **{f"STREAM_MONITOR_TOPICS__{name.upper()}": topic
                    for name, topic in settings.topics.model_dump().items() if topic}}
    monitor = subprocess.Popen([sys.executable, "-m", "stream_monitor.cli", "run", "--config", args.config],
                               stdout=monitor_log, stderr=subprocess.STDOUT, env={**os.environ, **env_group},
                               # Ctrl-C reaches only the demo, which stops the others in order
                               start_new_session=True)
    port = _metrics_port(log_dir / "monitor.log", monitor)
    print(f"demo: monitor running (log: .cache/demo/monitor.log); metrics at "
          f"http://127.0.0.1:{port}/metrics, health at /healthz and /readyz", flush=True)

    alerts = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"demo-alerts-{uuid.uuid4().hex[:6]}",
                       "auto.offset.reset": "latest", "enable.auto.commit": False})
    alerts.subscribe([topics.alerts])
    alerts.poll(1.0)  # join the group before anything is produced, so "latest" misses nothing

    simulate = subprocess.Popen(
        [sys.executable, "-m", "stream_monitor.cli", "simulate", "--bootstrap", args.bootstrap,
         "--topic", topics.predictions, "--model", "fraud", "--model", "churn",
         "--events", str(args.events), "--rate", str(args.rate * 2), "--seed", "42",
         "--drift", "fraud:feature:f03@15000:shift=1.0", "--drift", "fraud:feature:c00@30000:share=0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    print(f"demo: producing {args.events} events per model for 'fraud' and 'churn' at {args.rate:.0f}/s "
          "each; 'fraud' drifts: feature:f03 +1 sd at event 15000, feature:c00 share of 'a' "
          "20% -> 50% at event 30000. Alerts appear below; Ctrl-C stops.", flush=True)

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    started = time.monotonic()
    count = 0
    try:
        while not stopping:
            if args.duration is not None and time.monotonic() - started > args.duration:
                break
            if monitor.poll() is not None:
                print("demo: the monitor exited; see .cache/demo/monitor.log", file=sys.stderr)
                return 1
            if simulate.returncode is None and simulate.poll() is not None:
                output = simulate.stdout.read().decode(errors="replace") if simulate.stdout else ""
                if simulate.returncode != 0:
                    print(f"demo: the simulated stream failed: {output.strip()}", file=sys.stderr)
                    return 1
                print(f"demo: the simulated stream is finished ({output.strip()}); no more events will "
                      f"come, the monitor keeps running: Ctrl-C stops the demo", flush=True)
            message = alerts.poll(0.5)
            if message is None or message.error():
                continue
            count += 1
            print(f"ALERT {format_alert(orjson.loads(message.value()))}", flush=True)
    finally:
        # stop the others before printing anything: stdout may be gone (a closed pipe)
        if simulate.poll() is None:
            simulate.terminate()
        simulate.wait(10)
        alerts.close()
        monitor.send_signal(signal.SIGTERM)
        try:
            code = monitor.wait(15)
        except subprocess.TimeoutExpired:
            monitor.kill()
            code = monitor.wait()
        monitor_log.close()
        print(f"\ndemo: stopped ({count} alerts shown); monitor exited with status {code}", flush=True)
    return 0


def _metrics_port(log_path: Path, process: subprocess.Popen) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(rb'"url":"http://[^:]+:(\d+)/metrics"', log_path.read_bytes())
        if found:
            return int(found.group(1))
        if process.poll() is not None:
            raise SystemExit(f"demo: the monitor did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.1)
    raise SystemExit("demo: the monitor did not start serving metrics within 30 s")


if __name__ == "__main__":
    raise SystemExit(main())
