"""Replay as a backtest: progress on stderr, the summary, --rejected-out, the statistic trace, --report.

The input is simulated (seeded) with known bad lines, nulls and strings in
numeric features put in at known lines, so every count and line number the
summary gives is checked against the input itself.
"""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest

from stream_monitor.backtest.progress import Progress
from stream_monitor.backtest.report import render_report
from stream_monitor.backtest.trace import StatisticTrace
from stream_monitor.cli import main
from stream_monitor.config import load_settings
from stream_monitor.replay import ReplaySummary, replay
from stream_monitor.simulate import Scenario, parse_drift, stream

REPO_ROOT = Path(__file__).resolve().parents[2]

#: (1-based line number in the events file, raw line, reason the decoder gives)
BAD_LINES = [
    (51, b"not json", "invalid_json"),
    (52, b'{"event_id": "n1", "model": "fraud", "prediction": NaN}', "non_finite"),
    (53, b"<script>alert('x')</script>", "invalid_json"),
    (54, b"\xff\xfe not utf-8", "invalid_utf8"),
    (300, b'{"event_id": "n2"}', "missing_field"),
    (301, b"[1, 2]", "not_an_object"),
    (302, b"also not json", "invalid_json"),
    (303, b"{", "invalid_json"),
    (304, b"}", "invalid_json"),
    (305, b"nope", "invalid_json"),
    (306, b"x", "invalid_json"),
]
#: events (0-based, among the good ones) whose f00 becomes null, and whose f01 becomes a string
NULLS = (100, 2000, 4000)
STRINGS = (150, 3500)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("backtest")
    scenario = Scenario(models=("fraud",), n_events=6000, n_numeric=2, n_categorical=1, seed=3,
                        drifts=(parse_drift("feature:f01@3000:shift=1.5"),
                                parse_drift("feature:c00@4000:share=0.6"),
                                parse_drift("performance:error_rate@3000:error=0.3")),
                        label_delay_events=50)
    events, labels = [], []
    for kind, item in stream(scenario):
        (events if kind == "prediction" else labels).append(item)
    for index in NULLS:
        events[index]["features"]["f00"] = None
    for index in STRINGS:
        events[index]["features"]["f01"] = "n/a"
    lines = [orjson.dumps(event) for event in events]
    for number, raw, _ in BAD_LINES:
        lines.insert(number - 1, raw)
    events_path = folder / "events.jsonl"
    events_path.write_bytes(b"\n".join(lines) + b"\n")
    labels_path = folder / "labels.jsonl"
    labels_path.write_bytes(b"".join(orjson.dumps(label) + b"\n" for label in labels))
    return events_path, labels_path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream_monitor.cli", *args], capture_output=True,
                          timeout=240, cwd=REPO_ROOT)


def _expected_reasons() -> dict[str, list[int]]:
    reasons: dict[str, list[int]] = {}
    for number, _, reason in BAD_LINES:
        reasons.setdefault(reason, []).append(number)
    return reasons


def test_progress_goes_to_stderr_as_plain_lines_and_stdout_carries_only_the_alerts(inputs, tmp_path):
    events, labels = inputs
    done = _cli("replay", "--input", str(events), "--labels", str(labels), "--alerts-out", "-",
                "--progress-interval", "0")
    assert done.returncode == 0, done.stderr.decode()
    with open(tmp_path / "alerts.jsonl", "wb") as out:
        replay(load_settings(None), events, out, labels_path=labels)
    assert done.stdout == (tmp_path / "alerts.jsonl").read_bytes()
    assert done.stdout.count(b"\n") >= 4
    pattern = re.compile(r"replay: (\d+)% \([\d.]+ [kMG]?B of [\d.]+ [kMG]?B read\), (\d+) events, \d+ events/s, "
                         r"(\d+) alerts(, about \d+ (s|min) left)?")
    progress = [pattern.fullmatch(line) for line in done.stderr.decode().splitlines()
                if line.startswith("replay: ") and "%" in line]
    assert len(progress) >= 3 and all(progress), done.stderr.decode()
    shares = [int(match.group(1)) for match in progress]  # type: ignore[union-attr]
    events_seen = [int(match.group(2)) for match in progress]  # type: ignore[union-attr]
    assert shares == sorted(shares) and shares[-1] == 100 and shares[0] < 100
    assert events_seen == sorted(events_seen) and events_seen[-1] == 6000
    assert progress[-1].group(4) is None  # type: ignore[union-attr]  # the last line has no time left


