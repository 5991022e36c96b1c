"""``segwatch analyze --report``: one self-contained HTML page (inline CSS and SVG, no
script), in the order on-call reads it:

1. the incidents, worst first, each with its path, the time to the most sensitive
   zone it reached and its steps on a timeline;
2. connections per hour (labelled axes), with violations and blocked attempts on a
   scale of their own beneath, and the incidents' first pages marked;
3. the top alerts with their reasons;
4. the zone matrix: a grid of initiators' zones by destination zones, each cell
   coloured by the worst verdict in it.
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from typing import Any

from detector.analyze import Summary
from detector.events import parse_stamp
from detector.model.compile import VERDICTS

__all__ = ["render_report"]

_COLOURS = {
    "allowed": "#74add1",
    "over_restrictive": "#fdae61",
    "unmanaged": "#bababa",
    "blocked_attempt": "#fee090",
    "violation": "#d73027",
}
_WORST = ("violation", "blocked_attempt", "over_restrictive", "unmanaged", "allowed")
_SEVERITY = {"critical": "#67001f", "high": "#d6604d", "medium": "#f4a582", "low": "#92c5de",
             "info": "#d1e5f0"}  # fmt: skip
_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:84em;color:#222}"
    "h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}"
    "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
    "vertical-align:top;text-align:left}td.n{text-align:right}ul{margin:0;padding-left:1.2em}"
    ".card{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;margin:1em 0}"
    ".badge{color:#fff;border-radius:4px;padding:1px 8px;font-weight:600;margin-right:.5em}"
    ".path{font-weight:600}.muted{color:#666}.grid td{text-align:center;min-width:4.5em}"
    ".grid th.rot{writing-mode:vertical-rl;transform:rotate(180deg);text-align:left}"
    ".legend span{padding:0 6px;margin-right:4px}"
)


def render_report(
    summary: Summary,
    alerts: list[dict[str, Any]],
    title: str,
    incidents: list[dict[str, Any]] | None = None,
) -> str:
    """The page for one analysis: its summary, alert documents and incident documents."""
    e = html.escape
    incidents = incidents or []
    real = [d for d in incidents if d["segwatch"]["incident"]["severity"] != "info"]
    audit = len(incidents) - len(real)
    by_severity: dict[str, int] = {}
    for doc in real:
        severity = doc["segwatch"]["incident"]["severity"]
        by_severity[severity] = by_severity.get(severity, 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in by_severity.items()) or "none"
    connections = summary.events - summary.replies
    verdicts = "".join(
        f'<li><span style="background:{_COLOURS[v]}">&nbsp;&nbsp;</span> {e(v)}: {n:,}</li>'
        for v, n in summary.verdicts.most_common()
    )
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{e(title)}</h1>",
        f"<p>{connections:,} connections ({summary.replies:,} reply records, part of their "
        f"connections), model {e(summary.model.version)}; <b>{len(real)} incidents</b> "
        f"({counts})"
        + (f", {audit} audit records" if audit else "")
        + f", {len(alerts):,} alerts.</p><ul>{verdicts}</ul>",
        "<h2>Incidents</h2>",
        "".join(_incident(doc) for doc in real[:30]) or "<p>No incidents.</p>",
        "<h2>Connections over time</h2>",
        _timeline(summary, real),
        "<h2>Top alerts</h2>",
        _alerts(alerts),
        "<h2>Zone matrix</h2>",
        _matrix(summary),
        "</body></html>\n",
    ]
    return "".join(parts)


def _when(text: str) -> str:
    return text[:19].replace("T", " ")


def _incident(doc: dict[str, Any]) -> str:
    e = html.escape
    incident = doc["segwatch"]["incident"]
    severity = incident["severity"]
    zone, seconds = incident["most_sensitive_zone"], incident["time_to_most_sensitive_s"]
    reached = (
        f"reached {e(zone)} after {_duration(seconds)}" if zone is not None else "reached nothing"
    )
    path = " &rarr; ".join(e(z) for z in incident["path"])
    rows = "".join(
        f"<tr><td>{_when(s['time'])}</td><td>{e(s['from_ip'])} ({e(s['from_zone'])})</td>"
        f"<td>{e(s['to_zone'])}: {s['host_count']} host(s)</td>"
        f"<td>{e(', '.join(s['services'][:6]))}</td><td>{e(s['description'])}</td>"
        f"<td>{e(s['verdict'])}</td><td class=n>{s['count']:,}</td></tr>"
        for s in incident["steps"]
    )
    return (
        f'<div class="card"><p><span class="badge" style="background:{_SEVERITY[severity]}">'
        f"{e(severity)}</span><b>{e(incident['title'])}</b> "
        f'<span class="muted">{e(incident["state"])}, {_when(incident["first_seen"])} &ndash; '
        f"{_when(incident['last_seen'])} UTC</span></p>"
        f'<p>Path: <span class="path">{path}</span>; {reached}.</p>'
        f"{_steps_svg(incident)}"
        "<table><tr><th>time (UTC)</th><th>from</th><th>to</th><th>services</th>"
        f"<th>what</th><th>verdict</th><th>connections</th></tr>{rows}</table></div>"
    )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _steps_svg(incident: dict[str, Any], width: int = 900) -> str:
    """The incident's steps as bars on one time axis, one row each."""
    e = html.escape
    steps = incident["steps"]
    if not steps:
        return ""
    starts = [parse_stamp(s["time"]) for s in steps]
    ends = [parse_stamp(s["last_seen"]) for s in steps]
    first, last = min(starts), max(ends)
    span = max(last - first, 60.0)
    label, row, plot = 260, 22, width - 260 - 20
    height = row * len(steps) + 34
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           'font-size="11" role="img" aria-label="steps on a timeline">']  # fmt: skip
    for i, (step, start, end) in enumerate(zip(steps, starts, ends, strict=True)):
        y = 6 + i * row
        x0 = label + (start - first) / span * plot
        w = max((end - start) / span * plot, 3.0)
        colour = "#d73027" if step["verdict"] == "reached" else "#fdae61"
        out.append(
            f'<text x="{label - 8}" y="{y + 13}" text-anchor="end">{e(step["from_ip"])} '
            f"&rarr; {e(step['to_zone'])}</text>"
            f'<rect x="{x0:.1f}" y="{y + 2}" width="{w:.1f}" height="{row - 8}" fill="{colour}">'
            f"<title>{e(step['description'])}</title></rect>"
        )
    axis = 6 + len(steps) * row
    out.append(f'<line x1="{label}" y1="{axis}" x2="{label + plot}" y2="{axis}" stroke="#444"/>')
    for k in range(5):
        x = label + k / 4 * plot
        when = datetime.fromtimestamp(first + k / 4 * span, UTC).strftime("%H:%M:%S")
        anchor = ("start", "middle", "middle", "middle", "end")[k]
        tick = f'<line x1="{x:.1f}" y1="{axis}" x2="{x:.1f}" y2="{axis + 4}" stroke="#444"/>'
        out.append(tick + f'<text x="{x:.1f}" y="{axis + 16}" text-anchor="{anchor}">{when}</text>')
    out.append(
        f'<text x="{label - 8}" y="{axis + 16}" text-anchor="end" fill="#666">time (UTC)</text>'
        '</svg><p class="legend muted"><span style="background:#d73027"></span>got through '
        '<span style="background:#fdae61"></span>refused</p>'
    )
    return "".join(out)


