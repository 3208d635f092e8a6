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
    ("auto.commit.interval.ms", "consumer.commit_interval_s"), ("transactional.id", "not supported"),
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
