"""Operator-facing failures give one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from stream_monitor.cli import main


def _run(config) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream_monitor.cli", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)


def _config(tmp_path, text: str = ""):
    path = tmp_path / "config.yaml"
    path.write_text("kafka: {bootstrap_servers: 127.0.0.1:1}\n" + text)
    return path


def test_a_metrics_port_in_use_is_one_line_naming_the_port_and_the_setting(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _config(tmp_path, f"metrics: {{host: 127.0.0.1, port: {port}}}\n")
        done = _run(config)
    assert done.returncode == 1
    err = done.stderr
    lines = [line for line in err.splitlines() if line.startswith("stream-monitor:")]
    assert lines == [f"stream-monitor: metrics port 127.0.0.1:{port} is already in use: set metrics.port "
                     f"(or STREAM_MONITOR_METRICS__PORT; 0 picks a free port)"]
    assert "Traceback" not in err


def test_a_metrics_host_that_does_not_resolve_names_the_host_setting(tmp_path):
    config = _config(tmp_path, "metrics: {host: no-such-host.invalid, port: 0}\n")
    done = _run(config)
    assert done.returncode == 1
    err = done.stderr
    assert "cannot serve metrics on no-such-host.invalid:0" in err and "metrics.host" in err
    assert "Traceback" not in err


def test_replay_into_a_missing_folder_is_a_clear_error(tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    events.write_text("")
    assert main(["replay", "--input", str(events), "--alerts-out", str(tmp_path / "no" / "alerts.jsonl")]) == 2
    err = capsys.readouterr().err
    assert f"replay: --alerts-out: the folder {tmp_path / 'no'} does not exist" in err


@pytest.mark.parametrize("drift, reason", [
    ("feature:f99@100:shift=1", "feature:f99: no such feature (the simulated ones are f00-f02, c00)"),
    ("churn:feature:f00@100:shift=1", "model 'churn' is not simulated (--model: fraud)"),
    ("feature:c00@100:shift=1", "feature:c00 is categorical: use share="),
    ("feature:f00@100:share=0.5", "feature:f00 is numeric: use shift= or scale="),
    ("feature:f00@20000:shift=1", "event 20000 is beyond the 10000 simulated events"),
])
def test_simulate_refuses_a_drift_it_would_not_apply(tmp_path, capsys, drift, reason):
    out = tmp_path / "events.jsonl"
    assert main(["simulate", "--out", str(out), "--numeric", "3", "--categorical", "1",
                 "--drift", drift]) == 2
    err = capsys.readouterr().err
    assert f"simulate: --drift {drift}: {reason}" in err
    assert not out.exists()


def test_an_unreachable_broker_gives_json_lines_only_a_few_and_one_clear_last_line(tmp_path):
    # librdkafka reports a broker that stays down on every retry: those lines go through our
    # logger as JSON, rate-limited, and the run ends with one line naming the brokers tried
    config = _config(tmp_path, "metrics: {host: 127.0.0.1, port: 0}\n")
    done = subprocess.run([sys.executable, "-m", "stream_monitor.cli", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    plain = [line for line in lines if not line.startswith("{")]
    assert plain == ["stream-monitor: Kafka client: Failed to get metadata: Local: Broker transport failure "
                     "(brokers tried: 127.0.0.1:1, from kafka.bootstrap_servers)"]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    client = [record for record in records if record["logger"] == "stream_monitor.librdkafka"]
    assert client and all(record["facility"] and "127.0.0.1:1" in record["message"] for record in client)
    assert len(records) <= 30, f"{len(records)} log lines for one unreachable broker"