def test_progress_prints_at_most_once_per_interval_and_a_final_line():
    ticks = iter([0.0, 1.0, 2.0, 4.9, 5.0, 6.0, 11.0, 12.0])
    out = io.StringIO()
    summary = ReplaySummary()
    progress = Progress(1_000_000, summary, out, interval_s=5.0, tty=False, clock=lambda: next(ticks))
    for _ in range(6):
        summary.events += 1000
        progress(100_000)
    progress.finish()
    assert out.getvalue().splitlines() == [
        "replay: 40% (400.0 kB of 1.0 MB read), 4000 events, 800 events/s, 0 alerts, about 8 s left",
        "replay: 60% (600.0 kB of 1.0 MB read), 6000 events, 545 events/s, 0 alerts, about 7 s left",
        "replay: 100% (1.0 MB of 1.0 MB read), 6000 events, 500 events/s, 0 alerts",
    ]


def test_a_short_replay_prints_no_progress_and_a_terminal_gets_a_bar():
    out = io.StringIO()
    progress = Progress(100, ReplaySummary(), out, interval_s=5.0, tty=False, clock=lambda: 0.0)
    progress(100)
    progress.finish()
    assert out.getvalue() == ""
    ticks = iter([0.0, 1.0, 2.0])
    bar = Progress(100, ReplaySummary(), out, tty=True, clock=lambda: next(ticks))
    bar(50)
    bar.finish()
    assert out.getvalue() == ("\rreplay [###############...............]  50% 50 B/100 B, 0 events, 0/s, "
                              "0 alerts, about 1 s left\x1b[K"
                              "\rreplay [##############################] 100% 100 B/100 B, 0 events, 0/s, "
                              "0 alerts\x1b[K\n")


def test_the_summary_counts_per_model_rejects_with_line_numbers_and_skipped_values(inputs, tmp_path):
    events, labels = inputs
    summary_json = tmp_path / "summary.json"
    rejected_out = tmp_path / "rejected.jsonl"
    done = _cli("replay", "--input", str(events), "--labels", str(labels), "--alerts-out",
                str(tmp_path / "alerts.jsonl"), "--rejected-out", str(rejected_out),
                "--summary-json", str(summary_json), "--no-progress")
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b""
    err = done.stderr.decode()
    expected = _expected_reasons()
    for reason, numbers in expected.items():
        shown = ", ".join(str(number) for number in numbers[:5])
        more = ", ..." if len(numbers) > 5 else ""
        lines = "lines" if len(numbers) > 1 else "line"
        assert f"  rejected {reason}: {len(numbers)} ({events} {lines} {shown}{more})" in err
    assert "  events fraud@1: 6000" in err
    assert f"  values skipped fraud missing: {len(NULLS)}" in err
    assert f"  values skipped fraud kind_mismatch: {len(STRINGS)}" in err
    assert re.search(r"^  [\d.]+ s, [\d,]+ events/s$", err, re.MULTILINE)

    summary = orjson.loads(summary_json.read_bytes())
    assert summary["events"] == 6000 and summary["labels"] == 6000
    assert summary["lines"] == 6000 + len(BAD_LINES) + 6000
    assert summary["events_by_model"] == [{"model": "fraud", "model_version": "1", "events": 6000}]
    assert {reason: entry["count"] for reason, entry in summary["rejected"].items()} == {
        reason: len(numbers) for reason, numbers in expected.items()}
    assert {reason: entry["lines"] for reason, entry in summary["rejected"].items()} == {
        reason: numbers[:5] for reason, numbers in expected.items()}
    assert summary["skipped"] == [{"model": "fraud", "reason": "kind_mismatch", "values": len(STRINGS)},
                                  {"model": "fraud", "reason": "missing", "values": len(NULLS)}]
    assert summary["events_per_second"] > 0

    # every rejected line, with its raw bytes (base64 too where it is not UTF-8)
    written = [orjson.loads(line) for line in rejected_out.read_bytes().splitlines()]
    assert [(row["file"], row["line"], row["reason"]) for row in written] == [
        (str(events), number, reason) for number, _, reason in BAD_LINES]
    for row, (_, raw, _) in zip(written, BAD_LINES):
        if "raw_base64" in row:
            assert base64.b64decode(row["raw_base64"]) == raw
        else:
            assert row["raw"].encode() == raw
    assert "raw_base64" in written[3] and all(row["detail"] for row in written)


