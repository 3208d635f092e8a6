"""Static checks of docker-compose.yml, the Dockerfile, the Grafana files and the
Kubernetes manifests: they parse, images are pinned, dependencies are health-gated,
and ports, topics and metric names agree with the monitor's config and code.

Docker cannot run here, so these are the checks `docker compose up` would
otherwise be the first to make.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from deploy_support import (COMPOSE, COMPOSE_CONFIG, DASHBOARDS, DOCKERFILE, GRAFANA, KUBERNETES, METRIC_NAME,
                            PROMETHEUS_CONFIG, REPO_ROOT, RULES, STATE_FAILURE_RULES, STATE_GROUP,
                            STATE_REPLAY_PANELS, STATE_ROW, all_panels, dashboard_queries, dashboards,
                            load_yaml, load_yaml_documents, row_panels)
from stream_monitor.config import Settings, load_settings
from stream_monitor.metrics import Metrics
from stream_monitor.runtime.service import STOP_GRACE_S, consumer_config

#: the monitor's workload: a StatefulSet, for stable pod names (static membership)
WORKLOAD = "StatefulSet/stream-monitor"
#: the name the kubelet gives the first pod of the StatefulSet
FIRST_POD = "stream-monitor-0"
PINNED_TAG = re.compile(r"^[\w./-]+(:[\w][\w.-]*[0-9][\w.-]*)(@sha256:[0-9a-f]{64})?$")
DATASOURCE_UID = "stream-monitor-prometheus"


def assert_pinned(image: str, where: str) -> None:
    match = PINNED_TAG.match(image)
    assert match, f"{where}: image {image!r} is not pinned to a version tag"
    assert match.group(1) != ":latest", f"{where}: image {image!r} uses :latest"


# -- the files under test -------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def compose_settings() -> Settings:
    return load_settings(COMPOSE_CONFIG)


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object under deploy/kubernetes, by "Kind/name"."""
    found = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in load_yaml_documents(path):
            if doc.get("kind") == "Kustomization":
                continue
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path
            found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


@pytest.fixture(scope="module")
def k8s_settings(manifests: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory,
                 monkeypatch_module: pytest.MonkeyPatch) -> Settings:
    """The ConfigMap's config as the first pod's container sees it, env included."""
    config = tmp_path_factory.mktemp("k8s") / "config.yaml"
    config.write_text(manifests["ConfigMap/stream-monitor-config"]["data"]["config.yaml"])
    for var in container(manifests)["env"]:
        source = var["valueFrom"]
        if "fieldRef" in source:
            # the downward API: the pod's own field, as the kubelet fills it in
            assert source["fieldRef"]["fieldPath"] == "metadata.name", var
            value = FIRST_POD
        else:
            # the value the kubelet would take from the Secret, named after its key
            value = "from-secret-" + source["secretKeyRef"]["key"]
        monkeypatch_module.setenv(var["name"], value)
    return load_settings(config)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Any:
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


