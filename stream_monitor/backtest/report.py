"""The backtest report of ``replay --report``: one HTML file, charts as inline SVG, no script, no network.

Per signal that alerted, one SVG: a panel per detector of the signal with its
statistic (downsampled, see :mod:`stream_monitor.backtest.trace`) and its
threshold over the event index, each alert a marker at its event. Then the
alerts, the rejected lines and the skipped values as tables. Every text from
the input (a rejected line, a model name) is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape

from stream_monitor import __version__
from stream_monitor.alerts import Alert
from stream_monitor.backtest.trace import Key, StatisticTrace
from stream_monitor.replay import ReplaySummary

__all__ = ["render_report"]

WIDTH = 1100
LEFT = 78
RIGHT = 24
PANEL = 170
PANEL_TOP = 28
PANEL_BOTTOM = 30
LEGEND = 26

STATISTIC_COLOUR = "#1f77b4"
THRESHOLD_COLOUR = "#d62728"
ALERT_FILL = "#ff7f0e"
ALERT_STROKE = "#7a3b00"

_STYLE = """
body { font: 14px/1.4 system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px; color: #222;
       background: #fff; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #d0d0d0; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
code { font: 12px ui-monospace, monospace; white-space: pre-wrap; word-break: break-all; }
code.alert-id { white-space: nowrap; word-break: normal; font-size: 11px; }
figure { margin: 16px 0 28px; } figcaption { font-weight: 600; margin-bottom: 4px; }
svg.chart { display: block; background: #fff; }
.meta { color: #555; }
"""


def _number(value: float | int | None, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return f"{value:,}"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values between ``low`` and ``high``."""
    span = high - low
    if span <= 0:
        return [low]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _table(table_id: str, headers: Sequence[str], rows: Iterable[tuple[Sequence[str], dict[str, str]]],
           numeric: Sequence[int] = ()) -> str:
    """An HTML table; each row is its cells (already escaped HTML) and its ``<tr>`` attributes."""
    head = "".join(f"<th>{escape(header)}</th>" for header in headers)
    rows = list(rows)
    if not rows:
        return f'<p id="{table_id}">None.</p>'
    body = []
    for cells, attributes in rows:
        attrs = "".join(f' {name}="{escape(value)}"' for name, value in attributes.items())
        tds = "".join(f'<td class="number">{cell}</td>' if index in numeric else f"<td>{cell}</td>"
                      for index, cell in enumerate(cells))
        body.append(f"<tr{attrs}>{tds}</tr>")
    return (f'<table id="{table_id}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


class _Scale:
    def __init__(self, low: float, high: float, start: float, stop: float) -> None:
        self.low, self.high, self.start, self.stop = low, high, start, stop

    def __call__(self, value: float) -> float:
        value = min(max(value, self.low), self.high)
        return self.start + (value - self.low) / (self.high - self.low) * (self.stop - self.start)


def _polylines(points: Sequence[tuple[float, float]], css: str, colour: str, extra: str = "") -> list[str]:
    """Polylines through ``points`` (already in pixels), broken where a point is None."""
    lines = []
    run: list[str] = []
    for point in [*points, None]:
        if point is None:
            if run:
                if len(run) == 1:  # a lone point: a short tick, so it shows
                    x, y = run[0].split(",")
                    run = [f"{float(x) - 1.5:.1f},{y}", f"{float(x) + 1.5:.1f},{y}"]
                lines.append(f'<polyline class="{css}" fill="none" stroke="{colour}" {extra}'
                             f'points="{" ".join(run)}"/>')
            run = []
        else:
            run.append(f"{point[0]:.1f},{point[1]:.1f}")
    return lines


def _panel(trace: StatisticTrace, key: Key, alerts: list[Alert], top: float, x_max: int,
           positions: dict[tuple[Key, int], int]) -> str:
    """One detector's panel: axes, threshold, statistic, alert markers."""
    points = trace.points(key)
    finite = [value for _, statistic, threshold in points for value in (statistic, threshold)
              if math.isfinite(value)]
    low = min([0.0, *finite])
    high = max([*finite, low + 1e-12]) if finite else 1.0
    high = low + (high - low) * 1.08 if high > low else low + 1.0
    plot_top, plot_bottom = top + PANEL_TOP, top + PANEL - PANEL_BOTTOM
    x = _Scale(0, max(1, x_max), LEFT, WIDTH - RIGHT)
    y = _Scale(low, high, plot_bottom, plot_top)
    parts = [f'<g class="panel" data-detector="{escape(key[3])}">',
             f'<rect x="{LEFT}" y="{plot_top:.1f}" width="{WIDTH - LEFT - RIGHT}" '
             f'height="{plot_bottom - plot_top:.1f}" fill="#fafafa" stroke="#bbb"/>']
    for tick in _ticks(low, high, 4):
        ty = y(tick)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#e3e3e3"/>'
                     f'<text x="{LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end" font-size="11" '
                     f'fill="#444">{escape(_number(tick, 3))}</text>')
    for tick in _ticks(0, max(1, x_max), 8):
        tx = x(tick)
        parts.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{plot_bottom:.1f}" y2="{plot_bottom + 4:.1f}" '
                     f'stroke="#666"/><text x="{tx:.1f}" y="{plot_bottom + 17:.1f}" text-anchor="middle" '
                     f'font-size="11" fill="#444">{int(tick):,}</text>')
    count = len(alerts)
    parts.append(f'<text x="{LEFT}" y="{top + 18:.1f}" font-size="13" font-weight="600" fill="#222">'
                 f'{escape(key[3])}: {count} alert{"s" if count != 1 else ""}</text>')
    for alert in alerts:  # behind the lines, a faint rule at each alert's event
        where = positions.get((key, alert.n_seen))
        if where is not None:
            parts.append(f'<line class="alert-rule" x1="{x(where):.1f}" x2="{x(where):.1f}" '
                         f'y1="{plot_top:.1f}" y2="{plot_bottom:.1f}" stroke="{ALERT_FILL}" '
                         f'stroke-opacity="0.45"/>')
    # the threshold holds until the next sample: steps
    thresholds: list[tuple[float, float] | None] = []
    for (px, _, threshold), following in zip(points, [*points[1:], None]):
        if not math.isfinite(threshold):
            thresholds.append(None)
            continue
        thresholds.append((x(px), y(threshold)))
        if following is not None and following[0] != px:
            thresholds.append((x(following[0]), y(threshold)))
    parts += _polylines(thresholds, "threshold", THRESHOLD_COLOUR, 'stroke-width="1.2" stroke-dasharray="6 3" ')
    statistics = [None if math.isnan(statistic) else (x(px), y(statistic)) for px, statistic, _ in points]
    parts += _polylines(statistics, "statistic", STATISTIC_COLOUR, 'stroke-width="1.5" ')
    for alert in alerts:
        where = positions.get((key, alert.n_seen))
        if where is None:
            continue
        parts.append(f'<circle class="alert" data-alert-id="{escape(alert.alert_id)}" cx="{x(where):.1f}" '
                     f'cy="{y(alert.statistic):.1f}" r="5.5" fill="{ALERT_FILL}" stroke="{ALERT_STROKE}" '
                     f'stroke-width="1.5"><title>{escape(alert.alert_id)}: event {where:,} '
                     f'({escape(alert.event_id)}), statistic {escape(_number(alert.statistic))} &gt; '
                     f'{escape(_number(alert.threshold))}</title></circle>')
    parts.append("</g>")
    return "".join(parts)


def _chart(trace: StatisticTrace, signal: tuple[str, str, str], alerts: list[Alert], x_max: int,
           positions: dict[tuple[Key, int], int]) -> str:
    model, version, name = signal
    keys = [key for key in trace.series if key[:3] == signal]
    height = LEGEND + PANEL * len(keys)
    parts = [f'<figure class="signal" data-model="{escape(model)}" data-model-version="{escape(version)}" '
             f'data-signal="{escape(name)}"><figcaption>{escape(model)}@{escape(version)} {escape(name)}: '
             f'{len(alerts)} alert{"s" if len(alerts) != 1 else ""}</figcaption>',
             f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
             f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(name)} detector statistics">',
             f'<line x1="{LEFT}" x2="{LEFT + 28}" y1="13" y2="13" stroke="{STATISTIC_COLOUR}" stroke-width="2"/>'
             f'<text x="{LEFT + 34}" y="17" font-size="12">statistic</text>'
             f'<line x1="{LEFT + 110}" x2="{LEFT + 138}" y1="13" y2="13" stroke="{THRESHOLD_COLOUR}" '
             f'stroke-width="2" stroke-dasharray="6 4"/><text x="{LEFT + 144}" y="17" font-size="12">threshold'
             f'</text><circle cx="{LEFT + 236}" cy="13" r="5.5" fill="{ALERT_FILL}" stroke="{ALERT_STROKE}"/>'
             f'<text x="{LEFT + 248}" y="17" font-size="12">alert</text>'
             f'<text x="{WIDTH - RIGHT}" y="17" font-size="12" text-anchor="end" fill="#444">event index'
             f'</text>']
    for index, key in enumerate(keys):
        mine = [alert for alert in alerts if alert.detector == key[3]]
        parts.append(_panel(trace, key, mine, LEGEND + index * PANEL, x_max, positions))
    parts.append("</svg></figure>")
    return "".join(parts)


def render_report(summary: ReplaySummary, trace: StatisticTrace, inputs: Sequence[str]) -> str:
    """The report as one HTML document."""
    alerts = trace.alerts
    positions = {(key, detected.n_seen): detected.x
                 for key, series in trace.series.items() for detected in series.detections}
    x_max = max([summary.events - 1, *(x for x in positions.values())], default=0)
    by_signal: dict[tuple[str, str, str], list[Alert]] = {}
    for alert in alerts:
        by_signal.setdefault((alert.model, alert.model_version, alert.signal), []).append(alert)
    title = "stream-monitor backtest: " + ", ".join(inputs)
    rejected = sum(summary.rejected.values())
    html = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>",
            f"<h1>{escape(title)}</h1>",
            f'<p class="meta">stream-monitor {escape(__version__)}: {summary.lines:,} lines, '
            f"{summary.events:,} events, {summary.labels:,} labels, {rejected:,} rejected lines, "
            f"{len(alerts):,} alerts on {len(by_signal):,} signals; "
            f"{summary.seconds:.2f} s ({summary.events_per_second:,.0f} events/s)</p>",
            '<section id="summary"><h2>Events per model</h2>',
            _table("events-by-model", ["model", "version", "events"],
                   (([escape(model), escape(version), f"{count:,}"], {})
                    for (model, version), count in sorted(summary.events_by_model.items())), numeric=[2]),
            "</section>",
            '<section id="charts"><h2>Signals that alerted</h2>',
            "<p>Each detector's statistic against its threshold over the event index (of each stretch "
            "of events, the sample closest to the threshold, so peaks show; a detector of several charts "
            "shows its closest chart's), and a marker at each alert.</p>" if by_signal else "<p>No alerts.</p>"]
    for signal in sorted(by_signal):
        html.append(_chart(trace, signal, by_signal[signal], x_max, positions))
    html.append("</section>")
    html.append('<section id="alerts"><h2>Alerts</h2>')
    html.append(_table("alerts-table", ["alert_id", "event index", "model", "version", "signal", "detector",
                                        "event_id", "detected_at", "n_seen", "statistic", "threshold",
                                        "p_value", "severity"],
                       (([f'<code class="alert-id">{escape(alert.alert_id)}</code>',
                          _number(positions.get(((alert.model, alert.model_version, alert.signal,
                                                  alert.detector), alert.n_seen))),
                          escape(alert.model), escape(alert.model_version), escape(alert.signal),
                          escape(alert.detector), escape(alert.event_id), escape(alert.detected_at or ""),
                          f"{alert.n_seen:,}", escape(_number(alert.statistic)), escape(_number(alert.threshold)),
                          escape(_number(alert.p_value)), escape(alert.severity)],
                         {"data-alert-id": alert.alert_id}) for alert in alerts),
                       numeric=[1, 8, 9, 10, 11]))
    html.append("</section>")
    html.append('<section id="rejected"><h2>Rejected lines</h2>')
    html.append(_table("rejected-reasons", ["reason", "count", "first lines"],
                       (([escape(reason), f"{count:,}",
                          escape(summary.where(reason))],
                         {"data-reason": reason}) for reason, count in sorted(summary.rejected.items())),
                       numeric=[1]))
    html.append("<p>The first lines of each reason (<code>replay --rejected-out FILE</code> keeps them all):</p>")
    html.append(_table("rejected-lines", ["file", "line", "reason", "detail", "line as read"],
                       (([escape(example.file), f"{example.line:,}", escape(example.reason),
                          escape(example.detail), f"<code>{escape(example.raw)}</code>"], {})
                        for reason in sorted(summary.rejected_lines)
                        for example in summary.rejected_lines[reason]), numeric=[1]))
    html.append("</section>")
    html.append('<section id="skipped"><h2>Skipped values</h2>')
    html.append("<p>Values not fed to a detector: <code>missing</code> (null), <code>kind_mismatch</code> (a "
                "string on a numeric signal or the reverse), <code>signal_cap</code> (a signal beyond "
                "<code>limits.max_signals_per_model</code>), <code>model_cap</code> (events of a model beyond "
                "<code>limits.max_models</code>).</p>")
    html.append(_table("skipped-values", ["model", "reason", "values"],
                       (([escape(model), escape(reason), f"{count:,}"], {})
                        for (model, reason), count in sorted(summary.skipped.items())), numeric=[2]))
    other = [(f"labels {outcome}", count) for outcome, count in sorted(summary.label_outcomes.items())]
    other += [(f"event times clamped ({kind})", count) for kind, count in sorted(summary.clamped.items())]
    if other:
        html.append(_table("other-counts", ["what", "count"],
                           (([escape(name), f"{count:,}"], {}) for name, count in other), numeric=[1]))
    html.append("</section></body></html>\n")
    return "".join(html)
