"""Shared by the tests in tests/deploy: paths, the Prometheus tools, the files under test.

Named uniquely (not ``conftest.py``) because tests/deploy has no ``__init__.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "rules" / "stream-monitor.rules.yml"
RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
KUBERNETES = DEPLOY / "kubernetes"
COMPOSE = REPO_ROOT / "docker-compose.yml"
COMPOSE_CONFIG = REPO_ROOT / "config" / "compose.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
INSTALL_HINT = "run `make deploy-tools` (deploy/local/prometheus_tools.sh) to install them"


def tool(name: str) -> str:
    """Path of a Prometheus tool; skip when missing outside CI, fail in CI.

    ``make test`` installs them first, so in CI (env ``CI`` set) a missing tool
    is a broken set-up, never a reason to pass quietly.
    """
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not found on PATH: {INSTALL_HINT}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run(*command: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def rule_groups() -> list[dict[str, Any]]:
    return load_yaml(RULES)["groups"]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


#: the rule group and the dashboard row of what is not monitored: counters that
#: exist only once something was skipped, dropped or refused (none on a healthy monitor)
BLIND_SPOT_GROUP = "stream-monitor-blind-spots"
BLIND_SPOT_ROW = "What is not monitored"


def blind_spot_rules() -> set[str]:
    return {rule["alert"] for group in rule_groups() if group["name"] == BLIND_SPOT_GROUP
            for rule in group["rules"] if "alert" in rule}


def blind_spot_panels(dashboard: dict[str, Any]) -> set[str]:
    """Titles of the panels under the "What is not monitored" row (up to the next row)."""
    return {panel["title"] for panel in row_panels(dashboard, BLIND_SPOT_ROW)}


def row_panels(dashboard: dict[str, Any], row: str) -> list[dict[str, Any]]:
    """The panels under the row titled ``row`` (up to the next row)."""
    found = []
    inside = False
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            inside = panel["title"] == row
        elif inside:
            found.append(panel)
    return found


#: the rule group and the dashboard row of durable state (restores, snapshots, changelog)
STATE_GROUP = "stream-monitor-state"
STATE_ROW = "State and recovery"
#: state series that exist only after a restore failed or a restart re-read messages:
#: the rule and the panel evaluate, but have no data on a first start (the e2e scenario)
STATE_FAILURE_RULES = {"StreamMonitorStateRestoreFailed"}
STATE_REPLAY_PANELS = {"Messages re-read after a restore / s"}


#: a comparison's verdict exists only once a candidate version differed from its baseline;
#: the e2e canary serves the same model as the baseline, so the rule has no data there
COMPARISON_VERDICT_RULES = {"StreamMonitorVersionDiffers"}


#: Kafka client errors exist only once the client reported one: none on a healthy stream
CLIENT_ERROR_PANELS = {"Kafka client errors / s by code"}


def quiet_rules() -> set[str]:
    """Rules whose series are absent, and which never fire, on a healthy first start."""
    return blind_spot_rules() | STATE_FAILURE_RULES | COMPARISON_VERDICT_RULES


def quiet_panels(dashboard: dict[str, Any]) -> set[str]:
    """Titles of the panels that may show no data on a healthy first start."""
    return blind_spot_panels(dashboard) | STATE_REPLAY_PANELS | CLIENT_ERROR_PANELS


def dashboards() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in DASHBOARDS]


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every Prometheus annotation."""
    queries = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                queries.append((f"panel {panel['title']!r} target {target['refId']}", target["expr"]))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            queries.append((f"annotation {annotation['name']!r}", annotation["expr"]))
    return queries


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


METRIC_NAME = re.compile(r"\b(stream_monitor_[a-z0-9_]+)\b")
