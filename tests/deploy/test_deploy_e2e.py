"""End to end: the shipped rules and dashboard against a real Prometheus and Alertmanager.

One scenario for the module: ``stream-monitor run`` reads a drifting stream
(feature f03 of model "fraud" shifts by +2 sigma at event 3000 of 8000, plus a
few bad messages, with event times up to now) and its labels from the real broker; a real Prometheus on loopback scrapes
it every second with deploy/prometheus's rules loaded (``for:`` shortened) and
sends alerts to a real Alertmanager, which posts them to a webhook served by
the test. Then every PromQL expression of the dashboard and of the rules runs
against Prometheus's HTTP API.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from deploy_support import (DOCKERFILE, METRIC_NAME, RULES, alert_rules, dashboard_queries, dashboards,
                            free_port, quiet_panels, quiet_rules, run, tool)
from tests.integration.service_harness import MonitorProcess, produce, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MODEL, SIGNAL = "fraud", "feature:f03"
N_EVENTS, DRIFT_AT = 8000, 3000
#: a canary: version 2 takes a fifth of the traffic from event 5000 on (after the drift, so its
#: own detectors learn the drifted inputs as normal), scoring as version 1 does: the comparison
#: panel has data and no comparison alert fires
CANARY_VERSION, CANARY_FROM = "2", 5000
BAD_MESSAGES = [b"{not json", b"\xff\xfe", b'{"model": "fraud"}']
# Grafana's variables as a user picking model fraud, version 1 and signal feature:f03 gets them
VERSION = "1"
TEMPLATE_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1s", "$__range": "5m",
                      "$model": MODEL, "$model_version": VERSION, "$signal": SIGNAL}


@dataclass
class Webhook:
    """Alertmanager's webhook receiver: keeps every notification posted to it."""

    server: ThreadingHTTPServer
    received: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/alerts"


def start_webhook() -> Webhook:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return Webhook(server, received)


class Daemon:
    """A Prometheus or Alertmanager process with its log in a file."""

    def __init__(self, command: list[str], log: Path, port: int) -> None:
        self.log_path = log
        self._log = open(log, "wb")
        self.port = port
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.log_path.name} exited:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url("/-/ready"), timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.log_path.name} not ready in {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@dataclass
class Scenario:
    monitor: MonitorProcess
    prometheus: Daemon
    alertmanager: Daemon
    webhook: Webhook
    started: float
    topics: dict[str, str]

    def api(self, path: str, **params: str) -> Any:
        url = self.prometheus.url(f"/api/v1/{path}") + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read())
        assert body["status"] == "success", f"{path} {params}: {body.get('error')}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def query_range(self, expr: str) -> list[dict[str, Any]]:
        """What a Grafana panel asks for: the range since the scenario started."""
        return self.api("query_range", query=expr, start=f"{self.started:.3f}",
                        end=f"{time.time():.3f}", step="1")["result"]

    def firing(self) -> list[dict[str, Any]]:
        return [alert for alert in self.api("alerts")["alerts"] if alert["state"] == "firing"]

    def active(self) -> list[dict[str, Any]]:
        """Firing and pending alerts: a pending one is on its way to firing."""
        return self.api("alerts")["alerts"]


