"""Log formats (JSON, text, auto), the log_format setting, and the lines per alert and dead letter."""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import socket
import subprocess
import sys

import orjson
import pytest

from stream_monitor import logs
from stream_monitor.alerts import Alert
from stream_monitor.cli import build_parser, main
from stream_monitor.config import load_settings
from stream_monitor.errors import ConfigError

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (?P<level>[A-Z]+) +(?P<logger>[\w.]+): "
                       r"(?P<rest>.*)$")


def _record(message: str = "drift alert", level: int = logging.WARNING, **extra) -> logging.LogRecord:
    record = logging.LogRecord("stream_monitor.runtime", level, __file__, 1, message, (), None)
    record.created = 1764000000.5
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_text_line_has_the_level_logger_message_and_every_extra_as_key_value():
    record = _record(alert_id="ab12", model="fraud", signal="feature:amount", occurrences=10,
                     note="two words", ratio=0.25, missing=None, flags={"a": [1, 2]})
    line = logs.TextFormatter().format(record)
    assert line == ('2025-11-24T16:00:00.500Z WARNING  stream_monitor.runtime: drift alert alert_id=ab12 '
                    'model=fraud signal=feature:amount occurrences=10 note="two words" ratio=0.25 '
                    'missing=null flags={"a":[1,2]}')
    match = TEXT_LINE.match(line)
    assert match and (match["level"], match["logger"]) == ("WARNING", "stream_monitor.runtime")


def test_a_text_value_that_could_be_misread_is_quoted():
    line = logs.TextFormatter().format(_record(detail='a=b "c"', empty=""))
    assert line.endswith(' detail="a=b \\"c\\"" empty=""')


def test_a_text_line_carries_the_exception_below_it():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("stream_monitor", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    lines = logs.TextFormatter().format(record).splitlines()
    assert TEXT_LINE.match(lines[0]) and lines[0].endswith("stream_monitor: failed")
    assert lines[-1] == "RuntimeError: boom"


def test_a_json_line_has_the_same_fields():
    payload = orjson.loads(logs.JsonFormatter().format(_record(model="fraud", occurrences=10)))
    assert payload == {"ts": "2025-11-24T16:00:00.500+00:00", "level": "WARNING",
                       "logger": "stream_monitor.runtime", "message": "drift alert", "model": "fraud",
                       "occurrences": 10}


class _Stream(io.StringIO):
    def __init__(self, terminal: bool) -> None:
        super().__init__()
        self._terminal = terminal

    def isatty(self) -> bool:
        return self._terminal


@pytest.mark.parametrize("log_format, terminal, expected", [
    ("auto", True, logs.TextFormatter), ("auto", False, logs.JsonFormatter),
    ("json", True, logs.JsonFormatter), ("text", False, logs.TextFormatter),
])
def test_auto_is_text_on_a_terminal_and_json_otherwise(log_format, terminal, expected):
    assert type(logs.formatter_for(log_format, _Stream(terminal))) is expected


def test_a_stream_without_isatty_gets_json():
    assert type(logs.formatter_for("auto", object())) is logs.JsonFormatter


def test_log_format_setting_defaults_to_auto_and_a_bad_value_fails_naming_the_field(tmp_path, monkeypatch,
                                                                                   capsys):
    assert load_settings().log_format == "auto"
    path = tmp_path / "config.yaml"
    path.write_text("log_format: text\n")
    assert load_settings(path).log_format == "text"
    monkeypatch.setenv("STREAM_MONITOR_LOG_FORMAT", "json")
    assert load_settings(path).log_format == "json"
    monkeypatch.delenv("STREAM_MONITOR_LOG_FORMAT")
    path.write_text("log_format: pretty\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.problems[0][0] == "log_format"
    # what check-config refuses, run refuses too, with the same message and exit status
    assert main(["check-config", "--config", str(path)]) == 2
    checked = capsys.readouterr().err
    assert main(["run", "--config", str(path)]) == 2
    assert capsys.readouterr().err == checked
    assert "log_format: Input should be 'auto', 'json' or 'text'" in checked


def test_run_takes_a_log_format_option_that_overrides_the_setting():
    assert build_parser().parse_args(["run", "--log-format", "text"]).log_format == "text"
    assert build_parser().parse_args(["run"]).log_format is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--log-format", "pretty"])


def _run_until_the_port_fails(tmp_path, *args: str, stderr=subprocess.PIPE) -> tuple[int, str | None]:
    """``run`` up to its start-up lines, then exit 1 on a metrics port in use (no broker needed)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = tmp_path / "config.yaml"
        config.write_text(f"kafka: {{bootstrap_servers: 127.0.0.1:1}}\n"
                          f"metrics: {{host: 127.0.0.1, port: {taken.getsockname()[1]}}}\n")
        done = subprocess.run([sys.executable, "-m", "stream_monitor.cli", "run", "--config", str(config),
                               *args], stderr=stderr, stdout=subprocess.DEVNULL, text=True, timeout=60)
    return done.returncode, done.stderr


def test_run_logs_text_or_json_as_asked(tmp_path):
    code, err = _run_until_the_port_fails(tmp_path, "--log-format", "text")
    assert code == 1
    starting = [line for line in err.splitlines() if " stream_monitor: starting " in line]
    assert len(starting) == 1
    match = TEXT_LINE.match(starting[0])
    assert match and match["level"] == "INFO" and match["rest"].startswith("starting version=")
    assert ' settings={"kafka":{"bootstrap_servers":"127.0.0.1:1"' in starting[0]

    code, err = _run_until_the_port_fails(tmp_path)  # auto, stderr a pipe: JSON
    assert code == 1
    assert orjson.loads(err.splitlines()[0])["message"] == "starting"


def test_run_logs_text_when_stderr_is_a_terminal(tmp_path):
    controller, terminal = pty.openpty()
    try:
        code, _ = _run_until_the_port_fails(tmp_path, stderr=terminal)
        os.close(terminal)
        terminal = -1
        output = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal's other end is closed: all is read
                break
            if not chunk:
                break
            output += chunk
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(controller)
    assert code == 1
    first = output.decode().splitlines()[0]
    assert TEXT_LINE.match(first) and " stream_monitor: starting version=" in first


def test_rate_limited_log_counts_what_it_did_not_log():
    limited = logs.RateLimitedLog(logging.getLogger("test"))
    logged = [limited.log(("a",), "again") for _ in range(12)] + [limited.log(("b",), "other")]
    assert logged.count(True) == 3
    assert limited.counts() == {("a",): 12, ("b",): 1}
    assert limited.suppressed() == {("a",): 10}


def test_each_alert_is_one_warning_line_with_its_identity(caplog):
    from stream_monitor.runtime.service import log_alert

    alert = Alert(alert_id="5f0c", model="fraud", model_version="3", signal="feature:amount",
                  detector="ks", event_id="e-42", detected_at="2025-11-24T16:00:00.000Z", n_seen=5120,
                  statistic=0.2, threshold=0.1, p_value=1e-7, severity="warning", reference="values[0:1000]")
    with caplog.at_level(logging.INFO, logger="stream_monitor.runtime"):
        log_alert(alert)
    [record] = caplog.records
    assert (record.levelname, record.name, record.getMessage()) == ("WARNING", "stream_monitor.runtime",
                                                                     "drift alert")
    payload = orjson.loads(logs.JsonFormatter().format(record))
    assert {key: payload[key] for key in payload if key not in ("ts", "level", "logger", "message")} == {
        "alert_id": "5f0c", "model": "fraud", "model_version": "3", "signal": "feature:amount",
        "detector": "ks", "event_id": "e-42", "severity": "warning"}
