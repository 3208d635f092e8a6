"""The docs state what the code does: the README's alert example, the image's base, the rules' timing."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
README = (REPO_ROOT / "README.md").read_text()
DEPLOY_DOC = (REPO_ROOT / "docs" / "deploy.md").read_text()
RULES = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "rules" / "stream-monitor.rules.yml").read_text())


def _alerts_section() -> str:
    return README.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]


def _objects(text: str) -> list[dict]:
    decoder = json.JSONDecoder()
    found, position = [], 0
    text = text.strip()
    while position < len(text):
        value, end = decoder.raw_decode(text, position)
        found.append(value)
        position = end
        while position < len(text) and text[position].isspace():
            position += 1
    return found


def test_the_readme_alert_example_is_what_the_command_it_names_produces(tmp_path):
    section = _alerts_section()
    (example,) = re.findall(r"```json\n(.*?)```", section, re.S)
    commands = [" ".join(command.split()) for command in re.findall(r"`(stream-monitor [^`]+)`", section)]
    simulate, replay = (next(c for c in commands if c.startswith(f"stream-monitor {name} "))
                        for name in ("simulate", "replay"))
    produced = {}
    for command in (simulate, replay):
        args = shlex.split(command)[1:]
        result = subprocess.run([sys.executable, "-m", "stream_monitor.cli", *args], cwd=tmp_path,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    out = shlex.split(replay)[shlex.split(replay).index("--alerts-out") + 1]
    produced = [json.loads(line) for line in (tmp_path / out).read_text().splitlines()]
    shown = _objects(example)
    assert len(shown) == 2
    assert shown == produced[:2]
    schema = json.loads((REPO_ROOT / "stream_monitor" / "alert.schema.json").read_text())
    import jsonschema

    for alert in shown:
        jsonschema.validate(alert, schema)


def test_the_deploy_doc_names_the_dockerfiles_base_image():
    (base,) = re.findall(r"^FROM\s+(\S+)", (REPO_ROOT / "Dockerfile").read_text(), re.M)
    (row,) = [line for line in DEPLOY_DOC.splitlines() if line.startswith("| `Dockerfile`")]
    assert re.findall(r"`(python:[^`]+)`", row) == [base]


def _rule(name: str) -> dict:
    (rule,) = [r for group in RULES["groups"] for r in group["rules"] if r.get("alert") == name]
    return rule


def _minutes(duration: str) -> float:
    number, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()
    return int(number) * {"s": 1 / 60, "m": 1, "h": 60}[unit]


def test_the_no_events_rules_state_the_silence_their_range_and_for_give():
    for name in ("StreamMonitorNoEvents", "StreamMonitorModelNoEvents"):
        rule = _rule(name)
        (window,) = set(re.findall(r"\[(\d+[smh])\]", rule["expr"]))
        silence = _minutes(window)
        stated = f"{silence:g} minutes"
        assert stated in rule["annotations"]["summary"], (name, stated)
        assert stated in rule["annotations"]["description"], (name, stated)
        (row,) = [line for line in DEPLOY_DOC.splitlines() if line.startswith(f"| `{name}` |")]
        assert f"{silence:g} minutes" in row and f"for {rule['for']}" in row, row
        if name == "StreamMonitorNoEvents":
            # and when it fires: the range, then its for:
            assert f"about {silence + _minutes(rule['for']):g} minutes after the last event" in row
    rule = _rule("StreamMonitorNoEvents")
    # an instance that never read anything: the same 15 minutes, since it started
    assert re.search(r"process_start_time_seconds\{[^}]*\}\) > 900", rule["expr"])
