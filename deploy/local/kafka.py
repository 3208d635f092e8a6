"""Run a real single-node Apache Kafka broker (KRaft, combined broker+controller)
on 127.0.0.1 for the tests and the demo, without Docker.

    python deploy/local/kafka.py up      # fetch once, format once, start, wait until ready
    python deploy/local/kafka.py down    # stop it; harmless when nothing runs
    python deploy/local/kafka.py status  # exit 0 when a ready broker answers

The broker jars come from Maven Central (``org.apache.kafka:kafka_2.13`` and its
runtime dependencies, resolved by Maven from ``kafka-pom.xml``) into
``.cache/kafka/`` which git ignores. "Ready" means a topic can be created and a
message produced and consumed back, not merely that the port is open.

Settings come from the environment: ``KAFKA_PORT`` (default 9092; the
controller listens on the next port), ``KAFKA_CACHE_DIR`` (default
``<repo>/.cache/kafka``), ``KAFKA_HEAP`` (default ``512m``), ``JAVA_HOME``.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
POM = Path(__file__).resolve().with_name("kafka-pom.xml")
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def _port() -> int:
    return int(os.environ.get("KAFKA_PORT", "9092"))


def _cache_dir() -> Path:
    return Path(os.environ.get("KAFKA_CACHE_DIR", REPO_ROOT / ".cache" / "kafka"))


def bootstrap(port: int | None = None) -> str:
    return f"127.0.0.1:{port or _port()}"


class Layout:
    """Where the jars, the config, the data and the log of one broker live."""

    def __init__(self, port: int) -> None:
        cache = _cache_dir()
        self.libs = cache / "libs"
        self.libs_done = cache / "libs.complete"
        self.run = cache / f"broker-{port}"
        self.data = self.run / "data"
        self.config = self.run / "server.properties"
        self.log4j = self.run / "log4j2.properties"
        self.log = self.run / "broker.log"
        self.pid = self.run / "broker.pid"


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        sys.exit("kafka: no 'java' on PATH and no usable JAVA_HOME; install Java 17 or newer")
    return found


def fetch(layout: Layout) -> None:
    """Resolve the broker's jars from Maven Central once."""
    if layout.libs_done.exists():
        return
    mvn = shutil.which("mvn")
    if not mvn:
        sys.exit("kafka: 'mvn' is needed once to fetch the broker jars from Maven Central")
    staging = layout.libs.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    started = time.monotonic()
    print(f"kafka: fetching broker jars into {layout.libs} ...", flush=True)
    result = subprocess.run(
        [mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
         "-DincludeScope=runtime", f"-DoutputDirectory={staging}"],
        cwd=POM.parent, capture_output=True, text=True,
    )
    if result.returncode != 0:
        sys.exit(f"kafka: fetching the broker jars failed:\n{result.stdout}\n{result.stderr}")
    shutil.rmtree(layout.libs, ignore_errors=True)
    staging.rename(layout.libs)
    layout.libs_done.write_text("ok\n")
    print(f"kafka: fetched {len(list(layout.libs.glob('*.jar')))} jars "
          f"in {time.monotonic() - started:.1f} s", flush=True)


def write_config(layout: Layout, port: int) -> None:
    controller_port = port + 1
    layout.run.mkdir(parents=True, exist_ok=True)
    layout.config.write_text(f"""\
# Written by deploy/local/kafka.py: one combined broker+controller in KRaft mode.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={layout.data}
num.partitions=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
# A single node cannot hold more than one replica of the internal topics.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
""")
    layout.log4j.write_text("""\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = info
logger.apache.name = org.apache.kafka
logger.apache.level = warn
""")


def _classpath(layout: Layout) -> str:
    return str(layout.libs / "*")


def _jvm_options(layout: Layout) -> list[str]:
    heap = os.environ.get("KAFKA_HEAP", "512m")
    return [f"-Xmx{heap}", f"-Xms{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={layout.log4j}"]


