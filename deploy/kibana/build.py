"""Writes the Kibana saved objects (``streams/assets/kibana/*.ndjson``) from the panel list below.

    python deploy/kibana/build.py          # rewrite the files
    python deploy/kibana/build.py --check  # exit 1 if they are not what this writes

Each file holds one dashboard with its data view and visualizations, so it can be
imported alone. Visualizations are aggregation-based (``visState``): the
aggregations and filters behind each panel are explicit, and
``segwatch kibana check`` runs them against Elasticsearch. Kibana migrates the
objects (written in the 7.10 format) to its own version on import.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from dataclasses import field as _field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[2] / "streams" / "assets" / "kibana"
VERSION = "7.10.0"

# Elastic's {type}-{dataset}-{namespace} names, every namespace: the events are every
# logs-segwatch.* data stream but the alerts and incidents indices named the same way
DATA_VIEWS = {
    "segwatch-events": (
        "logs-segwatch.*-*,-logs-segwatch.alerts-*,-logs-segwatch.incidents-*",
        "segwatch events (flows)",
    ),
    "segwatch-alerts": ("logs-segwatch.alerts-*", "segwatch alerts"),
    "segwatch-incidents": ("logs-segwatch.incidents-*", "segwatch incidents"),
}


@dataclass(frozen=True)
class Agg:
    """One aggregation of a visualization: a bucket (terms, date_histogram,
    histogram) or a metric (count, cardinality, sum, max)."""

    type: str
    schema: str
    field: str | None = None
    params: dict[str, Any] = _field(default_factory=dict)


def count() -> Agg:
    return Agg("count", "metric")


def metric(kind: str, name: str) -> Agg:
    return Agg(kind, "metric", name)


def terms(name: str, schema: str, size: int = 10, order: str = "desc") -> Agg:
    return Agg("terms", schema, name, {"size": size, "order": order, "orderBy": "1"})


def over_time(schema: str = "segment") -> Agg:
    return Agg("date_histogram", schema, "@timestamp", {"interval": "auto", "min_doc_count": 1})


def zone_pairs_and_ports(size: int) -> list[Agg]:
    """Table rows: connections per zone pair (as initiated) and service."""
    return [
        count(),
        terms("segmentation.source_zone", "bucket", size),
        terms("segmentation.destination_zone", "bucket", size),
        terms("segmentation.service", "bucket", size),
    ]


# a reply record is part of its connection: panels that count connections leave it out
REPLIES = {"segmentation.reply": "true"}


def histogram(name: str, interval: int) -> Agg:
    return Agg("histogram", "segment", name, {"interval": interval, "min_doc_count": False})


@dataclass(frozen=True)
class Panel:
    id: str
    title: str
    kind: str  # line, histogram, pie, table, heatmap
    aggs: list[Agg]
    where: dict[str, str] = _field(default_factory=dict)  # field: value (match_phrase filters)
    description: str = ""
    width: int = 24
    height: int = 15
    unless: dict[str, str] = _field(default_factory=dict)  # negated match_phrase filters


@dataclass(frozen=True)
class Dashboard:
    id: str
    file: str
    title: str
    description: str
    data_view: str
    panels: list[Panel]
    exclude: dict[str, str] = _field(default_factory=dict)  # negated filters on every panel


DASHBOARDS = [
    Dashboard(
        "segwatch-overview",
        "segmentation-overview.ndjson",
        "segwatch: Segmentation overview",
        "Flows against the declared segmentation model: verdicts, zone pairs, enforcement gaps.",
        "segwatch-events",
        [
            Panel(
                "segwatch-verdicts-over-time",
                "Flows by verdict over time",
                "line",
                [count(), over_time(), terms("segmentation.verdict", "group", 5)],
                description="Every connection (reply records left out), split by its verdict "
                "against the model.",
                width=48,
            ),
            Panel(
                "segwatch-zone-matrix",
                "Zone-to-zone matrix",
                "heatmap",
                [
                    count(),
                    terms("segmentation.source_zone", "segment", 25),
                    terms("segmentation.destination_zone", "group", 25),
                ],
                description="Connections from each initiator's zone (x) to each destination "
                "zone (y); reply records are part of their connection and left out.",
            ),
            Panel(
                "segwatch-top-violations",
                "Top violations",
                "table",
                zone_pairs_and_ports(10),
                {"segmentation.verdict": "violation"},
                "Flows the network let through and the model forbids (enforcement gaps).",
            ),
            Panel(
                "segwatch-blocked-by-source",
                "Blocked attempts by source",
                "histogram",
                [count(), terms("source.ip", "segment", 20)],
                {"segmentation.verdict": "blocked_attempt"},
                "Sources the network denied, where the model forbids the flow too.",
            ),
            Panel(
                "segwatch-over-restrictive",
                "Over-restrictive policies",
                "table",
                zone_pairs_and_ports(10),
                {"segmentation.verdict": "over_restrictive"},
                "Flows the model allows and the network denied: a policy breaking an app.",
            ),
            Panel(
                "segwatch-unmanaged",
                "Unmanaged endpoints",
                "table",
                [count(), terms("source.ip", "bucket", 20), terms("destination.ip", "bucket", 20)],
                {"segmentation.verdict": "unmanaged"},
                "Flows with an endpoint in no zone of the model.",
            ),
        ],
        REPLIES,
    ),
    Dashboard(
        "segwatch-anomalies",
        "anomalies.ndjson",
        "segwatch: Anomalies",
        "What the detectors found: risk, new paths, off-hours traffic, scans, rare ports.",
        "segwatch-events",
        [
            Panel(
                "segwatch-risk-distribution",
                "Risk distribution",
                "histogram",
                [count(), histogram("segmentation.risk_score", 10)],
                description="Flows by risk score (0-100), in steps of 10.",
            ),
            Panel(
                "segwatch-new-paths",
                "New paths",
                "table",
                zone_pairs_and_ports(20),
                {"segmentation.anomalies": "new_path"},
                "Zone pairs and ports first seen after the learning period.",
            ),
            Panel(
                "segwatch-off-hours",
                "Off-hours traffic",
                "histogram",
                [count(), over_time(), terms("segmentation.source_zone", "group", 10)],
                {"segmentation.anomalies": "off_hours"},
                "Flows outside the zones' business hours, in hours the source is rarely active.",
            ),
            Panel(
                "segwatch-scans",
                "Scans by source",
                "table",
                [
                    count(),
                    terms("source.ip", "bucket", 20),
                    metric("cardinality", "destination.port"),
                    metric("cardinality", "destination.ip"),
                ],
                {"segmentation.anomalies": "scan"},
                "Sources flagged as scanning, with how many ports and hosts they touched.",
            ),
            Panel(
                "segwatch-rare-ports",
                "Ports by rarity",
                "table",
                [
                    count(),
                    terms("destination.port", "bucket", 20, order="asc"),
                    terms("segmentation.destination_zone", "bucket", 10),
                ],
                {"segmentation.anomalies": "odd_port"},
                "Destination ports rare or never seen for their zone, rarest first.",
            ),
        ],
        REPLIES,
    ),
    Dashboard(
        "segwatch-alerts",
        "alerts.ndjson",
        "segwatch: Alerts",
        "Grouped, deduplicated findings (one document per fingerprint; the time is last seen).",
        "segwatch-alerts",
        [
            Panel(
                "segwatch-alerts-by-severity",
                "Open alerts by severity",
                "pie",
                [count(), terms("segwatch.alert.severity", "segment", 5)],
                description="Alerts last seen in the time range, by severity.",
            ),
            Panel(
                "segwatch-alert-timeline",
                "Alert timeline",
                "histogram",
                [count(), over_time(), terms("segwatch.alert.severity", "group", 5)],
                description="Alerts by when they were last seen, by severity.",
            ),
            Panel(
                "segwatch-alerts-by-rule",
                "Alerts by rule",
                "table",
                [
                    count(),
                    terms("rule.name", "bucket", 20),
                    metric("sum", "segwatch.alert.count"),
                    metric("max", "event.risk_score"),
                ],
                description="Alerts per rule or finding, the events they group, highest risk.",
                width=48,
            ),
        ],
    ),
    Dashboard(
        "segwatch-incidents",
        "incidents.ndjson",
        "segwatch: Incidents",
        "What on-call is paged for: one document per incident (the time is its last "
        "activity), with its path and the time it took to reach its most sensitive zone.",
        "segwatch-incidents",
        [
            Panel(
                "segwatch-open-incidents",
                "Open incidents by severity",
                "pie",
                [count(), terms("segwatch.incident.severity", "segment", 5)],
                unless={"segwatch.incident.state": "resolved"},
                description="Incidents not resolved yet, by severity.",
            ),
            Panel(
                "segwatch-incident-timeline",
                "Incidents over time",
                "histogram",
                [count(), over_time(), terms("segwatch.incident.severity", "group", 5)],
                description="Incidents by their last activity, by severity.",
            ),
            Panel(
                "segwatch-lateral-paths",
                "Lateral-movement paths",
                "table",
                [
                    count(),
                    terms("segwatch.incident.attacker_zone", "bucket", 20),
                    terms("segwatch.incident.most_sensitive_zone", "bucket", 20),
                    metric("max", "segwatch.incident.step_count"),
                ],
                description="From the attacker's zone to the most sensitive zone reached, "
                "with the most steps any such incident took.",
                width=48,
            ),
            Panel(
                "segwatch-time-to-sensitive",
                "Time to the most sensitive zone",
                "table",
                [
                    count(),
                    terms("segwatch.incident.most_sensitive_zone", "bucket", 20),
                    metric("min", "segwatch.incident.time_to_most_sensitive_s"),
                    metric("max", "segwatch.incident.time_to_most_sensitive_s"),
                ],
                description="Seconds from an incident's first step to reaching the zone.",
            ),
            Panel(
                "segwatch-incident-findings",
                "Incidents by finding",
                "table",
                [
                    count(),
                    terms("segwatch.incident.steps.finding", "bucket", 20),
                    metric("max", "event.risk_score"),
                ],
                description="The findings incidents are made of, with the highest risk.",
            ),
        ],
    ),
]


def _vis_params(kind: str) -> dict[str, Any]:
    if kind in ("line", "histogram"):
        return {
            "type": kind, "addTooltip": True, "addLegend": True, "legendPosition": "right",
            "times": [], "addTimeMarker": False,
            "categoryAxes": [{"id": "CategoryAxis-1", "type": "category", "position": "bottom",
                              "show": True, "scale": {"type": "linear"},
                              "labels": {"show": True, "filter": True, "truncate": 100},
                              "title": {}}],
            "valueAxes": [{"id": "ValueAxis-1", "name": "LeftAxis-1", "type": "value",
                           "position": "left", "show": True,
                           "scale": {"type": "linear", "mode": "normal"},
                           "labels": {"show": True, "rotate": 0, "filter": False, "truncate": 100},
                           "title": {"text": "Flows"}}],
            "seriesParams": [{"show": True, "type": "line" if kind == "line" else "histogram",
                              "mode": "normal" if kind == "line" else "stacked",
                              "data": {"label": "Count", "id": "1"}, "valueAxis": "ValueAxis-1",
                              "drawLinesBetweenPoints": True, "showCircles": True}],
            "grid": {"categoryLines": False},
        }  # fmt: skip
    if kind == "pie":
        labels = {"show": True, "values": True, "last_level": True, "truncate": 100}
        return {"type": "pie", "addTooltip": True, "addLegend": True, "legendPosition": "right",
                "isDonut": True, "labels": labels}  # fmt: skip
    if kind == "table":
        return {"perPage": 10, "showPartialRows": False, "showMetricsAtAllLevels": False,
                "showTotal": False, "totalFunc": "sum", "percentageCol": ""}  # fmt: skip
    if kind == "heatmap":
        return {"type": "heatmap", "addTooltip": True, "addLegend": True, "enableHover": False,
                "legendPosition": "right", "times": [], "colorsNumber": 4, "colorSchema": "Reds",
                "setColorRange": False, "colorsRange": [], "invertColors": False,
                "percentageMode": False,
                "valueAxes": [{"show": False, "id": "ValueAxis-1", "type": "value",
                               "scale": {"type": "linear", "defaultYExtents": False},
                               "labels": {"show": False, "rotate": 0}}]}  # fmt: skip
    raise ValueError(f"no visualization kind {kind!r}")


def _agg(index: int, agg: Agg) -> dict[str, Any]:
    params: dict[str, Any] = dict(agg.params)
    if agg.field is not None:
        params["field"] = agg.field
    if agg.type == "terms":
        params.update(otherBucket=False, missingBucket=False)
    return {"id": str(index + 1), "enabled": True, "type": agg.type, "schema": agg.schema,
            "params": params}  # fmt: skip


def _filter(name: str, value: str, negate: bool = False) -> dict[str, Any]:
    return {
        "meta": {"alias": None, "negate": negate, "disabled": False, "type": "phrase",
                 "key": name, "params": {"query": value},
                 "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.filter[0].meta.index"},
        "query": {"match_phrase": {name: value}},
        "$state": {"store": "appState"},
    }  # fmt: skip


def _visualization(panel: Panel, data_view: str, exclude: dict[str, str]) -> dict[str, Any]:
    state = {"title": panel.title, "type": panel.kind, "params": _vis_params(panel.kind),
             "aggs": [_agg(i, a) for i, a in enumerate(panel.aggs)]}  # fmt: skip
    filters = [_filter(k, v) for k, v in panel.where.items()]
    filters += [_filter(k, v, negate=True) for k, v in {**panel.unless, **exclude}.items()]
    for i, f in enumerate(filters):
        f["meta"]["indexRefName"] = f"kibanaSavedObjectMeta.searchSourceJSON.filter[{i}].meta.index"
    search = {"query": {"query": "", "language": "kuery"}, "filter": filters,
              "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index"}  # fmt: skip
    references = [{"name": "kibanaSavedObjectMeta.searchSourceJSON.index",
                   "type": "index-pattern", "id": data_view}]  # fmt: skip
    references += [{"name": f["meta"]["indexRefName"], "type": "index-pattern", "id": data_view}
                   for f in filters]  # fmt: skip
    return {
        "id": panel.id, "type": "visualization", "migrationVersion": {"visualization": VERSION},
        "attributes": {
            "title": panel.title, "description": panel.description,
            "visState": json.dumps(state), "uiStateJSON": "{}", "version": 1,
            "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(search)},
        },
        "references": references,
    }  # fmt: skip


def _dashboard(board: Dashboard) -> dict[str, Any]:
    panels, x, y, row = [], 0, 0, 0
    for i, panel in enumerate(board.panels):
        if x + panel.width > 48:
            x, y, row = 0, y + row, 0
        panels.append({"version": VERSION, "panelIndex": str(i + 1), "embeddableConfig": {},
                       "gridData": {"x": x, "y": y, "w": panel.width, "h": panel.height,
                                    "i": str(i + 1)},
                       "panelRefName": f"panel_{i}"})  # fmt: skip
        x, row = x + panel.width, max(row, panel.height)
    return {
        "id": board.id, "type": "dashboard", "migrationVersion": {"dashboard": VERSION},
        "attributes": {
            "title": board.title, "description": board.description, "version": 1,
            "panelsJSON": json.dumps(panels),
            "optionsJSON": json.dumps({"useMargins": True, "hidePanelTitles": False}),
            "timeRestore": True, "timeFrom": "now-24h", "timeTo": "now",
            "refreshInterval": {"pause": False, "value": 60000},
            "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(
                {"query": {"query": "", "language": "kuery"}, "filter": []})},
        },
        "references": [{"name": f"panel_{i}", "type": "visualization", "id": p.id}
                       for i, p in enumerate(board.panels)],
    }  # fmt: skip


def _data_view(view: str) -> dict[str, Any]:
    pattern, name = DATA_VIEWS[view]
    return {
        "id": view, "type": "index-pattern", "migrationVersion": {"index-pattern": VERSION},
        "attributes": {"title": pattern, "name": name, "timeFieldName": "@timestamp"},
        "references": [],
    }  # fmt: skip


def render() -> dict[str, str]:
    """{file name: NDJSON text}: data view, visualizations, then the dashboard."""
    files = {}
    for board in DASHBOARDS:
        objects = [_data_view(board.data_view)]
        objects += [_visualization(p, board.data_view, board.exclude) for p in board.panels]
        objects.append(_dashboard(board))
        files[board.file] = "".join(json.dumps(o, sort_keys=True) + "\n" for o in objects)
    return files


def main(argv: list[str]) -> int:
    stale = []
    for name, text in render().items():
        path = HERE / name
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale: {', '.join(stale)}; run python deploy/kibana/build.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
