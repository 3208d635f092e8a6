"""Settings: every bad field reported at once, env overrides, secrets kept out of logs."""

from __future__ import annotations

import logging

import pytest

from stream_monitor.config import load_settings
from stream_monitor.errors import ConfigError
from stream_monitor.logs import JsonFormatter


def test_every_bad_field_is_reported_with_its_reason(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("""
kafka: {bootstrap_servers: " "}
consumer: {batch_size: 0, commit_interval_s: -1}
metrics: {port: 70000}
models:
  - model: fraud
    detectors:
      numeric: [{name: no_such_detector}]
typo_field: 1
""")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    fields = [field for field, _ in caught.value.problems]
    assert fields == ["kafka.bootstrap_servers", "consumer.batch_size", "consumer.commit_interval_s",
                      "metrics.port", "models.0", "typo_field"]
    assert "unknown detector" in str(caught.value)


def test_a_bad_detector_parameter_names_the_parameter(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("models:\n  - detectors:\n      numeric: [{name: page_hinkley, params: {arl: -5}}]\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "arl" in str(caught.value)


def test_missing_file_and_yaml_syntax_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("kafka: [unclosed\n")
    with pytest.raises(ConfigError):
        load_settings(broken)


def test_environment_overrides_the_file_and_settings_are_frozen(tmp_path, monkeypatch):
    path = tmp_path / "ok.yaml"
    path.write_text("kafka: {bootstrap_servers: 'file:9092', group_id: from-file}\n")
    monkeypatch.setenv("STREAM_MONITOR_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    settings = load_settings(path)
    assert settings.kafka.bootstrap_servers == "env:9092"
    assert settings.kafka.group_id == "from-file"
    with pytest.raises(Exception):
        settings.kafka.group_id = "changed"  # type: ignore[misc]


def test_secrets_never_reach_repr_or_logs(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAM_MONITOR_KAFKA__SASL_PASSWORD", "hunter2-env")
    path = tmp_path / "ok.yaml"
    path.write_text("kafka:\n  properties: {sasl.username: svc, sasl.oauthbearer.client.secret: s3cr3t,\n"
                    "    sasl.oauthbearer.config: 'principal=svc clientSecret=s3cr3t2', ssl.key.pem: s3cr3t3}\n")
    settings = load_settings(path)
    assert settings.kafka.client_properties()["sasl.password"] == "hunter2-env"
    # the start-up log line, formatted as the service formats it (JSON, extra fields included);
    # also what a careless caller would log: the settings object itself
    formatter = JsonFormatter()
    lines = []
    for value in (settings.redacted(), settings, settings.kafka):
        record = logging.LogRecord("stream_monitor", logging.INFO, __file__, 1, "starting", None, None)
        record.settings = value
        lines.append(formatter.format(record))
    assert '"sasl.username":"svc"' in lines[0]
    text = repr(settings) + str(settings.redacted()) + "\n".join(lines)
    assert "hunter2-env" not in text
    assert "s3cr3t" not in text
    assert settings.redacted()["kafka"]["properties"]["sasl.username"] == "svc"


def test_secret_files_are_read_from_the_secrets_dir(tmp_path, monkeypatch):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "kafka__sasl_password").write_text("from-a-file\n")
    monkeypatch.setenv("STREAM_MONITOR_SECRETS_DIR", str(secrets))
    settings = load_settings()
    assert settings.kafka.sasl_password.get_secret_value() == "from-a-file"
    monkeypatch.setenv("STREAM_MONITOR_SECRETS_DIR", str(tmp_path / "absent"))
    with pytest.raises(ConfigError):
        load_settings()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "is not JSON"),
        ("[1, 2, 3]", "JSON object"),
        ('{"feature:x": "abc"}', "feature:x"),
        ('{"feature:x": [1.0, "two"' + ', 3.0' * 600 + ']}', "'feature:x'[1]: must be a finite number"),
        ('{"feature:x": [1.0' + ', 3.0' * 98 + ']}', "between 500 and 100000 values, got 99"),
        ('{"feature:c": {"a": 3, "b": -1}}', "feature:c"),
        ('{"feature:c": {"a": 2.5, "b": 3}}', "feature:c"),
    ],
)
def test_a_corrupt_reference_snapshot_is_refused_naming_the_field(tmp_path, content, reason):
    (tmp_path / "reference.json").write_text(content)
    path = tmp_path / "config.yaml"
    path.write_text("models:\n  - model: a\n  - model: b\n    reference: {snapshot: reference.json, id: train}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    ((field, message),) = caught.value.problems
    assert field == "models.1.reference.snapshot"
    assert "snapshot" in message and reason in message


def test_a_relative_snapshot_path_resolves_against_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "reference.json").write_text('{"feature:c": {"a": 30, "b": 20}}')
    (folder / "config.yaml").write_text("models:\n  - reference: {snapshot: reference.json, id: train}\n")
    monkeypatch.chdir(tmp_path)  # not the config's folder
    settings = load_settings(folder / "config.yaml")
    reference = settings.models[0].reference
    assert reference.snapshot == (folder / "reference.json").resolve()
    assert reference.snapshot_data() == {"feature:c": {"a": 30, "b": 20}}


@pytest.mark.parametrize("warmup", [50, 499, 200_000])
def test_a_warmup_no_detector_accepts_is_refused(tmp_path, warmup):
    path = tmp_path / "config.yaml"
    path.write_text(f"models:\n  - reference: {{warmup: {warmup}}}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert [field for field, _ in caught.value.problems] == ["models.0.reference.warmup"]


@pytest.mark.parametrize("warmup", [500, 100_000])
def test_every_warmup_the_config_accepts_builds_every_detector(tmp_path, warmup):
    from stream_monitor.detectors import REGISTRY, build
    from stream_monitor.detectors.reference import reference_params

    path = tmp_path / "config.yaml"
    path.write_text(f"models:\n  - reference: {{warmup: {warmup}}}\n")
    rule = load_settings(path).models[0]
    for name, cls in REGISTRY.items():
        build({"name": name, "params": reference_params(cls, cls.kind, warmup=rule.reference.warmup)},
              family_tests=64 * 2)

def test_check_config_refuses_what_run_cannot_build_and_names_the_field(tmp_path, capsys):
    from stream_monitor.cli import main

    path = tmp_path / "warmup.yaml"
    path.write_text("models:\n  - model: fraud\n    reference: {warmup: 200000}\n")
    assert main(["check-config", "--config", str(path)]) == 2
    assert "models.0.reference.warmup" in capsys.readouterr().err
    path.write_text("models:\n  - model: fraud\n    reference: {warmup: 5000}\n")
    assert main(["check-config", "--config", str(path)]) == 0


def test_kinds_are_validated(tmp_path):
    path = tmp_path / "kinds.yaml"
    path.write_text("models:\n  - model: fraud\n    kinds: {amount: numeric, country: text}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "models.0.kinds.country" in str(caught.value)
    path.write_text("models:\n  - model: fraud\n    kinds: {amount: numeric, country: categorical}\n")
    assert load_settings(path).models[0].kinds == {"amount": "numeric", "country": "categorical"}


def test_check_config_builds_detectors_at_the_largest_family_the_caps_allow(tmp_path, capsys):
    from stream_monitor.cli import main

    # window 3 reaches the target for one signal, not for a model of 64 signals
    path = tmp_path / "ks.yaml"
    path.write_text("models:\n  - model: fraud\n    detectors:\n      numeric:\n"
                    "        - {name: ks, params: {window: 3, stride: 1}}\n")
    assert main(["check-config", "--config", str(path)]) == 2
    assert "models.0.detectors.numeric.0" in capsys.readouterr().err
    path.write_text("limits: {max_signals_per_model: 1}\nmodels:\n  - model: fraud\n    detectors:\n"
                    "      numeric:\n        - {name: ks, params: {window: 3, stride: 1}}\n")
    assert main(["check-config", "--config", str(path)]) == 0

def test_an_environment_variable_with_our_prefix_and_no_field_is_refused(monkeypatch):
    monkeypatch.setenv("STREAM_MONITOR_KAFKA__BOOTSTRAP_SERVER", "typo:9092")  # no trailing S
    monkeypatch.setenv("stream_monitor_consumer__batchsize", "10")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    fields = sorted(field for field, _ in caught.value.problems)
    assert fields == ["STREAM_MONITOR_KAFKA__BOOTSTRAP_SERVER", "stream_monitor_consumer__batchsize"]
    assert "no such setting" in str(caught.value)


def test_environment_variables_that_name_fields_or_are_documented_are_accepted(tmp_path, monkeypatch):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, value in (("STREAM_MONITOR_KAFKA__BOOTSTRAP_SERVERS", "env:9092"),
                        ("STREAM_MONITOR_LOG_LEVEL", "DEBUG"),
                        ("STREAM_MONITOR_KAFKA__PROPERTIES__sasl.username", "svc"),
                        ("STREAM_MONITOR_ALLOWED_MODELS", '["fraud"]'),
                        ("STREAM_MONITOR_SECRETS_DIR", str(secrets))):
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "env:9092"
    assert settings.kafka.properties == {"sasl.username": "svc"}
    assert settings.allowed_models == ["fraud"]


@pytest.mark.parametrize(("key", "instead"), [
    ("group.id", "kafka.group_id"), ("bootstrap.servers", "kafka.bootstrap_servers"),
    ("enable.auto.commit", "offsets"), ("enable.auto.offset.store", "offsets"),
    ("auto.commit.interval.ms", "consumer.commit_interval_s"), ("transactional.id", "delivery: exactly_once"),
    ("enable.idempotence", "idempotent"), ("acks", "idempotent"), ("error_cb", "callback"),
    ("statistics.interval.ms", "lag"),
])
def test_properties_the_monitor_owns_are_refused_naming_the_setting(tmp_path, key, instead):
    path = tmp_path / "c.yaml"
    value = 0 if key == "statistics.interval.ms" else "x"
    path.write_text(f"kafka: {{properties: {{'{key}': {value!r}}}}}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    [(field, reason)] = caught.value.problems
    assert field == f"kafka.properties.{key}"
    assert instead in reason


def test_ordinary_properties_are_accepted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("kafka: {properties: {auto.offset.reset: latest, isolation.level: read_uncommitted,"
                    " statistics.interval.ms: 500, fetch.min.bytes: 1000}}\n")
    assert load_settings(path).kafka.properties["auto.offset.reset"] == "latest"


def test_the_state_topic_defaults_to_the_group_and_must_be_a_legal_topic_name():
    assert load_settings(kafka={"group_id": "fraud-monitor"}).state_topic == "fraud-monitor.state"
    assert load_settings(state={"topic": "custom.changelog"}).state_topic == "custom.changelog"
    with pytest.raises(ConfigError) as error:
        load_settings(kafka={"group_id": "fraud monitor"})
    assert error.value.problems[0][0] == "kafka.group_id"
    assert "set state.topic" in error.value.problems[0][1]
    with pytest.raises(ConfigError) as error:
        load_settings(state={"topic": "a/b", "snapshot_interval_s": 0, "replication_factor": 0})
    assert sorted(field for field, _ in error.value.problems) == [
        "state.replication_factor", "state.snapshot_interval_s"]


def test_static_membership_sets_the_group_instance_id_and_owns_the_property():
    from stream_monitor.runtime.service import consumer_config
    assert consumer_config(load_settings(kafka={"instance_id": "monitor-0"}))["group.instance.id"] == "monitor-0"
    assert "group.instance.id" not in consumer_config(load_settings())
    with pytest.raises(ConfigError) as error:
        load_settings(kafka={"properties": {"group.instance.id": "x"}})
    assert error.value.problems[0][0] == "kafka.properties.group.instance.id"