def format_storage(layout: Layout) -> None:
    if (layout.data / "meta.properties").exists():
        return
    cluster_id = "-"
    while cluster_id.startswith("-"):
        # a leading '-' would be read as an option by the storage tool (as Kafka's own
        # random ids avoid); 1 in 64 ids begins with one
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    result = subprocess.run(
        [_java(), *_jvm_options(layout), "-cp", _classpath(layout), "kafka.tools.StorageTool",
         "format", "-t", cluster_id, "-c", str(layout.config)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        sys.exit(f"kafka: formatting storage failed:\n{result.stdout}\n{result.stderr}")


def _read_pid(layout: Layout) -> int | None:
    try:
        pid = int(layout.pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def check_ready(bootstrap_servers: str, timeout_s: float = 10.0) -> str | None:
    """Create a topic, produce one message and consume it back.

    Returns None when the round trip works, else the reason it did not.
    """
    from confluent_kafka import Consumer, KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    deadline = time.monotonic() + timeout_s
    topic = f"_stream_monitor_ready_{uuid.uuid4().hex[:12]}"
    quiet = {"bootstrap.servers": bootstrap_servers, "log_level": 0,
             "socket.connection.setup.timeout.ms": 2000}
    admin = AdminClient(quiet)
    try:
        futures = admin.create_topics([NewTopic(topic, 1, 1)], operation_timeout=timeout_s,
                                      request_timeout=timeout_s)
        futures[topic].result(timeout=max(0.1, deadline - time.monotonic()))
        producer = Producer({**quiet, "message.timeout.ms": int(timeout_s * 1000)})
        payload = uuid.uuid4().hex.encode()
        producer.produce(topic, payload)
        if producer.flush(max(0.1, deadline - time.monotonic())) != 0:
            return "produce did not complete"
        consumer = Consumer({**quiet, "group.id": topic, "auto.offset.reset": "earliest",
                             "enable.auto.commit": False})
        try:
            consumer.subscribe([topic])
            while time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                if msg.value() == payload:
                    return None
            return "the produced message was not consumed back"
        finally:
            consumer.close()
    except KafkaException as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return f"{type(exc).__name__}: {exc}"
    finally:
        try:
            admin.delete_topics([topic], operation_timeout=5)
        except Exception:  # noqa: BLE001 - best-effort clean-up of the probe topic
            pass


def _port_open(port: int) -> bool:
    import socket
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _log_tail(layout: Layout, lines: int = 40) -> str:
    try:
        return "\n".join(layout.log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def up(port: int, owner_file: Path | None = None) -> None:
    """Start a broker on ``port``, or reuse the one already up there.

    With ``owner_file``, the file is written when this call started the broker
    (and removed when it reused one): ``down --owner-file`` then stops only a
    broker that the same caller started, never one that was up before it.
    """
    layout = Layout(port)
    servers = bootstrap(port)
    started = time.monotonic()
    if owner_file is not None:
        owner_file.unlink(missing_ok=True)
    if _read_pid(layout) or _port_open(port):
        reason = check_ready(servers)
        if reason is None:
            print(f"kafka: reusing the broker already up at {servers} (it is left running afterwards)"
                  if owner_file is not None else f"kafka: reusing the broker already up at {servers}",
                  flush=True)
            return
        if _read_pid(layout) is None:
            sys.exit(f"kafka: port {port} is taken by something that is not a ready "
                     f"Kafka broker ({reason}); set KAFKA_PORT to another port")
        # our broker is still starting (or stuck): fall through to wait for it
    else:
        fetch(layout)
        write_config(layout, port)
        format_storage(layout)
        log = open(layout.log, "ab")
        process = subprocess.Popen(
            [_java(), *_jvm_options(layout), "-cp", _classpath(layout), "kafka.Kafka",
             str(layout.config)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        layout.pid.write_text(f"{process.pid}\n")
        if owner_file is not None:
            owner_file.parent.mkdir(parents=True, exist_ok=True)
            owner_file.write_text(f"{process.pid}\n")
    deadline = time.monotonic() + READY_TIMEOUT_S
    reason = "not tried"
    while time.monotonic() < deadline:
        if _read_pid(layout) is None:
            break
        if _port_open(port):
            reason = check_ready(servers, timeout_s=min(10.0, max(1.0, deadline - time.monotonic())))
            if reason is None:
                print(f"kafka: broker ready at {servers} in {time.monotonic() - started:.1f} s "
                      f"(log: {layout.log})", flush=True)
                return
        time.sleep(0.3)
    alive = _read_pid(layout) is not None
    down(port, quiet=True)
    sys.exit(f"kafka: the broker did not become ready within {READY_TIMEOUT_S:.0f} s "
             f"({'still running' if alive else 'the process exited'}; last check: {reason}).\n"
             f"--- tail of {layout.log} ---\n{_log_tail(layout)}")


def down(port: int, quiet: bool = False) -> None:
    layout = Layout(port)
    pid = _read_pid(layout)
    if pid is None:
        layout.pid.unlink(missing_ok=True)
        if not quiet:
            print("kafka: no broker of ours is running", flush=True)
        return
    # the broker runs in its own session, so the group id is its pid
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.1)
    layout.pid.unlink(missing_ok=True)
    if not quiet:
        print(f"kafka: broker stopped (pid {pid})", flush=True)


def _alive(pid: int) -> bool:
    try:
        # reap it if it is our child (it is not when started by another invocation)
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "fetch"])
    parser.add_argument("--port", type=int, default=_port())
    parser.add_argument("--owner-file", type=Path,
                        help="up: write this file when up starts the broker (not when it reuses one); "
                             "down: stop the broker only if this file says we started it, then remove it")
    args = parser.parse_args(argv)
    if args.command == "up":
        up(args.port, args.owner_file)
    elif args.command == "down":
        if args.owner_file is not None:
            if not args.owner_file.exists():
                print("kafka: leaving the broker running (it was up before)", flush=True)
                return 0
            args.owner_file.unlink()
        down(args.port)
    elif args.command == "fetch":
        fetch(Layout(args.port))
    else:
        reason = check_ready(bootstrap(args.port)) if _port_open(args.port) else "port closed"
        print(f"kafka: {'ready' if reason is None else 'not ready: ' + reason} at {bootstrap(args.port)}")
        return 0 if reason is None else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
