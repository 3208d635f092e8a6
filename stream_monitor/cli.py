"""The ``stream-monitor`` command line: run, replay, simulate, reference, check-config, alerts, topics."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import uuid
from pathlib import Path

import orjson

from stream_monitor import __version__
from stream_monitor.errors import ConfigError, StreamMonitorError

log = logging.getLogger("stream_monitor")

EXIT_CONFIG = 2


def _load(path: str | None):  # type: ignore[no-untyped-def]
    """Load the settings and build every detector they can make, as ``run`` will.

    What ``check-config`` accepts therefore runs: a detector that cannot be built
    (e.g. a warm-up beyond what KS takes) is a :class:`ConfigError` naming the field.
    """
    from stream_monitor.config import load_settings
    from stream_monitor.monitor import Monitor

    settings = load_settings(path)
    problems = Monitor.preflight(settings)
    if problems:
        raise ConfigError(problems)
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    from stream_monitor import logs
    from stream_monitor.metrics import Health, Metrics, MetricsServer
    from confluent_kafka import KafkaException

    from stream_monitor.runtime.service import Service, check_client_properties

    settings = _load(args.config)
    check_client_properties(settings)
    logs.configure(settings.log_level, args.log_format or settings.log_format)
    log.info("starting", extra={"version": __version__, "settings": settings.redacted()})
    metrics = Metrics()
    health = Health()
    server = MetricsServer(metrics.registry, health, settings.metrics.host, settings.metrics.port).start()
    log.info("serving metrics", extra={"url": f"http://{settings.metrics.host}:{server.port}/metrics"})
    try:
        service = Service(settings, metrics, health)
        service.install_signal_handlers()
        status = service.run(max_idle_s=args.exit_when_idle)
    except StreamMonitorError as exc:
        # in the JSON log as well as on stderr (main prints it), for log-only orchestrators
        log.error("stopped with exit 1", extra={"reason": str(exc)})
        raise
    except KafkaException as exc:
        reason = f"Kafka client: {exc.args[0].str()} (brokers tried: {settings.kafka.bootstrap_servers}, " \
                 f"from kafka.bootstrap_servers)"
        log.error("stopped with exit 1", extra={"reason": reason})
        raise StreamMonitorError(reason) from None
    finally:
        server.close()
    if status != 0:
        log.error("stopped with exit 1", extra={"reason": service.exit_reason()})
    return status


def cmd_replay(args: argparse.Namespace) -> int:
    from stream_monitor.replay import replay

    settings = _load(args.config)
    for path in (args.input, args.labels):
        if path is not None and not Path(path).is_file():
            print(f"replay: input file not found: {path}", file=sys.stderr)
            return EXIT_CONFIG
    folder = Path(args.alerts_out).resolve().parent
    if not folder.is_dir():
        print(f"replay: --alerts-out: the folder {folder} does not exist", file=sys.stderr)
        return EXIT_CONFIG
    started = time.perf_counter()
    with open(args.alerts_out, "wb") as out:
        summary = replay(settings, Path(args.input), out,
                         labels_path=Path(args.labels) if args.labels else None)
    print(summary.render())
    print(f"replay: {time.perf_counter() - started:.2f} s, alerts written to {args.alerts_out}")
    return 0


def cmd_reference(args: argparse.Namespace) -> int:
    from stream_monitor.snapshot import build_snapshot, summary_lines, write_snapshot

    out = Path(args.out)
    built = build_snapshot(Path(args.input), args.id, model=args.model, columns=args.columns,
                           categorical=args.categorical or (), max_values=args.max_values)
    write_snapshot(built.snapshot, out)
    for line in summary_lines(built, out):
        print(f"reference: {line}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from stream_monitor.simulate import Scenario, check_drift, parse_drift, stream

    try:
        drifts = tuple(parse_drift(text) for text in args.drift)
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    scenario = Scenario(models=tuple(args.model), n_events=args.events, n_numeric=args.numeric,
                        n_categorical=args.categorical, drifts=drifts, seed=args.seed,
                        error_rate=args.error_rate, model_version=args.model_version,
                        label_delay_events=args.label_delay)
    problems = [(text, check_drift(scenario, drift)) for text, drift in zip(args.drift, drifts)]
    for text, problem in problems:
        if problem:
            print(f"simulate: --drift {text}: {problem}", file=sys.stderr)
    if any(problem for _, problem in problems):
        return EXIT_CONFIG
    for path, option in ((args.out, "--out"), (args.labels_out, "--labels-out")):
        if path and not Path(path).resolve().parent.is_dir():
            print(f"simulate: {option}: the folder {Path(path).resolve().parent} does not exist", file=sys.stderr)
            return EXIT_CONFIG
    if args.out:
        labels = open(args.labels_out, "wb") if args.labels_out else None
        count = 0
        with open(args.out, "wb") as out:
            for kind, item in stream(scenario):
                if kind == "prediction":
                    out.write(orjson.dumps(item) + b"\n")
                    count += 1
                elif labels:
                    labels.write(orjson.dumps(item) + b"\n")
        if labels:
            labels.close()
        print(f"simulate: wrote {count} events to {args.out}")
        return 0
    return _simulate_to_kafka(args, scenario)


def _simulate_to_kafka(args: argparse.Namespace, scenario) -> int:  # type: ignore[no-untyped-def]
    from confluent_kafka import Producer

    from stream_monitor.simulate import stream

    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 20,
                         "enable.idempotence": True})
    failures: list[str] = []

    def report(error, _message) -> None:  # type: ignore[no-untyped-def]
        if error is not None:
            failures.append(str(error))

    started = time.monotonic()
    count = 0
    for kind, item in stream(scenario):
        if kind == "label" and not args.labels_topic:
            continue
        topic = args.topic if kind == "prediction" else args.labels_topic
        while True:
            try:
                producer.produce(topic, orjson.dumps(item), key=item["model"].encode(), on_delivery=report)
                break
            except BufferError:
                producer.poll(0.2)
        if kind == "label":
            continue
        count += 1
        if args.rate:
            ahead = count / args.rate - (time.monotonic() - started)
            if ahead > 0:
                producer.poll(0)
                time.sleep(ahead)
        if count % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    if failures or remaining:
        print(f"simulate: {len(failures)} messages failed, {remaining} undelivered: "
              f"{failures[:1]}", file=sys.stderr)
        return 1
    print(f"simulate: produced {count} events to {args.topic} in {time.monotonic() - started:.1f} s")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from stream_monitor.runtime.service import check_client_properties

    settings = _load(args.config)
    check_client_properties(settings)
    print(orjson.dumps(settings.redacted(), option=orjson.OPT_INDENT_2).decode())
    print("config OK", file=sys.stderr)
    return _check_connect(settings, args.timeout) if args.connect else 0


# -- check-config --connect and topics create: the topics the config names, on the cluster --

def _topic_reports(settings, timeout_s: float, report, out=None):  # type: ignore[no-untyped-def]
    """Connect, then ``report(settings, admin, metadata)``; one line per topic on ``out`` (default
    stderr); the exit status (1 on an unreachable cluster or any topic ``run`` would refuse)."""
    out = sys.stderr if out is None else out
    from confluent_kafka import KafkaException

    from stream_monitor.runtime.topics import admin_client, fetch_metadata

    admin, errors = admin_client(settings)
    metadata = fetch_metadata(settings, admin, errors, timeout_s)
    print(f"connected to {settings.kafka.bootstrap_servers}: {len(metadata.brokers)} broker(s)",
          file=out)
    try:
        reports = report(settings, admin, metadata)
    except KafkaException as exc:
        raise StreamMonitorError(f"Kafka admin request failed: {exc.args[0].str()} "
                                 f"(cluster: {settings.kafka.bootstrap_servers})") from None
    for line in reports:
        print(line.line(), file=out)
    problems = sum(line.problem for line in reports)
    if problems:
        print(f"{problems} topic problem(s): 'run' would not start", file=out)
    return 1 if problems else 0


def _check_connect(settings, timeout_s: float) -> int:  # type: ignore[no-untyped-def]
    from stream_monitor.runtime.topics import check_topics

    return _topic_reports(settings, timeout_s,
                          lambda settings, admin, metadata: check_topics(settings, admin, metadata, timeout_s))


def cmd_topics_create(args: argparse.Namespace) -> int:
    from stream_monitor.runtime.topics import create_topics

    settings = _load(args.config)
    return _topic_reports(settings, args.timeout, lambda settings, admin, metadata: create_topics(
        settings, admin, metadata, partitions=args.partitions, replication_factor=args.replication_factor,
        dry_run=args.dry_run, timeout_s=args.timeout), out=sys.stdout)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _add_topics_parser(commands) -> None:  # type: ignore[no-untyped-def]
    topics = commands.add_parser("topics", help="set up the topics the config names",
                                 description="Manage the Kafka topics the config names.")
    actions = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create", help="create the missing topics: predictions, labels, alerts, dead letters, state",
        description="Create the topics the config names that do not exist yet; report every one "
                    "(an existing topic is not an error). The labels and state topics get the "
                    "predictions topic's partition count; the state topic is compacted. Exit 1 "
                    "when the cluster is unreachable or a topic cannot serve 'run'.",
        epilog="example: stream-monitor topics create --config my.yaml --partitions 6 --replication-factor 3")
    create.add_argument("--config", help="YAML settings file (brokers, topic names, client properties)")
    create.add_argument("--partitions", type=_positive, metavar="N",
                        help="partitions of each topic created (default: the broker's num.partitions); "
                             "an existing predictions topic decides those of the labels and state topics")
    create.add_argument("--replication-factor", type=_positive, metavar="R",
                        help="replication factor of each topic created (default: the broker's; the "
                             "state topic: state.replication_factor)")
    create.add_argument("--dry-run", action="store_true", help="say what would be created, create nothing")
    create.add_argument("--timeout", type=_seconds, default=10.0, metavar="SECONDS",
                        help="how long to wait for the cluster (default: %(default)s)")
    create.set_defaults(handler=cmd_topics_create)


def cmd_alerts(args: argparse.Namespace) -> int:
    from confluent_kafka import Consumer, KafkaError

    from stream_monitor.alerts import format_alert

    settings = _load(args.config)
    topic = args.topic or settings.topics.alerts
    consumer = Consumer({
        **settings.kafka.client_properties(),
        "bootstrap.servers": args.bootstrap or settings.kafka.bootstrap_servers,
        # a private group: reading alerts never moves anyone else's offsets
        "group.id": f"stream-monitor-alerts-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest" if args.from_beginning else "latest",
        # exactly-once delivery: only alerts of committed transactions, each once
        "isolation.level": "read_committed",
    })
    consumer.subscribe([topic])
    shown = 0
    idle_since = time.monotonic()
    try:
        while args.max is None or shown < args.max:
            message = consumer.poll(0.5)
            if message is None:
                if args.exit_when_idle is not None and time.monotonic() - idle_since > args.exit_when_idle:
                    break
                continue
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    print(f"alerts: {message.error()}", file=sys.stderr)
                continue
            idle_since = time.monotonic()
            try:
                alert = orjson.loads(message.value())
            except orjson.JSONDecodeError:
                continue
            if args.model and alert.get("model") != args.model:
                continue
            if args.signal and alert.get("signal") != args.signal:
                continue
            if args.severity and alert.get("severity") not in args.severity:
                continue
            print(orjson.dumps(alert).decode() if args.json else format_alert(alert), flush=True)
            shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream-monitor",
        description="Streaming drift detection for ML systems on Kafka.")
    parser.add_argument("--version", action="version", version=f"stream-monitor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="consume from Kafka, detect drift, publish alerts and metrics",
                              description="Run the monitor as a Kafka consumer-group member.")
    run.add_argument("--config", help="YAML settings file (env STREAM_MONITOR_* overrides it)")
    run.add_argument("--exit-when-idle", type=float, metavar="SECONDS",
                     help="stop after this long without a message (for batch jobs and benchmarks)")
    run.add_argument("--log-format", choices=["auto", "json", "text"],
                     help="log lines as JSON or text (default: the log_format setting, auto: text on a "
                          "terminal, JSON otherwise)")
    run.set_defaults(handler=cmd_run)

    replay = commands.add_parser("replay", help="run the detectors over JSON-lines files, no broker",
                                 description="Replay prediction events from a file; write alerts as JSON lines.")
    replay.add_argument("--input", required=True, metavar="EVENTS.jsonl")
    replay.add_argument("--labels", metavar="LABELS.jsonl",
                        help="label events, joined to the predictions like in 'run'")
    replay.add_argument("--alerts-out", required=True, metavar="ALERTS.jsonl")
    replay.add_argument("--config", help="YAML settings file; default: every signal, default detectors")
    replay.set_defaults(handler=cmd_replay)

    simulate = commands.add_parser(
        "simulate", help="produce synthetic events with scheduled drifts (seeded)",
        description="Generate synthetic prediction events (and labels) to Kafka or to files. "
                    "Drift: [MODEL:]SIGNAL@EVENT:KIND=VALUE[:over=N], KIND in shift|scale|share|error.")
    simulate.add_argument("--model", action="append", default=None, help="model name (repeatable)")
    simulate.add_argument("--model-version", default="1")
    simulate.add_argument("--events", type=int, default=10_000, help="events per model")
    simulate.add_argument("--numeric", type=int, default=20, help="numeric features per model")
    simulate.add_argument("--categorical", type=int, default=1, help="categorical features per model")
    simulate.add_argument("--drift", action="append", default=[], help="a scheduled drift (repeatable)")
    simulate.add_argument("--error-rate", type=float, default=0.05, help="base error rate of the labels")
    simulate.add_argument("--label-delay", type=int, default=500,
                          help="a label arrives this many events after its prediction")
    simulate.add_argument("--seed", type=int, default=7)
    simulate.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    target = simulate.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", metavar="EVENTS.jsonl", help="write events to this file")
    target.add_argument("--bootstrap", help="produce to this Kafka cluster")
    simulate.add_argument("--labels-out", metavar="LABELS.jsonl", help="with --out: write labels here")
    simulate.add_argument("--topic", default="ml.predictions")
    simulate.add_argument("--labels-topic", help="with --bootstrap: produce labels to this topic")
    simulate.set_defaults(handler=cmd_simulate)

    reference = commands.add_parser(
        "reference", help="build a reference snapshot from training data (CSV, JSON lines, Parquet)",
        description="Write a reference snapshot for a model rule's 'reference: {snapshot: PATH}': per column, "
                    "a sample of its values (numeric) or its category counts (categorical), stamped with "
                    "--id and a content hash. Alerts then name the id in 'reference' (snapshot:ID).",
        epilog="example: stream-monitor reference --input train.csv --id fraud-train-2026-11 "
               "--out config/fraud-reference.json")
    reference.add_argument("--input", required=True, metavar="TRAIN.csv|.jsonl|.parquet",
                           help="training data: CSV with a header, JSON lines (events or flat objects), "
                                "or Parquet (needs the 'parquet' extra)")
    reference.add_argument("--id", required=True, help="the snapshot's id, e.g. the training run's name")
    reference.add_argument("--out", required=True, metavar="SNAPSHOT.json", help="the snapshot file to write")
    reference.add_argument("--model", help="JSON-lines events: only this model's; recorded in the snapshot")
    reference.add_argument("--columns", nargs="+", metavar="COLUMN",
                           help="only these columns (default: every column but event_id, model, "
                                "model_version, ts and label)")
    reference.add_argument("--categorical", nargs="+", metavar="COLUMN",
                           help="columns that are categorical although their values are numbers (codes)")
    reference.add_argument("--max-values", type=int, default=100_000, metavar="N",
                           help="most values kept per numeric column; longer columns are sampled "
                                "(seeded, so the same data gives the same snapshot; default: %(default)s)")
    reference.set_defaults(handler=cmd_reference)

    check = commands.add_parser("check-config", help="validate a config file and print it (secrets masked)",
                                description="Validate the settings; exit 2 listing every bad field. "
                                            "With --connect, exit 1 when the cluster is unreachable or "
                                            "a topic would stop 'run' from starting.",
                                epilog="example: stream-monitor check-config --config my.yaml --connect")
    check.add_argument("--config", help="YAML settings file")
    check.add_argument("--connect", action="store_true",
                       help="also connect to the cluster: the input topics must exist (their partition "
                            "counts are shown), the output topics exist or are created by 'run'")
    check.add_argument("--timeout", type=_seconds, default=10.0, metavar="SECONDS",
                       help="with --connect: how long to wait for the cluster (default: %(default)s)")
    check.set_defaults(handler=cmd_check_config)

    alerts = commands.add_parser("alerts", help="subscribe to the alerts topic and print alerts",
                                 description="Print drift alerts from the alerts topic as they arrive.")
    alerts.add_argument("--config", help="YAML settings file (for brokers, topic, client properties)")
    alerts.add_argument("--bootstrap", help="brokers (default: from the config)")
    alerts.add_argument("--topic", help="alerts topic (default: from the config)")
    alerts.add_argument("--model", help="only this model")
    alerts.add_argument("--signal", help="only this signal, e.g. feature:amount")
    alerts.add_argument("--severity", action="append", choices=["info", "warning", "critical"],
                        help="only these severities (repeatable)")
    alerts.add_argument("--json", action="store_true", help="print the alert JSON")
    alerts.add_argument("--from-beginning", action="store_true", help="start at the oldest alert")
    alerts.add_argument("--max", type=int, help="stop after printing this many")
    alerts.add_argument("--exit-when-idle", type=float, metavar="SECONDS",
                        help="stop after this long without an alert")
    alerts.set_defaults(handler=cmd_alerts)
    _add_topics_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "model", None) is None and args.command == "simulate":
        args.model = ["fraud"]
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"stream-monitor: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StreamMonitorError as exc:
        print(f"stream-monitor: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
