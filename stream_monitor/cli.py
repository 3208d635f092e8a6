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

    from stream_monitor.runtime.allocator import tune_allocator
    from stream_monitor.runtime.service import Service, check_client_properties

    settings = _load(args.config)
    check_client_properties(settings)
    logs.configure(settings.log_level, args.log_format or settings.log_format)
    allocator = tune_allocator()
    log.info("starting", extra={"version": __version__, "settings": settings.redacted(),
                                "malloc_mmap_threshold": allocator})
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
    import contextlib

    from stream_monitor.backtest.progress import Progress
    from stream_monitor.replay import ReplaySummary, replay

    settings = _load(args.config)
    for path in (args.input, args.labels):
        if path is not None and not Path(path).is_file():
            print(f"replay: input file not found: {path}", file=sys.stderr)
            return EXIT_CONFIG
    outputs = [("--alerts-out", args.alerts_out), ("--rejected-out", args.rejected_out),
               ("--summary-json", args.summary_json), ("--report", args.report)]
    for option, path in outputs:
        if path is None or (option == "--alerts-out" and path == "-"):
            continue
        folder = Path(path).resolve().parent
        if not folder.is_dir():
            print(f"replay: {option}: the folder {folder} does not exist", file=sys.stderr)
            return EXIT_CONFIG
    if args.report_points < 2:
        print("replay: --report-points: must be at least 2", file=sys.stderr)
        return EXIT_CONFIG
    trace = None
    if args.report:
        from stream_monitor.backtest.trace import StatisticTrace

        trace = StatisticTrace(max_points=args.report_points, expected_events=_estimated_lines(Path(args.input)))
    inputs = [Path(args.input)] + ([Path(args.labels)] if args.labels else [])
    # the progress reads the summary replay() fills in; replay() returns that same object
    progress = None
    summary_holder = ReplaySummary()
    if not args.no_progress:
        progress = Progress(sum(path.stat().st_size for path in inputs), summary_holder, sys.stderr,
                            interval_s=args.progress_interval)
    with contextlib.ExitStack() as stack:
        out = (sys.stdout.buffer if args.alerts_out == "-"
               else stack.enter_context(open(args.alerts_out, "wb")))
        rejected = stack.enter_context(open(args.rejected_out, "wb")) if args.rejected_out else None
        summary = replay(settings, Path(args.input), out, labels_path=Path(args.labels) if args.labels else None,
                         rejected_out=rejected, progress=progress, trace=trace, summary=summary_holder)
        out.flush()
    if progress is not None:
        progress.finish()
    print(summary.render(), file=sys.stderr)
    if args.summary_json:
        Path(args.summary_json).write_bytes(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    if trace is not None:
        from stream_monitor.backtest.report import render_report

        Path(args.report).write_text(render_report(summary, trace, [str(path) for path in inputs]),
                                     encoding="utf-8")
    written = ["alerts to " + ("stdout" if args.alerts_out == "-" else args.alerts_out)]
    written += [f"{what} to {path}" for what, path in (("rejected lines", args.rejected_out),
                                                       ("the summary", args.summary_json),
                                                       ("the report", args.report)) if path]
    print(f"replay: {summary.seconds:.2f} s, {', '.join(written)}", file=sys.stderr)
    return 0


def _estimated_lines(path: Path) -> int:
    """About how many lines the file has, from its size and its first MiB."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(1 << 20)
    if not head:
        return 0
    return round(head.count(b"\n") * size / len(head))


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
    brokers = args.bootstrap or settings.kafka.bootstrap_servers
    filters = [f"{name} {value}" for name, value in (("model", args.model), ("signal", args.signal),
                                                      ("severity", ",".join(args.severity or ())))
               if value]
    print(f"alerts: reading topic {topic} from {brokers} "
          f"({'from the beginning' if args.from_beginning else 'new alerts only, from the latest offset'})"
          + (f", only {'; '.join(filters)}" if filters else ""), file=sys.stderr, flush=True)
    consumer = Consumer({
        **settings.kafka.client_properties(),
        "bootstrap.servers": brokers,
        # a private group: reading alerts never moves anyone else's offsets
        "group.id": f"stream-monitor-alerts-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest" if args.from_beginning else "latest",
        # exactly-once delivery: only alerts of committed transactions, each once
        "isolation.level": "read_committed",
    })
    consumer.subscribe([topic])
    shown = 0
    #: signals of the alerts read (to say what there was when --signal matched none)
    seen: set[str] = set()
    read = 0
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
            read += 1
            if len(seen) < 1000:
                seen.add(str(alert.get("signal")))
            if args.model and alert.get("model") != args.model:
                continue
            if args.signal and not signal_matches(args.signal, str(alert.get("signal"))):
                continue
            if args.severity and alert.get("severity") not in args.severity:
                continue
            print(orjson.dumps(alert).decode() if args.json else format_alert(alert), flush=True)
            shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
        if args.signal and not shown:
            listed = ", ".join(sorted(seen)[:20]) + (", ..." if len(seen) > 20 else "")
            print(f"alerts: --signal {args.signal} matched no alert" + (
                f" of the {read} read; signals seen: {listed}" if read else " (no alert was read)"),
                file=sys.stderr)
    return 0


def signal_matches(wanted: str, signal: str) -> bool:
    """Whether ``--signal wanted`` selects ``signal``: the full name, or the name after its prefix.

    >>> signal_matches("amount", "feature:amount"), signal_matches("feature:amount", "feature:amount")
    (True, True)
    >>> signal_matches("error_rate", "performance:error_rate"), signal_matches("amount", "feature:amount2")
    (True, False)
    """
    return signal == wanted or (":" not in wanted and signal.partition(":")[2] == wanted)


#: one or more examples per command, shown at the end of its --help
EXAMPLES: dict[str, tuple[str, ...]] = {
    "run": ("stream-monitor run --config config/example.yaml",),
    "replay": ("stream-monitor replay --input events.jsonl --labels labels.jsonl --alerts-out alerts.jsonl \\\n"
               "      --rejected-out rejected.jsonl --report backtest.html",),
    "simulate": ("stream-monitor simulate --out events.jsonl --labels-out labels.jsonl "
                 "--drift feature:f03@5000:shift=1.0",
                 "stream-monitor simulate --bootstrap 127.0.0.1:9092 --rate 2000 "
                 "--drift performance:error_rate@20000:error=0.15 --labels-topic ml.labels"),
    "reference": ("stream-monitor reference --input train.csv --id fraud-train-2026-11 "
                  "--out config/fraud-reference.json",),
    "check-config": ("stream-monitor check-config --config config/example.yaml",
                     "stream-monitor check-config --config config/example.yaml --connect"),
    "alerts": ("stream-monitor alerts --config config/example.yaml --from-beginning --signal amount "
               "--severity critical",),
}


class _HelpFormatter(argparse.HelpFormatter):
    """Examples (indented lines) kept as written, other text wrapped; an option's default shown after
    its help unless it has none to show (None, False) or its help already says what the default is."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(line if line.startswith("  ") else super(_HelpFormatter, self)._fill_text(
            line, width, indent) for line in text.splitlines())

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is False or default is argparse.SUPPRESS
                or not action.option_strings or default == []):
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream-monitor",
        description="Streaming drift detection for ML systems on Kafka.",
        epilog="'stream-monitor COMMAND --help' explains a command's options, with an example.")
    parser.add_argument("--version", action="version", version=f"stream-monitor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="consume from Kafka, detect drift, publish alerts and metrics",
                              description="Run the monitor as a Kafka consumer-group member.")
    run.add_argument("--config", help="YAML settings file (env STREAM_MONITOR_* overrides it; default: the "
                                      "built-in defaults and the environment)")
    run.add_argument("--exit-when-idle", type=float, metavar="SECONDS",
                     help="stop after this long without a message, for batch jobs and benchmarks "
                          "(default: run until SIGTERM)")
    run.add_argument("--log-format", choices=["auto", "json", "text"],
                     help="log lines as JSON or text (default: the log_format setting, auto: text on a "
                          "terminal, JSON otherwise)")
    run.set_defaults(handler=cmd_run)

    replay = commands.add_parser(
        "replay", help="run the detectors over JSON-lines files, no broker (a backtest)",
        description="Replay prediction events from a file; write alerts as JSON lines. Progress and the "
                    "summary (events per model, events/s, rejected lines by reason with their line numbers, "
                    "skipped values) go to stderr, never to stdout.")
    replay.add_argument("--input", required=True, metavar="EVENTS.jsonl",
                        help="prediction events, one JSON object per line, in stream order")
    replay.add_argument("--labels", metavar="LABELS.jsonl",
                        help="label events, joined to the predictions like in 'run' (default: none)")
    replay.add_argument("--alerts-out", required=True, metavar="ALERTS.jsonl",
                        help="write the alerts here, one JSON per line ('-': stdout)")
    replay.add_argument("--config", help="YAML settings file (default: every signal, default detectors)")
    replay.add_argument("--rejected-out", metavar="REJECTED.jsonl",
                        help="write every rejected line here as JSON: file, line, reason, detail, raw "
                             "(raw_base64 too when the line is not UTF-8) (default: only counted)")
    replay.add_argument("--summary-json", metavar="SUMMARY.json",
                        help="also write the summary as JSON (default: only on stderr)")
    replay.add_argument("--report", metavar="REPORT.html",
                        help="write a self-contained HTML backtest report: per signal that alerted, its "
                             "detectors' statistic against the threshold with the alerts marked; tables of "
                             "alerts, rejected lines and skipped values (default: none)")
    replay.add_argument("--report-points", type=int, default=2000, metavar="N",
                        help="most points per detector's chart in --report (each keeps the highest "
                             "statistic of its stretch of events)")
    replay.add_argument("--progress-interval", type=float, default=5.0, metavar="SECONDS",
                        help="when stderr is not a terminal, a progress line this often (0: every chunk "
                             "read); on a terminal, a bar")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar or lines")
    replay.set_defaults(handler=cmd_replay)

    simulate = commands.add_parser(
        "simulate", help="produce synthetic events with scheduled drifts (seeded)",
        description="Generate synthetic prediction events (and labels) to Kafka or to files. "
                    "Drift: [MODEL:]SIGNAL@EVENT:KIND=VALUE[:over=N], KIND in shift|scale|share|error.")
    simulate.add_argument("--model", action="append", default=None,
                          help="model name (repeatable; default: fraud)")
    simulate.add_argument("--model-version", default="1", help="the events' model_version")
    simulate.add_argument("--events", type=int, default=10_000, help="events per model")
    simulate.add_argument("--numeric", type=int, default=20, help="numeric features per model")
    simulate.add_argument("--categorical", type=int, default=1, help="categorical features per model")
    simulate.add_argument("--drift", action="append", default=[],
                          help="a scheduled drift (repeatable; default: none)")
    simulate.add_argument("--error-rate", type=float, default=0.05, help="base error rate of the labels")
    simulate.add_argument("--label-delay", type=int, default=500,
                          help="a label arrives this many events after its prediction")
    simulate.add_argument("--seed", type=int, default=7, help="random seed: the same seed, the same events")
    simulate.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    target = simulate.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", metavar="EVENTS.jsonl", help="write events to this file")
    target.add_argument("--bootstrap", help="produce to this Kafka cluster")
    simulate.add_argument("--labels-out", metavar="LABELS.jsonl",
                          help="with --out: write labels here (default: no labels)")
    simulate.add_argument("--topic", default="ml.predictions", help="with --bootstrap: the predictions topic")
    simulate.add_argument("--labels-topic",
                          help="with --bootstrap: produce labels to this topic (default: no labels)")
    simulate.set_defaults(handler=cmd_simulate)

    reference = commands.add_parser(
        "reference", help="build a reference snapshot from training data (CSV, JSON lines, Parquet)",
        description="Write a reference snapshot for a model rule's 'reference: {snapshot: PATH}': per column, "
                    "a sample of its values (numeric) or its category counts (categorical), stamped with "
                    "--id and a content hash. Alerts then name the id in 'reference' (snapshot:ID).")
    reference.add_argument("--input", required=True, metavar="TRAIN.csv|.jsonl|.parquet",
                           help="training data: CSV with a header, JSON lines (events or flat objects), "
                                "or Parquet (needs the 'parquet' extra)")
    reference.add_argument("--id", required=True, help="the snapshot's id, e.g. the training run's name")
    reference.add_argument("--out", required=True, metavar="SNAPSHOT.json", help="the snapshot file to write")
    reference.add_argument("--model", help="JSON-lines events: only this model's; recorded in the snapshot "
                                           "(default: every event)")
    reference.add_argument("--columns", nargs="+", metavar="COLUMN",
                           help="only these columns (default: every column but event_id, model, "
                                "model_version, ts and label)")
    reference.add_argument("--categorical", nargs="+", metavar="COLUMN",
                           help="columns that are categorical although their values are numbers (codes) "
                                "(default: none)")
    reference.add_argument("--max-values", type=int, default=100_000, metavar="N",
                           help="most values kept per numeric column; longer columns are sampled "
                                "(seeded, so the same data gives the same snapshot)")
    reference.set_defaults(handler=cmd_reference)

    check = commands.add_parser("check-config", help="validate a config file and print it (secrets masked)",
                                description="Validate the settings; exit 2 listing every bad field. "
                                            "With --connect, exit 1 when the cluster is unreachable or "
                                            "a topic would stop 'run' from starting.")
    check.add_argument("--config", help="YAML settings file (default: the built-in defaults and the environment)")
    check.add_argument("--connect", action="store_true",
                       help="also connect to the cluster: the input topics must exist (their partition "
                            "counts are shown), the output topics exist or are created by 'run'")
    check.add_argument("--timeout", type=_seconds, default=10.0, metavar="SECONDS",
                       help="with --connect: how long to wait for the cluster (default: %(default)s)")
    check.set_defaults(handler=cmd_check_config)

    alerts = commands.add_parser(
        "alerts", help="subscribe to the alerts topic and print alerts",
        description="Print drift alerts from the alerts topic as they arrive (a private consumer group: "
                    "no one else's offsets move). A banner on stderr says where it reads from.")
    alerts.add_argument("--config", help="YAML settings file for brokers, topic, client properties "
                                         "(default: the built-in defaults and the environment)")
    alerts.add_argument("--bootstrap", help="brokers (default: kafka.bootstrap_servers of the config)")
    alerts.add_argument("--topic", help="alerts topic (default: topics.alerts of the config)")
    alerts.add_argument("--model", help="only this model (default: every model)")
    alerts.add_argument("--signal", help="only this signal: a full name (feature:amount, prediction) or a "
                                         "feature or metric name (amount matches feature:amount); "
                                         "default: every signal")
    alerts.add_argument("--severity", action="append", choices=["info", "warning", "critical"],
                        help="only these severities (repeatable; default: every severity)")
    alerts.add_argument("--json", action="store_true", help="print the alert JSON, not a readable line")
    alerts.add_argument("--from-beginning", action="store_true",
                        help="start at the oldest alert kept on the topic (default: only new alerts)")
    alerts.add_argument("--max", type=int, help="stop after printing this many (default: no limit)")
    alerts.add_argument("--exit-when-idle", type=float, metavar="SECONDS",
                        help="stop after this long without an alert (default: run until Ctrl-C)")
    alerts.set_defaults(handler=cmd_alerts)
    _add_topics_parser(commands)
    _finish_help(parser)
    return parser


def _finish_help(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> None:
    """Every (sub)command's help: the formatter that shows defaults, and its examples as the epilog
    (unless it has one of its own)."""
    parser.formatter_class = _HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                examples = EXAMPLES.get(" ".join((*path, name)))
                if command.epilog is None and examples:
                    command.epilog = "example" + ("s" if len(examples) > 1 else "") + ":\n" + "\n".join(
                        "  " + example for example in examples)
                _finish_help(command, (*path, name))


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
