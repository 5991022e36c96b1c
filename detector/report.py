"""``segwatch analyze --report``: one self-contained HTML page — the zone matrix by
verdict, the top alerts with their reasons, and a timeline of flows and alerts."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from detector.analyze import Summary
from detector.model.compile import VERDICTS

__all__ = ["render_report"]

_COLOURS = {
    "allowed": "#74add1",
    "over_restrictive": "#fdae61",
    "unmanaged": "#bababa",
    "blocked_attempt": "#fee090",
    "violation": "#d73027",
}


def render_report(summary: Summary, alerts: list[dict[str, Any]], title: str) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(s)}</td><td>{e(d)}</td>"
        + "".join(f"<td class=n>{c[v] or ''}</td>" for v in VERDICTS)
        + "</tr>"
        for s, d, c in summary.zone_pairs()
    )
    ranked = sorted(
        alerts, key=lambda a: (-a["event"]["risk_score"], -a["segwatch"]["alert"]["count"])
    )
    alert_rows = "".join(_alert_row(a) for a in ranked[:50])
    verdicts = "".join(f"<li>{e(v)}: {n:,}</li>" for v, n in summary.verdicts.most_common())
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)}</title><style>body{{font-family:sans-serif;margin:2em;max-width:80em}}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "vertical-align:top}td.n{text-align:right}ul{margin:0;padding-left:1.2em}</style></head>"
        f"<body><h1>{e(title)}</h1><p>{summary.events:,} flows, model "
        f"{e(summary.model.version)}, {len(alerts):,} alerts.</p><ul>{verdicts}</ul>"
        f"<h2>Timeline</h2>{_timeline(summary)}"
        f"<h2>Top alerts</h2><table><tr><th>risk</th><th>severity</th><th>alert</th>"
        f"<th>zones</th><th>count</th><th>reasons</th></tr>{alert_rows}</table>"
        "<h2>Zone matrix</h2><table><tr><th>source</th><th>destination</th>"
        + "".join(f"<th>{e(v)}</th>" for v in VERDICTS)
        + f"</tr>{rows}</table></body></html>\n"
    )


def _alert_row(doc: dict[str, Any]) -> str:
    e = html.escape
    alert, seg = doc["segwatch"]["alert"], doc["segmentation"]
    reasons = "".join(f"<li>{e(r)}</li>" for r in alert["reasons"])
    return (
        f"<tr><td class=n>{doc['event']['risk_score']}</td><td>{e(alert['severity'])}</td>"
        f"<td>{e(doc['rule']['name'])}</td><td>{e(seg['source_zone'])} &rarr; "
        f"{e(seg['destination_zone'])}</td><td class=n>{alert['count']}</td>"
        f"<td><ul>{reasons}</ul></td></tr>"
    )


def _timeline(summary: Summary, width: int = 960, height: int = 180) -> str:
    hours = sorted({h for h, _ in summary.timeline})
    if not hours:
        return "<p>No flows.</p>"
    first, last = hours[0], hours[-1]
    span = max(last - first + 1, 1)
    totals = {
        h: sum(n for (hh, k), n in summary.timeline.items() if hh == h and k != "alert")
        for h in hours
    }
    peak = max(totals.values()) or 1
    bar = width / span
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}" '
        'font-family="sans-serif" font-size="11">'
    ]
    for h in hours:
        x = (h - first) * bar
        y = float(height)
        for verdict in VERDICTS:
            n = summary.timeline.get((h, verdict), 0)
            if n:
                tall = n / peak * (height - 10)
                y -= tall
                parts.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar - 0.5, 0.5):.1f}" '
                    f'height="{tall:.1f}" fill="{_COLOURS[verdict]}"><title>'
                    f"{verdict}: {n}</title></rect>"
                )
        alerts = summary.timeline.get((h, "alert"), 0)
        if alerts:
            parts.append(
                f'<circle cx="{x + bar / 2:.1f}" cy="8" r="{min(2 + alerts, 7)}" '
                f'fill="#a50026"><title>{alerts} alert(s)</title></circle>'
            )
    start = datetime.fromtimestamp(first * 3600, UTC).strftime("%Y-%m-%d %H:00")
    end = datetime.fromtimestamp((last + 1) * 3600, UTC).strftime("%Y-%m-%d %H:00")
    parts.append(
        f'<text x="0" y="{height + 20}">{start} UTC</text>'
        f'<text x="{width}" y="{height + 20}" text-anchor="end">{end} UTC</text></svg>'
    )
    legend = " ".join(
        f'<span style="background:{c};padding:0 6px">{v}</span>' for v, c in _COLOURS.items()
    )
    return "".join(parts) + f"<p>{legend} <span style='color:#a50026'>&#9679; alerts</span></p>"
