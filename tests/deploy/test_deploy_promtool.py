"""promtool and amtool on the shipped Prometheus and Alertmanager files.

`make test` installs the tools (deploy/local/prometheus_tools.sh); these tests
skip only when a tool is missing outside CI.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from deploy_support import (ALERTMANAGER_CONFIG, KUBERNETES, PROMETHEUS_CONFIG, REPO_ROOT, RULE_TESTS,
                            RULES, alert_rules, load_yaml, load_yaml_documents, run, tool)

SEVERITIES = {"info", "warning", "critical"}


def test_promtool_check_config_accepts_the_scrape_config_and_its_rules() -> None:
    result = run(tool("promtool"), "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    # the rule_files glob must have found the rules, not zero files
    assert "1 rule files found" in result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    result = run(tool("promtool"), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(rf"(?<!\d){len(alert_rules())} rules found", result.stdout), result.stdout


def test_promtool_check_rules_on_the_kubernetes_prometheusrule(tmp_path: Path) -> None:
    (rule,) = [doc for doc in load_yaml_documents(KUBERNETES / "prometheusrule.yaml")
               if doc["kind"] == "PrometheusRule"]
    extracted = tmp_path / "prometheusrule.rules.yml"
    extracted.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = run(tool("promtool"), "check", "rules", str(extracted))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    assert RULE_TESTS, "no promtool unit tests in deploy/prometheus/tests"
    result = run(tool("promtool"), "test", "rules", *map(str, RULE_TESTS), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_rule_has_for_severity_and_annotations() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} >= {
        "StreamMonitorDriftDetected", "StreamMonitorDown", "StreamMonitorConsumerLagHigh",
        "StreamMonitorDeadLettersRising", "StreamMonitorNoEvents"}
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{rule['alert']}: no for:"
        if rule["alert"] in ("StreamMonitorDriftDetected", "StreamMonitorVersionDiffers"):
            continue  # its severity comes from the metrics (a label of the series)
        assert rule.get("labels", {}).get("severity") in SEVERITIES, rule["alert"]
        annotations = rule.get("annotations", {})
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]


def test_drift_rule_routes_by_the_severity_of_the_metrics() -> None:
    (drift,) = [rule for rule in alert_rules() if rule["alert"] == "StreamMonitorDriftDetected"]
    # a static severity would override the signal's: performance (critical) apart from warnings
    assert "severity" not in drift.get("labels", {})
    for aggregation in re.findall(r"by \(([^)]*)\)", drift["expr"]):
        assert "severity" in {label.strip() for label in aggregation.split(",")}, aggregation
    annotations = drift.get("annotations", {})
    assert annotations.get("summary") and annotations.get("description")
    routes = load_yaml(ALERTMANAGER_CONFIG)["route"]["routes"]
    assert any('severity="critical"' in route.get("matchers", []) for route in routes)


def test_drift_rule_keeps_model_and_signal_labels() -> None:
    (drift,) = [rule for rule in alert_rules() if rule["alert"] == "StreamMonitorDriftDetected"]
    assert "without" not in drift["expr"]
    aggregations = re.findall(r"by \(([^)]*)\)", drift["expr"])
    # the expression must aggregate, and every aggregation keep both labels
    assert aggregations, drift["expr"]
    for aggregation in aggregations:
        labels = {label.strip() for label in aggregation.split(",")}
        assert {"model", "signal"} <= labels, aggregation


def test_every_alert_rule_has_a_firing_and_a_not_firing_unit_test() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        suite = load_yaml(path)
        assert [(path.parent / f).resolve() for f in suite["rule_files"]] == [RULES.resolve()], path
        for case in suite["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "rules never tested firing"
    assert names - silent == set(), "rules never tested not firing"


def test_amtool_check_config_accepts_the_alertmanager_config() -> None:
    amtool = tool("amtool")
    result = run(amtool, "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_groups_drift_alerts_per_model_and_signal() -> None:
    route = load_yaml(ALERTMANAGER_CONFIG)["route"]
    assert {"alertname", "model", "signal"} <= set(route["group_by"])


def test_generated_kubernetes_files_are_up_to_date() -> None:
    """prometheusrule.yaml and grafana-dashboard.yaml are generated from the sources."""
    result = run(sys.executable, str(KUBERNETES / "generate.py"), "--check")
    assert result.returncode == 0, result.stderr
    (rule,) = [doc for doc in load_yaml_documents(KUBERNETES / "prometheusrule.yaml")
               if doc["kind"] == "PrometheusRule"]
    assert rule["spec"]["groups"] == load_yaml(RULES)["groups"]


def test_prometheus_tools_script_reports_installed_tools() -> None:
    script = REPO_ROOT / "deploy" / "local" / "prometheus_tools.sh"
    tool("promtool")
    tool("prometheus")
    tool("prometheus-alertmanager")
    result = run("bash", str(script), "--check")
    assert result.returncode == 0, result.stdout + result.stderr