def _ticks(peak: float, count: int = 4) -> list[float]:
    """Round axis ticks from 0 up to at least ``peak``."""
    raw = max(peak, 1.0) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    return [step * i for i in range(count + 1)]


def _panel(
    hours: list[int],
    series: dict[int, dict[str, int]],
    verdicts: tuple[str, ...],
    top: float,
    height: float,
    label: str,
    width: int,
) -> tuple[list[str], float]:
    """One stacked bar panel with a labelled y-axis; (svg parts, its bottom)."""
    left, plot_w = 70.0, width - 90.0
    first, span = hours[0], max(hours[-1] - hours[0] + 1, 1)
    peak = max((sum(series.get(h, {}).get(v, 0) for v in verdicts) for h in hours), default=0)
    ticks = _ticks(peak)
    scale = (height - 10) / ticks[-1]
    bottom = top + height
    bar = plot_w / span
    middle = f"{top + height / 2:.0f}"
    parts = [f'<text x="14" y="{middle}" transform="rotate(-90 14 {middle})" '
             f'text-anchor="middle">{html.escape(label)}</text>']  # fmt: skip
    for tick in ticks:
        y = bottom - tick * scale
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
                     f'stroke="#eee"/><text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f"{tick:,.0f}</text>")  # fmt: skip
    for h in hours:
        x = left + (h - first) * bar
        y = bottom
        for verdict in verdicts:
            n = series.get(h, {}).get(verdict, 0)
            if n:
                tall = n * scale
                y -= tall
                parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar - 0.5, 0.8):.1f}" '
                             f'height="{tall:.1f}" fill="{_COLOURS[verdict]}"><title>'
                             f"{verdict}: {n:,}</title></rect>")  # fmt: skip
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}" '
                 f'stroke="#444"/><line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" '
                 'stroke="#444"/>')  # fmt: skip
    return parts, bottom