def container(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (main,) = manifests[WORKLOAD]["spec"]["template"]["spec"]["containers"]
    return main


def compose_topics(compose: dict[str, Any]) -> dict[str, int]:
    """Topic -> partitions created by the one-shot kafka-init service."""
    script = "\n".join(compose["services"]["kafka-init"]["command"])
    created = {}
    for line in script.splitlines():
        if "--create" in line:
            words = shlex.split(line)
            created[words[words.index("--topic") + 1]] = int(words[words.index("--partitions") + 1])
    return created


def exported_metric_names() -> set[str]:
    """Every sample name the service can export, histogram/info suffixes included."""
    registry = CollectorRegistry()
    Metrics(registry)
    names = set()
    for family in registry.collect():
        names.add(family.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",)}
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
    return names


# -- docker-compose.yml ---------------------------------------------------


def test_compose_parses_and_has_the_demo_services(compose: dict[str, Any]) -> None:
    assert {"kafka", "kafka-init", "monitor", "producer", "prometheus", "alertmanager", "grafana"} <= set(
        compose["services"])


def test_compose_validates_against_the_compose_specification() -> None:
    """The Compose Specification's JSON Schema, as vendored by check-jsonschema."""
    import jsonschema
    from importlib.resources import files

    schema = json.loads(files("check_jsonschema.builtin_schemas.vendor").joinpath(
        "compose-spec.json").read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(load_yaml(COMPOSE)), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_compose_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert "image" in service, f"{name}: no image (a build needs a versioned image name too)"
        assert_pinned(service["image"], f"compose service {name}")


def test_compose_kafka_is_single_node_kraft_from_the_official_image(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert int(env[key]) == 1, key
    # the healthcheck must look at what the broker says, not just run a command
    test = " ".join(kafka["healthcheck"]["test"])
    assert "grep" in test and "kafka-broker-api-versions" in test


def test_services_the_monitor_depends_on_are_health_gated(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("monitor", "producer", "prometheus", "grafana"):
        depends_on = services[name]["depends_on"]
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions, not a list"
        for dependency, spec in depends_on.items():
            condition = spec["condition"]
            assert condition in ("service_healthy", "service_completed_successfully"), (name, dependency)
            if condition == "service_healthy":
                assert services[dependency].get("healthcheck", {}).get("test"), (
                    f"{name} waits for {dependency} to be healthy, but it has no healthcheck")
            else:
                assert services[dependency].get("restart", "no") == "no", (
                    f"{dependency} is a one-shot: it must not restart")
    monitor_deps = services["monitor"]["depends_on"]
    assert monitor_deps["kafka"]["condition"] == "service_healthy"
    assert monitor_deps["kafka-init"]["condition"] == "service_completed_successfully"
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_compose_monitor_config_ports_and_topics_agree(compose: dict[str, Any],
                                                       compose_settings: Settings) -> None:
    services = compose["services"]
    monitor = services["monitor"]
    # the config file mounted is config/compose.yaml, at the path the command reads
    config_path = monitor["command"][monitor["command"].index("--config") + 1]
    mounts = {mount.split(":")[1]: mount.split(":")[0] for mount in monitor["volumes"]}
    assert (REPO_ROOT / mounts[config_path]).resolve() == COMPOSE_CONFIG.resolve()

    port = compose_settings.metrics.port
    assert f"{port}:{port}" in monitor["ports"]
    assert f":{port}/healthz" in " ".join(monitor["healthcheck"]["test"])
    scrape = load_yaml(PROMETHEUS_CONFIG)
    (job,) = [job for job in scrape["scrape_configs"] if job["job_name"] == "stream-monitor"]
    assert job["static_configs"][0]["targets"] == [f"monitor:{port}"]
    assert re.search(rf"^EXPOSE {port}$", DOCKERFILE.read_text(), re.M)

    # Kafka: the advertised listener is what the monitor and the producer bootstrap from
    kafka_env = services["kafka"]["environment"]
    assert f"PLAINTEXT://{compose_settings.kafka.bootstrap_servers}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    producer = " ".join(services["producer"]["command"])
    assert f"--bootstrap={compose_settings.kafka.bootstrap_servers}" in producer

    # every topic the monitor uses exists, and the producer writes to the input topics
    topics = compose_topics(compose)
    configured = compose_settings.topics
    for topic in (configured.predictions, configured.labels, configured.alerts, configured.dead_letter):
        assert topic in topics, f"{topic} is in config/compose.yaml but kafka-init does not create it"
    assert f"--topic={configured.predictions}" in producer
    assert f"--labels-topic={configured.labels}" in producer


def test_compose_monitor_is_one_static_member_with_time_to_stop(compose: dict[str, Any],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monitor = compose["services"]["monitor"]
    instance_id = monitor["environment"]["STREAM_MONITOR_KAFKA__INSTANCE_ID"]
    monkeypatch.setenv("STREAM_MONITOR_KAFKA__INSTANCE_ID", instance_id)
    settings = load_settings(COMPOSE_CONFIG)
    assert consumer_config(settings)["group.instance.id"] == instance_id
    # one container, restarted in place: one member per id
    assert monitor.get("deploy", {}).get("replicas", 1) == 1
    assert monitor["restart"] == "unless-stopped"
    # SIGTERM exits within 10 s, docker's own default before SIGKILL: more than that
    match = re.fullmatch(r"(\d+)s", monitor["stop_grace_period"])
    assert match and int(match.group(1)) > 10, monitor["stop_grace_period"]


def test_compose_mounts_point_at_files_that_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            assert (REPO_ROOT / source).exists(), f"{name}: {source} does not exist"
    prometheus = compose["services"]["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


# -- Dockerfile -------------------------------------------------------------


def test_dockerfile_is_slim_pinned_non_root_with_a_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    instructions = re.findall(r"^(FROM|USER|HEALTHCHECK|COPY)\s+(.*)$", text, re.M)
    (base,) = [arg for op, arg in instructions if op == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base
    (user,) = [arg for op, arg in instructions if op == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    assert "/healthz" in text.split("HEALTHCHECK", 1)[1].split("\n\n")[0]
    # everything COPY takes must exist and survive .dockerignore
    ignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for op, arg in instructions:
        if op == "COPY":
            for source in arg.split()[:-1]:
                assert (REPO_ROOT / source).exists(), source
                assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"


# -- Grafana ----------------------------------------------------------------


def test_grafana_provisioning_has_the_datasource_uid_and_the_dashboard_folder(compose: dict[str, Any]) -> None:
    (datasource,) = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["uid"] == DATASOURCE_UID
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = load_yaml(GRAFANA / "provisioning" / "dashboards" / "stream-monitor.yml")["providers"]
    grafana_mounts = {mount.split(":")[1]: mount.split(":")[0] for mount in compose["services"]["grafana"]["volumes"]}
    assert grafana_mounts[provider["options"]["path"]] == "./deploy/grafana/dashboards"


def test_dashboards_are_self_contained_and_use_the_provisioned_datasource() -> None:
    assert DASHBOARDS
    for path in DASHBOARDS:
        text = path.read_text()
        dashboard = json.loads(text)
        assert "__inputs" not in dashboard and "${DS_" not in text, f"{path.name}: import placeholders"
        assert dashboard["uid"]
        for panel in all_panels(dashboard):
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID, panel["title"]


def test_dashboard_has_model_and_signal_variables_and_the_required_panels() -> None:
    (dashboard,) = dashboards()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name in ("model", "signal"):
        assert variables[name]["definition"].startswith("label_values(")
        assert variables[name]["query"]["query"] == variables[name]["definition"]
    assert "$model" in variables["signal"]["definition"]
    exprs = " ".join(expr for _, expr in dashboard_queries(dashboard))
    for metric in ("stream_monitor_detector_statistic", "stream_monitor_detector_threshold",
                   "stream_monitor_events_consumed_total", "stream_monitor_events_rejected_total",
                   "stream_monitor_consumer_lag_messages", "stream_monitor_batch_processing_seconds_bucket"):
        assert metric in exprs, metric
    # per signal: a panel repeated over $signal with statistic and threshold
    repeated = [p for p in all_panels(dashboard) if p.get("repeat") == "signal"]
    assert repeated
    signal_panels = [p for p in all_panels(dashboard) if "$signal" in p["title"] and p["type"] != "row"]
    assert any({"stream_monitor_detector_statistic", "stream_monitor_detector_threshold"}
               <= set(METRIC_NAME.findall(" ".join(t["expr"] for t in p["targets"]))) for p in signal_panels)
    (drift,) = [a for a in dashboard["annotations"]["list"] if a.get("expr")]
    assert "stream_monitor_drift_detections_total" in drift["expr"]


def _labelled_with(label: str) -> set[str]:
    """Sample names of the service's metrics that carry ``label``."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    names = set()
    for attribute in vars(metrics).values():
        if not hasattr(attribute, "describe"):
            continue
        for family in attribute.describe():
            # a metric's label names, or a custom collector's families' (the per-detector series)
            if label in (getattr(attribute, "_labelnames", None) or getattr(family, "_labelnames", ())):
                suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
                names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def test_model_version_variable_is_chained_on_model_and_used_by_every_per_version_query() -> None:
    (dashboard,) = dashboards()
    variables = [v["name"] for v in dashboard["templating"]["list"]]
    assert variables == ["model", "model_version", "signal"]
    by_name = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert re.fullmatch(r'label_values\(stream_monitor_\w+\{model=~"\$model"\}, model_version\)',
                        by_name["model_version"]["definition"])
    assert 'model_version=~"$model_version"' in by_name["signal"]["definition"]
    # a comparison's model_version is the candidate, shown beside its baseline: not filtered
    per_version = {name for name in _labelled_with("model_version") if "_version_compare_" not in name}
    assert "stream_monitor_model_performance" in per_version
    checked = 0
    for where, expr in dashboard_queries(dashboard):
        for name, selector in re.findall(r"\b(stream_monitor_[a-z0-9_]+)(\{[^}]*\})?", expr):
            if name in per_version:
                checked += 1
                assert 'model=~"$model"' in selector and 'model_version=~"$model_version"' in selector, (
                    where, expr)
    assert checked >= 8


def test_every_stat_panel_has_thresholds() -> None:
    (dashboard,) = dashboards()
    stats = [panel for panel in all_panels(dashboard) if panel["type"] == "stat"]
    assert len(stats) >= 8
    for panel in stats:
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert len(steps) >= 2 and steps[0]["value"] is None, panel["title"]
        values = [step["value"] for step in steps[1:]]
        assert values == sorted(values) and len({step["color"] for step in steps}) == len(steps), panel["title"]


def test_dashboard_shows_performance_the_label_join_delivery_client_errors_and_blind_spots() -> None:
    (dashboard,) = dashboards()
    exprs = {name: [] for name in (
        "stream_monitor_model_performance", "stream_monitor_labels_total",
        "stream_monitor_label_delay_seconds_bucket", "stream_monitor_join_waiting",
        "stream_monitor_produce_failures_total", "stream_monitor_kafka_errors_total",
        "stream_monitor_values_skipped_total", "stream_monitor_signals_dropped_total",
        "stream_monitor_models_dropped_total")}
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            for name in set(METRIC_NAME.findall(target["expr"])) & set(exprs):
                exprs[name].append(panel)
    assert [name for name, panels in exprs.items() if not panels] == []
    # performance per model and version, in the legend too
    (performance,) = exprs["stream_monitor_model_performance"]
    assert {"{{model}}", "{{model_version}}", "{{signal}}"} <= set(
        re.findall(r"\{\{\w+\}\}", performance["targets"][0]["legendFormat"]))
    # delivery failures and client errors are on the overview, where thresholds colour them
    assert {"stat"} <= {panel["type"] for panel in exprs["stream_monitor_produce_failures_total"]}
    assert {"stat"} <= {panel["type"] for panel in exprs["stream_monitor_kafka_errors_total"]}


def test_every_metric_named_in_dashboards_and_rules_is_exported_by_the_service() -> None:
    exported = exported_metric_names()
    named = set(METRIC_NAME.findall(RULES.read_text()))
    for path in DASHBOARDS:
        named |= set(METRIC_NAME.findall(path.read_text()))
    assert named, "no stream_monitor_ metric found"
    assert named - exported == set(), f"not exported by stream_monitor.metrics: {named - exported}"


def test_state_row_shows_every_state_metric() -> None:
    (dashboard,) = dashboards()
    panels = row_panels(dashboard, STATE_ROW)
    exprs = [target["expr"] for panel in panels for target in panel["targets"]]
    registry = CollectorRegistry()
    Metrics(registry)
    families = {family.name for family in registry.collect() if family.name.startswith("stream_monitor_state_")}
    assert len(families) == 6, families
    for family in families:
        assert any(family in expr for expr in exprs), f"{family} is not on the {STATE_ROW!r} row"
    # the snapshot's age, not its timestamp
    assert any(re.search(r"time\(\) - .*stream_monitor_state_last_snapshot_timestamp_seconds", expr)
               for expr in exprs)
    # the panels the e2e scenario lets go without data are on the row
    assert STATE_REPLAY_PANELS <= {panel["title"] for panel in panels}


def test_state_rules_page_on_a_failed_restore_and_bound_restores_on_a_bucket() -> None:
    (group,) = [group for group in load_yaml(RULES)["groups"] if group["name"] == STATE_GROUP]
    rules = {rule["alert"]: rule for rule in group["rules"]}
    assert set(rules) == {"StreamMonitorStateRestoreFailed", "StreamMonitorStateSnapshotStale",
                          "StreamMonitorStateRestoreSlow"}
    assert STATE_FAILURE_RULES <= set(rules)
    # a partition that lost its state learns a new reference: page, as for undeliverable alerts
    assert rules["StreamMonitorStateRestoreFailed"]["labels"]["severity"] == "critical"
    # the slow-restore bound is a bucket bound as the monitor exports it ("60.0"), or the
    # selector matches nothing and the rule can never fire
    registry = CollectorRegistry()
    Metrics(registry)
    bounds = {sample.labels["le"] for family in registry.collect()
              if family.name == "stream_monitor_state_restore_seconds"
              for sample in family.samples if sample.name.endswith("_bucket")}
    used = set(re.findall(r'stream_monitor_state_restore_seconds_bucket\{le="([^"]+)"\}',
                          rules["StreamMonitorStateRestoreSlow"]["expr"]))
    assert used and used <= bounds, (used, bounds)


# -- Kubernetes ---------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_yaml(KUBERNETES / "kustomization.yaml")
    files = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_kubernetes_has_every_object(manifests: dict[str, dict[str, Any]]) -> None:
    assert {WORKLOAD, "Service/stream-monitor", "ServiceMonitor/stream-monitor",
            "PrometheusRule/stream-monitor", "ConfigMap/stream-monitor-dashboard",
            "ConfigMap/stream-monitor-config", "Secret/stream-monitor-kafka",
            "ScaledObject/stream-monitor", "TriggerAuthentication/stream-monitor-kafka"} <= set(manifests)


def test_kubernetes_images_are_pinned(manifests: dict[str, dict[str, Any]]) -> None:
    for key, doc in manifests.items():
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for item in pod.get("containers", []) + pod.get("initContainers", []):
            assert_pinned(item["image"], key)
    kustomization = load_yaml(KUBERNETES / "kustomization.yaml")
    for image in kustomization.get("images", []):
        assert image["newTag"] and image["newTag"] != "latest"


def test_workload_probes_port_and_security(manifests: dict[str, dict[str, Any]],
                                           k8s_settings: Settings) -> None:
    deployment = manifests[WORKLOAD]
    main = container(manifests)
    (port,) = main["ports"]
    assert port["name"] == "metrics" and port["containerPort"] == k8s_settings.metrics.port == 9108
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert deployment["spec"]["selector"]["matchLabels"].items() <= \
        deployment["spec"]["template"]["metadata"]["labels"].items()
    # the config comes from the ConfigMap, mounted where the args read it
    config_path = main["args"][main["args"].index("--config") + 1]
    (mount,) = [m for m in main["volumeMounts"] if config_path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    config_map = manifests[f"ConfigMap/{volume['configMap']['name']}"]
    assert config_path.rsplit("/", 1)[1] in config_map["data"]


def test_sasl_credentials_come_from_the_secret(manifests: dict[str, dict[str, Any]],
                                               k8s_settings: Settings) -> None:
    secret = manifests["Secret/stream-monitor-kafka"]
    env = {var["name"]: var for var in container(manifests)["env"]}
    password = env["STREAM_MONITOR_KAFKA__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password["name"] == "stream-monitor-kafka" and password["key"] in secret["stringData"]
    for var in env.values():
        assert "value" not in var, f"{var['name']}: credentials must not be inline"
        if "secretKeyRef" in var["valueFrom"]:
            assert var["valueFrom"]["secretKeyRef"]["key"] in secret["stringData"]
    # the env really reaches the settings: password and user name land in the client properties
    properties = k8s_settings.kafka.client_properties()
    assert properties["sasl.password"] == "from-secret-sasl-password"
    assert properties["sasl.username"] == "from-secret-sasl-username"
    assert properties["security.protocol"].startswith("SASL")
    assert "from-secret-sasl-password" not in repr(k8s_settings) + str(k8s_settings.redacted())
    # no real secret is committed: the values are placeholders
    assert secret["stringData"]["sasl-password"] == "CHANGE-ME"


def test_static_membership_takes_the_stable_pod_name(manifests: dict[str, dict[str, Any]],
                                                    k8s_settings: Settings) -> None:
    # a Deployment's pod names change with every new pod: as instance ids, each restart
    # would be a new member while the old one held its partitions until its session ended
    assert not any(key.startswith("Deployment/") for key in manifests)
    statefulset = manifests[WORKLOAD]
    env = {var["name"]: var for var in container(manifests)["env"]}
    assert env["STREAM_MONITOR_KAFKA__INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # the pod name reaches the consumer as group.instance.id
    assert k8s_settings.kafka.instance_id == FIRST_POD
    assert consumer_config(k8s_settings)["group.instance.id"] == FIRST_POD
    assert statefulset["metadata"]["name"] == FIRST_POD.rsplit("-", 1)[0]
    spec = statefulset["spec"]
    assert f"Service/{spec['serviceName']}" in manifests
    # one pod at a time on a rollout (never two members with one id); scale-ups not serialised
    assert spec["updateStrategy"]["type"] == "RollingUpdate"
    assert "maxUnavailable" not in spec["updateStrategy"].get("rollingUpdate", {})
    assert spec["podManagementPolicy"] == "Parallel"
    # the state is in the changelog topic, not on a volume
    assert "volumeClaimTemplates" not in spec
    # SIGTERM exits within 10 s (STOP_GRACE_S of it to deliver): the kubelet must wait longer
    grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= 10 > STOP_GRACE_S


def test_service_and_servicemonitor_select_the_pods_metrics_port(manifests: dict[str, dict[str, Any]]) -> None:
    service = manifests["Service/stream-monitor"]
    pod_labels = manifests[WORKLOAD]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics" and port["targetPort"] == "metrics"
    monitor = manifests["ServiceMonitor/stream-monitor"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == ["metrics"]
    # the Service name becomes the job label, which the alert rules select on
    assert 'job="stream-monitor"' in RULES.read_text()
    assert service["metadata"]["name"] == "stream-monitor"


def test_prometheusrule_and_dashboard_configmap_carry_the_shipped_files(
        manifests: dict[str, dict[str, Any]]) -> None:
    assert manifests["PrometheusRule/stream-monitor"]["spec"]["groups"] == load_yaml(RULES)["groups"]
    dashboard_map = manifests["ConfigMap/stream-monitor-dashboard"]
    assert dashboard_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (dashboard_path,) = DASHBOARDS
    assert json.loads(dashboard_map["data"][dashboard_path.name]) == json.loads(dashboard_path.read_text())


def test_keda_scales_on_the_monitors_lag_up_to_the_partition_count(
        manifests: dict[str, dict[str, Any]], k8s_settings: Settings, compose: dict[str, Any]) -> None:
    scaled = manifests["ScaledObject/stream-monitor"]
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    # KEDA scales a Deployment unless told the kind
    assert f"{target.get('kind', 'Deployment')}/{target['name']}" == WORKLOAD
    assert target.get("apiVersion", "apps/v1") == manifests[WORKLOAD]["apiVersion"]
    partitions = int(scaled["metadata"]["annotations"]["stream-monitor/input-partitions"])
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
    # the reference topic layout (compose) has that many input partitions
    assert compose_topics(compose)[k8s_settings.topics.predictions] == partitions
    (trigger,) = spec["triggers"]
    metadata = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert metadata["topic"] == k8s_settings.topics.predictions
    assert metadata["consumerGroup"] == k8s_settings.kafka.group_id
    assert metadata["bootstrapServers"] == k8s_settings.kafka.bootstrap_servers
    assert metadata.get("allowIdleConsumers", "false") == "false"
    auth = manifests[f"TriggerAuthentication/{trigger['authenticationRef']['name']}"]
    secret = manifests["Secret/stream-monitor-kafka"]
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == "stream-monitor-kafka" and ref["key"] in secret["stringData"]
    assert {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]} == {"username", "password"}
