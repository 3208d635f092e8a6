"""The command line against the real broker: alerts subscription, check-config, help, demo."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from stream_monitor.cli import build_parser, main

from .service_harness import produce

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream_monitor.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("command", ["run", "replay", "simulate", "check-config", "alerts", "topics"])
def test_every_command_has_help(command):
    result = _cli(command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: stream-monitor " + command)


def test_check_config_lists_every_bad_field_and_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("consumer: {batch_size: -1}\nmetrics: {port: 123456}\n")
    assert main(["check-config", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "consumer.batch_size" in err and "metrics.port" in err
    typo = tmp_path / "typo.yaml"
    typo.write_text("kafka: {properties: {sesion.timeout.ms: 6000}}\n")
    assert main(["check-config", "--config", str(typo)]) == 2
    assert "sesion.timeout.ms" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text("kafka: {sasl_password: do-not-print}\n")
    assert main(["check-config", "--config", str(good)]) == 0
    out = capsys.readouterr().out
    assert "do-not-print" not in out and '"***"' in out


def test_alerts_command_filters_and_prints(kafka_bootstrap, topic_factory):
    topic = topic_factory("alerts")
    alerts = [{"alert_id": f"{n:032x}", "model": model, "model_version": "1", "signal": signal,
               "detector": "ks", "event_id": f"e{n}", "detected_at": "2025-11-24T16:00:00.000Z",
               "n_seen": n, "statistic": 0.3, "threshold": 0.2, "p_value": 1e-6, "severity": severity,
               "reference": "values[0:1000]", "window": {"reference": 1000, "current": 300}, "partition": 0}
              for n, (model, signal, severity) in enumerate([
                  ("fraud", "feature:amount", "warning"), ("churn", "feature:amount", "warning"),
                  ("fraud", "prediction", "critical"), ("fraud", "feature:amount", "critical")])]
    produce(kafka_bootstrap, topic, [orjson.dumps(a) for a in alerts])
    common = ["alerts", "--bootstrap", kafka_bootstrap, "--topic", topic, "--from-beginning",
              "--exit-when-idle", "3"]
    readable = _cli(*common, "--model", "fraud", "--signal", "feature:amount")
    assert readable.returncode == 0, readable.stderr
    lines = readable.stdout.splitlines()
    assert len(lines) == 2
    assert "fraud@1 feature:amount ks" in lines[0] and "at event e0" in lines[0]
    as_json = _cli(*common, "--severity", "critical", "--json")
    assert [orjson.loads(line)["event_id"] for line in as_json.stdout.splitlines()] == ["e2", "e3"]


def test_demo_prints_the_drift_alerts_and_stops_cleanly(kafka_bootstrap, tmp_path):
    suffix = uuid.uuid4().hex[:10]
    config = tmp_path / "demo.yaml"
    config.write_text(f"""\
kafka: {{bootstrap_servers: "{kafka_bootstrap}", group_id: demo-test-{suffix}}}
topics: {{predictions: demo-test.{suffix}.predictions, labels: demo-test.{suffix}.labels,
          alerts: demo-test.{suffix}.alerts, dead_letter: demo-test.{suffix}.dead-letter}}