def _timeline(summary: Summary, incidents: list[dict[str, Any]], width: int = 960) -> str:
    hours = sorted({h for h, _ in summary.timeline})
    if not hours:
        return "<p>No connections.</p>"
    series: dict[int, dict[str, int]] = {}
    for (hour, kind), n in summary.timeline.items():
        series.setdefault(hour, {})[kind] = n
    everything, _ = _panel(hours, series, VERDICTS, 10, 170, "connections / hour", width)
    gaps, bottom = _panel(hours, series, ("violation", "blocked_attempt"), 200, 120,
                          "violations, blocked / hour", width)  # fmt: skip
    left, plot_w = 70.0, width - 90.0
    first, span = hours[0], max(hours[-1] - hours[0] + 1, 1)
    marks = []
    for doc in incidents:
        incident = doc["segwatch"]["incident"]
        x = left + (parse_stamp(incident["first_seen"]) / 3600 - first) / span * plot_w
        marks.append(f'<path d="M{x:.1f},{bottom + 4} l-5,9 h10 z" '
                     f'fill="{_SEVERITY[incident["severity"]]}"><title>'
                     f"{html.escape(incident['title'])}</title></path>")  # fmt: skip
    axis = bottom + 30
    labels = []
    for k in range(6):
        hour = first + round(k / 5 * (span - 1))
        x = left + (hour - first + 0.5) / span * plot_w
        when = datetime.fromtimestamp(hour * 3600, UTC).strftime("%m-%d %H:00")
        anchor = "start" if k == 0 else "end" if k == 5 else "middle"
        labels.append(f'<text x="{x:.1f}" y="{axis}" text-anchor="{anchor}">{when}</text>')
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{axis + 24}" '
        'font-size="11" role="img" aria-label="connections per hour">'
        + "".join(everything + gaps + marks + labels)
        + f'<text x="{left + plot_w / 2:.0f}" y="{axis + 18}" text-anchor="middle" '
        'fill="#666">hour (UTC)</text></svg>'
    )
    legend = " ".join(f'<span style="background:{c}">&nbsp;</span>{v}' for v, c in _COLOURS.items())
    return (
        svg + f'<p class="legend">{legend} &#9650; an incident opens (its severity\'s colour)</p>'
    )


def _alerts(alerts: list[dict[str, Any]]) -> str:
    e = html.escape
    ranked = sorted(
        alerts, key=lambda a: (-a["event"]["risk_score"], -a["segwatch"]["alert"]["count"])
    )
    rows = []
    for doc in ranked[:50]:
        alert, seg = doc["segwatch"]["alert"], doc["segmentation"]
        reasons = "".join(f"<li>{e(r)}</li>" for r in alert["reasons"][:5])
        source = (doc.get("source") or {}).get("ip", "")
        rows.append(
            f"<tr><td class=n>{doc['event']['risk_score']}</td><td>{e(alert['severity'])}</td>"
            f"<td>{e(doc['rule']['name'])}</td><td>{e(source)}</td><td>{e(seg['source_zone'])}"
            f" &rarr; {e(seg['destination_zone'])}</td><td class=n>{alert['count']:,}</td>"
            f"<td><ul>{reasons}</ul></td></tr>"
        )
    if not rows:
        return "<p>No alerts.</p>"
    return (
        "<table><tr><th>risk</th><th>severity</th><th>alert</th><th>initiator</th>"
        f"<th>zones</th><th>connections</th><th>reasons</th></tr>{''.join(rows)}</table>"
    )


def _matrix(summary: Summary) -> str:
    """Initiators' zones (rows) by destination zones (columns)."""
    e = html.escape
    pairs = summary.zone_pairs()
    if not pairs:
        return "<p>No connections.</p>"
    sources = sorted({s for s, _, _ in pairs})
    targets = sorted({d for _, d, _ in pairs})
    cells = {(s, d): c for s, d, c in pairs}
    head = "".join(f'<th class="rot">{e(d)}</th>' for d in targets)
    rows = []
    for s in sources:
        tds = []
        for d in targets:
            counts = cells.get((s, d))
            if not counts:
                tds.append("<td></td>")
                continue
            worst = next(v for v in _WORST if counts.get(v))
            total = sum(counts.values())
            tip = ", ".join(f"{v} {n:,}" for v, n in counts.items() if n)
            flagged = total - counts.get("allowed", 0)
            text = f"{total:,}" + (f"<br><small>{flagged:,} not allowed</small>" if flagged else "")
            tds.append(f'<td style="background:{_COLOURS[worst]}" title="{e(tip)}">{text}</td>')
        rows.append(f"<tr><th>{e(s)}</th>{''.join(tds)}</tr>")
    legend = " ".join(f'<span style="background:{_COLOURS[v]}">&nbsp;</span>{v}' for v in _WORST)
    return (
        '<table class="grid"><tr><th>initiator zone &darr; / destination zone &rarr;</th>'
        f"{head}</tr>{''.join(rows)}</table>"
        f'<p class="legend">cell colour: the worst verdict among its connections: {legend}</p>'
    )