def test_recording_the_trace_does_not_change_the_alerts(inputs, tmp_path):
    """Every detector (the defaults, and ADWIN and KS by name): the trace feeds them in pieces."""
    events, labels = inputs
    config = tmp_path / "all.yaml"
    config.write_text("models:\n  - model: fraud\n    detectors:\n"
                      "      numeric: [{name: adwin}, {name: ks}, {name: page_hinkley}, {name: quantile_chi2},\n"
                      "                {name: scale}]\n"
                      "      categorical: [{name: chi_square}, {name: category_cusum}]\n")
    for settings in (load_settings(None), load_settings(config)):
        plain, traced = io.BytesIO(), io.BytesIO()
        replay(settings, events, plain, labels_path=labels)
        trace = StatisticTrace(max_points=50)
        replay(settings, events, traced, labels_path=labels, trace=trace)
        assert traced.getvalue() == plain.getvalue()
        assert plain.getvalue().count(b"\n") >= 4
        assert [alert.to_json() + b"\n" for alert in trace.alerts] == plain.getvalue().splitlines(keepends=True)
        # downsampled: at most max_points samples per series, and each detection kept exactly
        assert all(len(series.xs) <= 50 for series in trace.series.values())
        detected = {(key, d.n_seen): d for key, series in trace.series.items() for d in series.detections}
        for alert in trace.alerts:
            point = detected[((alert.model, alert.model_version, alert.signal, alert.detector), alert.n_seen)]
            assert point.statistic == pytest.approx(alert.statistic)


def test_the_trace_keeps_the_sample_closest_to_alarm_in_each_bucket():
    trace = StatisticTrace(max_points=4, samples_per_bucket=2)
    key = ("m", "1", "feature:x", "page_hinkley")
    for x in range(16):
        # a lone peak at event 9, and thresholds that make event 2 closer to alarm than event 3
        trace.sample(key, x, 9.0 if x == 9 else (2.0 if x in (2, 3) else 1.0), 4.0 if x == 2 else 10.0)
    series = trace.series[key]
    assert series.width == 4
    assert series.xs == [2, 4, 9, 12]
    assert series.statistics == [2.0, 1.0, 9.0, 1.0]
    assert trace.stride(key) == 2