def substitute(expr: str) -> str:
    # longest names first: $__rate_interval before $__range and $__interval
    for name in sorted(TEMPLATE_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, TEMPLATE_VARIABLES[name])
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def fast_rules(path: Path) -> Path:
    """The shipped rules with for: shortened, for a test that lasts seconds.

    The drift rule waits 2 s; the others 10 s, so that one slow scrape on a
    busy machine (up == 0 once) does not fire StreamMonitorDown.
    """
    groups = yaml.safe_load(RULES.read_text())
    for group in groups["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "2s" if rule.get("alert") == "StreamMonitorDriftDetected" else "10s"
    path.write_text(yaml.safe_dump(groups, sort_keys=False))
    return path


def drifting_stream() -> list[tuple[str, bytes]]:
    """(kind, message) in arrival order: predictions and, 500 events later each, their labels."""
    from stream_monitor.simulate import Scenario as Simulation, parse_drift, stream

    drift = parse_drift(f"{MODEL}:{SIGNAL}@{DRIFT_AT}:shift=2.0")
    simulation = Simulation(models=(MODEL,), n_events=N_EVENTS, n_numeric=5, n_categorical=1,
                            drifts=(drift,), seed=11, candidate_version=CANARY_VERSION,
                            candidate_share=0.2, candidate_from=CANARY_FROM,
                            # event times end now, as on a live stream (the event-time lag rule)
                            start_ts=time.time() - N_EVENTS * 0.01, interval_s=0.01)
    messages = [(kind, orjson.dumps(item)) for kind, item in stream(simulation)]
    # bad messages spread over the predictions: dead letters by reason
    for position, bad in zip((500, 4000, 7000), BAD_MESSAGES):
        messages.insert(2 * position, ("prediction", bad))
    return messages


@pytest.fixture(scope="module")
def scenario(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    from confluent_kafka.admin import AdminClient, NewTopic

    prometheus_bin, alertmanager_bin = tool("prometheus"), tool("prometheus-alertmanager")
    workdir = tmp_path_factory.mktemp("deploy-e2e")
    tag = uuid.uuid4().hex[:10]
    topics = {"predictions": f"test.deploy.in.{tag}", "labels": f"test.deploy.labels.{tag}",
              "alerts": f"test.deploy.alerts.{tag}", "dead_letter": f"test.deploy.dlq.{tag}"}
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1)
                                       for t in topics.values()], operation_timeout=30).values():
        future.result(timeout=30)

    config = workdir / "monitor.yaml"
    config.write_text(yaml.safe_dump({
        "kafka": {"bootstrap_servers": kafka_bootstrap, "group_id": f"test-deploy-{tag}",
                  # consumer lag is read from librdkafka's statistics: every second here
                  "properties": {"statistics.interval.ms": 1000}},
        "topics": topics,
        "consumer": {"batch_size": 500, "poll_timeout_s": 0.2, "commit_interval_s": 1.0},
        "metrics": {"host": "127.0.0.1", "port": 0},
    }))

    webhook = start_webhook()
    am_port = free_port()
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump({
        "route": {"receiver": "test", "group_by": ["alertname", "model", "signal"],
                  "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "test", "webhook_configs": [{"url": webhook.url, "send_resolved": False}]}],
    }))
    started: list[Any] = []
    monitor = None
    try:
        alertmanager = Daemon([alertmanager_bin, f"--config.file={workdir / 'alertmanager.yml'}",
                               f"--storage.path={workdir / 'alertmanager-data'}",
                               f"--web.listen-address=127.0.0.1:{am_port}",
                               "--cluster.listen-address="],  # no gossip port: a single instance
                              workdir / "alertmanager.log", am_port)
        started.append(alertmanager)
        monitor = MonitorProcess(config, workdir / "monitor.log")

        rules = fast_rules(workdir / "stream-monitor.rules.yml")
        prom_port = free_port()
        (workdir / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(rules)],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            # the job name the rules select, as in deploy/prometheus/prometheus.yml
            "scrape_configs": [{"job_name": "stream-monitor",
                                "static_configs": [{"targets": [f"127.0.0.1:{monitor.port}"]}]}],
        }))
        prometheus = Daemon([prometheus_bin, f"--config.file={workdir / 'prometheus.yml'}",
                             f"--storage.tsdb.path={workdir / 'prometheus-data'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            workdir / "prometheus.log", prom_port)
        started.append(prometheus)
        alertmanager.wait_ready()
        prometheus.wait_ready()
        state = Scenario(monitor, prometheus, alertmanager, webhook, time.time() - 1, topics)
        wait_until(lambda: state.query('up{job="stream-monitor"} == 1'), 30, "the first scrape")

        # produce at ~1000 events/s so Prometheus sees the stream move, the drift arrive
        # and counters rise between scrapes (not one jump between two scrapes)
        messages = drifting_stream()
        for start in range(0, len(messages), 1000):
            chunk = messages[start:start + 1000]
            for kind in ("prediction", "label"):
                produce(kafka_bootstrap, topics[f"{kind}s"], [m for k, m in chunk if k == kind],
                        key=MODEL.encode())
            time.sleep(0.4)
        for kind in ("prediction", "label"):
            monitor.wait_consumed(topics[f"{kind}s"], sum(k == kind for k, _ in messages), timeout_s=90)
        yield state
    except BaseException:
        if monitor is not None:
            sys.stderr.write(f"monitor log:\n{monitor.log()[-5000:]}\n")
        for daemon in started:
            sys.stderr.write(f"{daemon.log_path.name}:\n{daemon.log()}\n")
        raise
    finally:
        if monitor is not None:
            if monitor.process.poll() is None:
                monitor.terminate()
            monitor.close()
        for daemon in reversed(started):
            daemon.stop()
        webhook.server.shutdown()
        # the monitor made its changelog topic (<group_id>.state) at start
        state_topic = f"test-deploy-{tag}.state"
        for future in admin.delete_topics([*topics.values(), state_topic], operation_timeout=30).values():
            try:
                future.result(timeout=30)
            except Exception:  # noqa: BLE001 - clean-up only
                pass


def test_drift_alert_reaches_firing_with_model_and_signal(scenario: Scenario) -> None:
    def drift_firing() -> list[dict[str, Any]]:
        return [alert for alert in scenario.firing()
                if alert["labels"]["alertname"] == "StreamMonitorDriftDetected"]

    firing = wait_until(drift_firing, 60, "StreamMonitorDriftDetected to fire")
    assert {(a["labels"]["model"], a["labels"]["signal"]) for a in firing} == {(MODEL, SIGNAL)}
    (alert,) = firing
    assert alert["labels"]["severity"] == "warning"
    assert SIGNAL in alert["annotations"]["summary"] and MODEL in alert["annotations"]["summary"]


def test_no_other_alert_fires_on_a_healthy_monitor(scenario: Scenario) -> None:
    wait_until(lambda: scenario.query("stream_monitor_consumer_lag_messages"), 30, "the lag metric")
    names = {alert["labels"]["alertname"] for alert in scenario.active()}
    assert names <= {"StreamMonitorDriftDetected"}, names


def test_alertmanager_posts_the_drift_alert_to_the_webhook(scenario: Scenario) -> None:
    def drift_notifications() -> list[dict[str, Any]]:
        return [alert for notification in list(scenario.webhook.received)
                for alert in notification["alerts"]
                if alert["labels"].get("alertname") == "StreamMonitorDriftDetected"
                and alert["status"] == "firing"]

    alerts = wait_until(drift_notifications, 60, "Alertmanager to post the drift alert")
    labels = alerts[0]["labels"]
    assert (labels["model"], labels["signal"], labels["severity"]) == (MODEL, SIGNAL, "warning")
    assert alerts[0]["annotations"]["summary"]
    grouped = [n for n in scenario.webhook.received
               if n["groupLabels"].get("alertname") == "StreamMonitorDriftDetected"]
    assert grouped[0]["groupLabels"] == {"alertname": "StreamMonitorDriftDetected", "model": MODEL,
                                         "signal": SIGNAL}


def test_dashboard_variables_list_the_model_and_the_signal(scenario: Scenario) -> None:
    (dashboard,) = dashboards()
    for variable in dashboard["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", variable["definition"])
        assert match, variable["definition"]
        selector, label = substitute(match.group(1)), match.group(2)
        # what Grafana's Prometheus datasource asks for a label_values() variable
        values = scenario.api(f"label/{label}/values", **{"match[]": selector,
                                                           "start": f"{scenario.started:.0f}"})
        assert {"model": MODEL, "model_version": VERSION, "signal": SIGNAL}[label] in values, (
            variable["name"], values)


DASHBOARD_QUERIES = [query for dashboard in dashboards() for query in dashboard_queries(dashboard)]


@pytest.mark.parametrize("where,expr", DASHBOARD_QUERIES, ids=[where for where, _ in DASHBOARD_QUERIES])
def test_every_dashboard_query_returns_data(scenario: Scenario, where: str, expr: str) -> None:
    wait_until(lambda: scenario.query("stream_monitor_consumer_lag_messages"), 30, "the lag metric")
    result = scenario.query_range(substitute(expr))
    if any(f"panel {title!r}" in where for dashboard in dashboards()
           for title in quiet_panels(dashboard)):
        return  # evaluates (asserted by the API call); no data is the healthy case
    assert result, f"{where}: no data for {substitute(expr)}"
    assert any(sample for series in result for sample in series["values"]), where


def _without_comparison(expr: str) -> str:
    """The alert expression without its threshold: the values the rule compares."""
    return re.sub(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.eE+-]+\b", "", expr)


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_rule_expression_evaluates_on_the_monitors_metrics(
        scenario: Scenario, rule: dict[str, Any]) -> None:
    wait_until(lambda: scenario.query("stream_monitor_consumer_lag_messages"), 30, "the lag metric")
    expr = rule["expr"]
    scenario.query(expr)  # evaluates without error (asserted by api())
    if rule["alert"] == "StreamMonitorDriftDetected":
        assert scenario.query(expr), "the drift condition must hold in this scenario"
        return
    if rule["alert"] in quiet_rules():
        # counters of what was skipped, refused or failed: absent, and never true, on a healthy stream
        assert scenario.query(expr) == [], rule["alert"]
        return
    # every series the rule reads exists...
    for selector in re.findall(r"\b(?:stream_monitor_[a-z_]+|up)\b(?:\{[^}]*\})?", expr):
        assert scenario.query(selector), f"{rule['alert']}: no data for {selector}"
    # ...and the compared quantity has a value (absent() is empty while the monitor is up)
    underlying = _without_comparison(expr)
    if expr.strip().startswith("absent("):
        assert scenario.query(underlying) == []
    else:
        assert scenario.query(underlying), f"{rule['alert']}: no data for {underlying}"


def test_promtool_check_metrics_on_a_scrape_of_the_monitor(scenario: Scenario) -> None:
    exposition = scenario.monitor.scrape()
    result = run(tool("promtool"), "check", "metrics", stdin=exposition)
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(METRIC_NAME.findall(exposition)) >= {
        "stream_monitor_drift_active", "stream_monitor_detector_statistic",
        "stream_monitor_consumer_lag_messages", "stream_monitor_events_rejected_total"}


def test_the_dockerfile_healthcheck_command_checks_the_monitor(scenario: Scenario) -> None:
    """Run the image's HEALTHCHECK command (python + urllib) against the live monitor."""
    instructions = DOCKERFILE.read_text().replace("\\\n", " ")  # join continued lines
    match = re.search(r"^HEALTHCHECK .* CMD (\[.*\])$", instructions, re.M)
    assert match
    command = json.loads(match.group(1))
    assert command[0] == "python"
    command[0] = sys.executable
    env = {**os.environ, "STREAM_MONITOR_METRICS__PORT": str(scenario.monitor.port)}
    assert subprocess.run(command, env=env, capture_output=True, timeout=10).returncode == 0
    env["STREAM_MONITOR_METRICS__PORT"] = str(free_port())  # nothing listens there
    assert subprocess.run(command, env=env, capture_output=True, timeout=10).returncode != 0