consumer: {{poll_timeout_s: 0.2, commit_interval_s: 1.0}}
metrics: {{host: 127.0.0.1, port: 0}}
""")
    result = subprocess.run(
        [sys.executable, "-m", "stream_monitor.demo", "--bootstrap", kafka_bootstrap, "--config", str(config),
         "--events", "32000", "--rate", "4000", "--duration", "25"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = [line for line in result.stdout.splitlines() if line.startswith("ALERT ")]
    assert any("fraud@1 feature:f03" in line for line in alerts), result.stdout
    assert any("fraud@1 feature:c00" in line for line in alerts), result.stdout
    assert all("fraud@1" in line for line in alerts), result.stdout
    assert "monitor exited with status 0" in result.stdout
    # 32,000 events per model at 4,000/s: the stream ends well within the 25 s, and the demo says so
    (finished,) = [line for line in result.stdout.splitlines() if "the simulated stream is finished" in line]
    assert "produced 64000 events" in finished, finished


def test_demo_leaves_a_broker_it_did_not_start_running(kafka_bootstrap, tmp_path):
    """`make demo` on a broker already up (this session's) reuses it and does not stop it."""
    port = int(kafka_bootstrap.rsplit(":", 1)[1])
    owner = tmp_path / "broker-started"
    kafka = [sys.executable, str(REPO / "deploy" / "local" / "kafka.py")]
    up = subprocess.run([*kafka, "up", "--port", str(port), "--owner-file", str(owner)],
                        capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "reusing the broker already up" in up.stdout and not owner.exists()
    down = subprocess.run([*kafka, "down", "--port", str(port), "--owner-file", str(owner)],
                          capture_output=True, text=True, timeout=60)
    assert down.returncode == 0 and "leaving the broker running" in down.stdout, down.stdout + down.stderr
    status = subprocess.run([*kafka, "status", "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "ready" in status.stdout, status.stdout


def test_make_demo_installs_only_what_the_demo_needs():
    """The demo's venv step installs the package without the [test] extra, with pip's progress shown,
    and the compiled block decoder where there is a cargo (none: the step says so and goes on)."""
    for cargo, decoder in (("/opt/rust/bin/cargo", True), ("", False)):
        plan = subprocess.run(["make", "-n", "-B", "demo", "VENV=/nonexistent-venv", f"CARGO={cargo}"], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert plan.returncode == 0, plan.stderr
        installs = [line.strip() for line in plan.stdout.splitlines()
                    if "pip install" in line and "upgrade pip" not in line]
        assert installs[0] == "/nonexistent-venv/bin/python -m pip install --progress-bar on -e .", installs
        assert len(installs) == 2 and "[test]" not in installs[1]
        assert "./stream_monitor/_decode_rs" in installs[1]
        # the shell skips the decoder's install when make found no cargo
        assert f'if [ -n "{cargo}" ]' in plan.stdout
        assert ('PATH="$(dirname /opt/rust/bin/cargo):$PATH"' in installs[1]) is decoder
    assert "--owner-file" in plan.stdout


def test_make_bench_runs_every_benchmark_against_the_local_broker():
    """The benchmarks that measure the service from a real broker read KAFKA_BOOTSTRAP (without it
    bench/throughput.py and bench/state.py leave that part out): make bench starts the local broker
    unless one is up, gives every script its address, and stops only a broker it started."""
    plan = subprocess.run(["make", "-n", "-B", "bench", "VENV=/nonexistent-venv", "KAFKA_PORT=19092"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr
    lines = [line.strip() for line in plan.stdout.splitlines()]
    up = lines.index("/nonexistent-venv/bin/python deploy/local/kafka.py up --owner-file "
                     ".cache/bench/broker-started-19092")
    run = next(index for index, line in enumerate(lines) if "$script" in line and "python" in line)
    assert lines[run].startswith("KAFKA_BOOTSTRAP=127.0.0.1:19092 /nonexistent-venv/bin/python $script"), lines[run]
    down = next(index for index, line in enumerate(lines) if "kafka.py down" in line)
    assert up < run < down
    assert "--owner-file .cache/bench/broker-started-19092" in lines[down]


def test_parser_names_every_command():
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(commands) == {"run", "replay", "simulate", "reference", "check-config", "alerts", "topics"}
    topics = commands["topics"]._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(topics) == {"create"}


def test_missing_topics_fail_by_name_but_a_missing_labels_topic_only_warns(kafka_bootstrap, topic_factory,
                                                                            tmp_path):
    from .service_harness import write_config

    predictions, alerts, dead = (topic_factory("predictions"), topic_factory("alerts"),
                                 topic_factory("dead-letter"))
    absent = f"absent.{uuid.uuid4().hex[:8]}"
    config = write_config(tmp_path / "labels.yaml", kafka_bootstrap, f"g-{uuid.uuid4().hex[:6]}",
                          {"predictions": predictions, "labels": absent, "alerts": alerts,
                           "dead_letter": dead})
    result = _cli("run", "--config", str(config), "--exit-when-idle", "1")
    assert result.returncode == 0, result.stderr
    assert "labels topic not found" in result.stderr and absent in result.stderr

    config = write_config(tmp_path / "alerts.yaml", kafka_bootstrap, f"g-{uuid.uuid4().hex[:6]}",
                          {"predictions": predictions, "alerts": absent, "dead_letter": dead})
    result = _cli("run", "--config", str(config), "--exit-when-idle", "1")
    assert result.returncode == 1
    assert f"topic(s) not found on the cluster: {absent}" in result.stderr


def test_alerts_banner_from_beginning_and_signal_by_feature_name(kafka_bootstrap, topic_factory):
    topic = topic_factory("alerts")
    alerts = [{"alert_id": f"{n:032x}", "model": "fraud", "model_version": "1", "signal": signal,
               "detector": "page_hinkley", "event_id": f"e{n}", "detected_at": "2025-11-24T16:00:00.000Z",
               "n_seen": n, "statistic": 30.0, "threshold": 20.0, "p_value": None, "severity": "warning",
               "reference": "values[0:1000]", "window": {"reference": 1000}, "partition": 0}
              for n, signal in enumerate(["feature:amount", "feature:amount_eur", "prediction",
                                          "feature:amount", "performance:error_rate"])]
    produce(kafka_bootstrap, topic, [orjson.dumps(a) for a in alerts])
    common = ["alerts", "--bootstrap", kafka_bootstrap, "--topic", topic, "--exit-when-idle", "3", "--json"]

    by_name = _cli(*common, "--from-beginning", "--signal", "amount")
    assert by_name.returncode == 0, by_name.stderr
    assert [orjson.loads(line)["event_id"] for line in by_name.stdout.splitlines()] == ["e0", "e3"]
    banner = by_name.stderr.splitlines()[0]
    assert banner == (f"alerts: reading topic {topic} from {kafka_bootstrap} (from the beginning), "
                      f"only signal amount")
    full = _cli(*common, "--from-beginning", "--signal", "feature:amount")
    assert [orjson.loads(line)["event_id"] for line in full.stdout.splitlines()] == ["e0", "e3"]
    metric = _cli(*common, "--from-beginning", "--signal", "error_rate")
    assert [orjson.loads(line)["event_id"] for line in metric.stdout.splitlines()] == ["e4"]

    nothing = _cli(*common, "--from-beginning", "--signal", "amonut")
    assert nothing.returncode == 0 and nothing.stdout == ""
    assert (f"alerts: --signal amonut matched no alert of the 5 read; signals seen: feature:amount, "
            f"feature:amount_eur, performance:error_rate, prediction") in nothing.stderr

    # without --from-beginning: only alerts produced after it started (none here)
    latest = _cli(*common, "--signal", "amount")
    assert latest.returncode == 0 and latest.stdout == ""
    assert latest.stderr.splitlines()[0] == (f"alerts: reading topic {topic} from {kafka_bootstrap} "
                                             f"(new alerts only, from the latest offset), only signal amount")
    assert "alerts: --signal amount matched no alert (no alert was read)" in latest.stderr