class _Report(HTMLParser):
    """What the tests read from the report: alert table rows, charts and their marks, scripts, links."""

    def __init__(self) -> None:
        super().__init__()
        self.alert_rows: list[str] = []
        self.figures: list[dict[str, str]] = []
        self.svgs: list[dict[str, list[dict[str, str]]]] = []
        self.scripts = 0
        self.external: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "script":
            self.scripts += 1
        for name in ("src", "href"):
            if name in attributes:
                self.external.append(attributes[name])
        if tag == "link":
            self.external.append(attributes.get("href", ""))
        if tag == "figure":
            self.figures.append(attributes)
        if tag == "svg":
            self.svgs.append({"polyline": [], "circle": []})
        if tag in ("polyline", "circle") and self.svgs:
            self.svgs[-1][tag].append(attributes)
        if tag == "table":
            self._table = attributes["id"]
            self.tables[self._table] = []
        if tag == "tr" and self._table:
            self._row = []
            if self._table == "alerts-table" and "data-alert-id" in attributes:
                self.alert_rows.append(attributes["data-alert-id"])
        if tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        if tag == "tr" and self._table and self._row:
            self.tables[self._table].append(self._row)
            self._row = None
        if tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_the_report_shows_every_alert_and_one_chart_per_alerted_signal(inputs, tmp_path):
    events, labels = inputs
    report = tmp_path / "report.html"
    alerts_out = tmp_path / "alerts.jsonl"
    assert main(["replay", "--input", str(events), "--labels", str(labels), "--alerts-out", str(alerts_out),
                 "--report", str(report), "--no-progress"]) == 0
    alerts = [orjson.loads(line) for line in alerts_out.read_bytes().splitlines()]
    parsed = _Report()
    parsed.feed(report.read_text(encoding="utf-8"))

    assert parsed.alert_rows == [alert["alert_id"] for alert in alerts]
    assert [row[0] for row in parsed.tables["alerts-table"]] == [alert["alert_id"] for alert in alerts]
    signals = sorted({(alert["model"], alert["model_version"], alert["signal"]) for alert in alerts})
    assert {signal for _, _, signal in signals} >= {"feature:f01", "feature:c00", "performance:error_rate"}
    assert [(f["data-model"], f["data-model-version"], f["data-signal"]) for f in parsed.figures] == signals
    assert len(parsed.svgs) == len(signals)
    for (model, version, signal), svg in zip(signals, parsed.svgs):
        classes = [line.get("class") for line in svg["polyline"]]
        assert "threshold" in classes and "statistic" in classes
        marked = [circle["data-alert-id"] for circle in svg["circle"] if circle.get("class") == "alert"]
        assert sorted(marked) == sorted(alert["alert_id"] for alert in alerts
                                        if (alert["model"], alert["model_version"], alert["signal"])
                                        == (model, version, signal))
        for line in svg["polyline"]:
            points = [tuple(map(float, point.split(","))) for point in line["points"].split()]
            assert len(points) <= 2 * 2000 + 2 * 16  # downsampled (steps double the threshold's points)

    # self-contained and safe: no script (a rejected line's "<script>" is text), nothing fetched
    assert parsed.scripts == 0 and parsed.external == []
    assert "<script>alert('x')</script>" in [row[-1] for row in parsed.tables["rejected-lines"]]
    assert {row[0]: int(row[1]) for row in parsed.tables["rejected-reasons"]} == {
        reason: len(numbers) for reason, numbers in _expected_reasons().items()}
    assert sorted((row[0], row[1], int(row[2])) for row in parsed.tables["skipped-values"]) == [
        ("fraud", "kind_mismatch", len(STRINGS)), ("fraud", "missing", len(NULLS))]
    assert parsed.tables["events-by-model"] == [["fraud", "1", "6,000"]]


def test_render_report_without_alerts_says_so():
    html = render_report(ReplaySummary(), StatisticTrace(), ["empty.jsonl"])
    parsed = _Report()
    parsed.feed(html)
    assert "No alerts." in html and parsed.svgs == [] and parsed.alert_rows == []


def test_replay_output_options_into_a_missing_folder_are_clear_errors(inputs, tmp_path, capsys):
    events, _ = inputs
    for option in ("--rejected-out", "--summary-json", "--report"):
        assert main(["replay", "--input", str(events), "--alerts-out", str(tmp_path / "a.jsonl"),
                     option, str(tmp_path / "no" / "file")]) == 2
        assert f"replay: {option}: the folder {tmp_path / 'no'} does not exist" in capsys.readouterr().err
