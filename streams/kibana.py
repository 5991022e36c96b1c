"""Kibana: the saved objects in ``streams/assets/kibana/*.ndjson`` (data views, visualizations,
dashboards), their import through Kibana's saved-objects API, and a check that runs
the query and aggregations behind every panel against Elasticsearch.

The visualizations are aggregation-based: their ``visState`` lists the
aggregations (buckets nested in order, metrics innermost, as Kibana builds them)
and their ``searchSourceJSON`` the filters. ``panel_request`` turns one into the
search Kibana would send. An ``auto`` date interval is chosen the way Kibana
does, at most about 100 buckets, over the span of the data (Kibana uses the
time picker's range).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from elasticsearch import Elasticsearch

from streams.assets import TEMPLATES
from streams.elastic import load_components

__all__ = [
    "SAVED_OBJECTS",
    "KibanaError",
    "Panel",
    "auto_interval",
    "field_problems",
    "fields_used",
    "import_objects",
    "load_objects",
    "mapped_fields",
    "panel_request",
    "panels",
    "run_panel",
]

from streams.assets import SAVED_OBJECTS

_AGGREGATABLE = {"keyword", "ip", "long", "integer", "short", "byte", "float", "double",
                 "scaled_float", "date", "boolean"}  # fmt: skip
_METRICS = {"count", "cardinality", "sum", "max", "min", "avg"}


class KibanaError(Exception):
    """A saved-objects file that cannot be read, or an import Kibana refused."""


@dataclass(frozen=True)
class Panel:
    """One visualization: where it is defined, what it reads and what it asks."""

    source: str  # file:line
    id: str
    title: str
    data_view: str  # the data view's id
    pattern: str  # the data view's index pattern
    aggs: list[dict[str, Any]]
    filters: list[dict[str, Any]]  # Elasticsearch queries


def load_objects(files: list[Path]) -> list[tuple[str, dict[str, Any]]]:
    """(file:line, object) for every line of the NDJSON files.

    :raises KibanaError: a line is not JSON or not a saved object (names file and line).
    """
    objects = []
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path}:{number}"
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise KibanaError(f"{where}: not JSON ({exc.msg}, column {exc.colno})") from exc
            missing = [k for k in ("id", "type", "attributes") if k not in obj]
            if missing:
                raise KibanaError(f"{where}: not a saved object (no {', '.join(missing)})")
            objects.append((where, obj))
    return objects


def panels(objects: list[tuple[str, dict[str, Any]]]) -> list[Panel]:
    """The visualizations among the objects, with their data view resolved.

    :raises KibanaError: a reference or an embedded JSON string is broken.
    """
    views = {o["id"]: o["attributes"]["title"] for _, o in objects if o["type"] == "index-pattern"}
    found = []
    for where, obj in objects:
        if obj["type"] != "visualization":
            continue
        attributes = obj["attributes"]
        try:
            state = json.loads(attributes["visState"])
            search = json.loads(attributes["kibanaSavedObjectMeta"]["searchSourceJSON"])
        except (KeyError, json.JSONDecodeError) as exc:
            raise KibanaError(f"{where}: {obj['id']}: visState or searchSourceJSON: {exc}") from exc
        refs = {r["name"]: r["id"] for r in obj.get("references", [])}
        view = refs.get(search.get("indexRefName", ""), "")
        if view not in views:
            raise KibanaError(f"{where}: {obj['id']}: its data view {view!r} is not in the files")
        filters = []
        for item in search.get("filter", []):
            meta = item.get("meta", {})
            if meta.get("disabled"):
                continue
            query = item["query"]
            filters.append({"bool": {"must_not": [query]}} if meta.get("negate") else query)
        if search.get("query", {}).get("query"):
            raise KibanaError(f"{where}: {obj['id']}: query bar text is not checked; use filters")
        aggs = [a for a in state["aggs"] if a.get("enabled", True)]
        found.append(Panel(where, obj["id"], attributes["title"], view, views[view], aggs, filters))
    return found


_INTERVALS = [("1m", 60), ("5m", 300), ("10m", 600), ("30m", 1800), ("1h", 3600), ("3h", 10800),
              ("12h", 43200), ("1d", 86400), ("7d", 604800), ("30d", 2592000)]  # fmt: skip


def auto_interval(span_seconds: float, most: int = 100) -> str:
    """The smallest interval of the ladder that cuts ``span_seconds`` into ``most`` buckets."""
    for name, seconds in _INTERVALS:
        if span_seconds / seconds <= most:
            return name
    return _INTERVALS[-1][0]


def panel_request(panel: Panel, interval: str = "1h") -> dict[str, Any]:
    """The search body behind the panel: its filters and its aggregations, nested;
    ``interval`` stands for an ``auto`` date interval."""
    buckets = [a for a in panel.aggs if a["type"] not in _METRICS]
    metrics = {a["id"]: _metric(a) for a in panel.aggs if a["type"] in _METRICS}
    metrics = {k: v for k, v in metrics.items() if v is not None}
    inner: dict[str, Any] = metrics
    for agg in reversed(buckets):
        body = _bucket(agg, set(metrics), interval)
        if inner:
            body["aggs"] = inner
        inner = {agg["id"]: body}
    query = {"bool": {"filter": panel.filters}} if panel.filters else {"match_all": {}}
    return {"size": 0, "track_total_hits": True, "query": query, "aggs": inner}


def _metric(agg: dict[str, Any]) -> dict[str, Any] | None:
    if agg["type"] == "count":
        return None  # every bucket's doc_count
    return {agg["type"]: {"field": agg["params"]["field"]}}


def _bucket(agg: dict[str, Any], metric_ids: set[str], auto: str) -> dict[str, Any]:
    params = agg["params"]
    kind = agg["type"]
    if kind == "terms":
        key = params.get("orderBy", "1")
        order_key = key if key in metric_ids else "_count"
        return {"terms": {"field": params["field"], "size": params.get("size", 10),
                          "order": {order_key: params.get("order", "desc")}}}  # fmt: skip
    if kind == "date_histogram":
        interval = params.get("interval", "auto")
        if interval == "auto":
            interval = auto
        return {"date_histogram": {"field": params["field"], "fixed_interval": interval,
                                   "min_doc_count": params.get("min_doc_count", 1)}}  # fmt: skip
    if kind == "histogram":
        return {"histogram": {"field": params["field"], "interval": params["interval"]}}
    raise KibanaError(f"aggregation {kind!r} is not one segwatch's panels use")


def fields_used(panel: Panel) -> list[tuple[str, str]]:
    """(field, how) pairs: how is "aggregated" or "filtered"."""
    used = [(a["params"]["field"], "aggregated") for a in panel.aggs if "field" in a["params"]]
    for query in panel.filters:
        used += [(name, "filtered") for name in _query_fields(query)]
    return used


def _query_fields(query: dict[str, Any]) -> list[str]:
    """The fields a filter's query names, through ``bool`` clauses (a negated filter)."""
    names = []
    for kind, clause in query.items():
        if kind == "bool":
            names += [n for part in clause.values() for q in part for n in _query_fields(q)]
        elif isinstance(clause, dict):
            names += list(clause)
    return names


def mapped_fields(folder: Path = TEMPLATES) -> dict[str, str]:
    """{field: type} of every field the index templates map."""
    components = load_components(folder)
    out: dict[str, str] = {}

    def walk(properties: dict[str, Any], prefix: str) -> None:
        for name, spec in properties.items():
            if "properties" in spec:
                walk(spec["properties"], f"{prefix}{name}.")
            else:
                out[f"{prefix}{name}"] = spec.get("type", "object")

    for body in components.values():
        walk(body.get("template", {}).get("mappings", {}).get("properties", {}), "")
    return out


def field_problems(panel: Panel, mapped: dict[str, str]) -> list[str]:
    """What is wrong with the fields a panel uses, against the templates' mappings."""
    problems = []
    for name, how in fields_used(panel):
        kind = mapped.get(name)
        if kind is None:
            problems.append(f"{panel.source}: {panel.title}: {name} is not in the index templates")
        elif how == "aggregated" and kind not in _AGGREGATABLE:
            problems.append(f"{panel.source}: {panel.title}: {name} is {kind}, not aggregatable")
    return problems


def run_panel(es: Elasticsearch, panel: Panel, index: str | None = None) -> tuple[int, int]:
    """(matching documents, buckets of the outermost aggregation) for the panel's search."""
    index = index or panel.pattern
    bounds = {"first": {"min": {"field": "@timestamp"}}, "last": {"max": {"field": "@timestamp"}}}
    span = es.search(index=index, size=0, aggs=bounds)
    first, last = span["aggregations"]["first"]["value"], span["aggregations"]["last"]["value"]
    interval = auto_interval((last - first) / 1000 if first is not None else 0)
    answer = es.search(index=index, **panel_request(panel, interval))
    hits = int(answer["hits"]["total"]["value"])
    aggs = answer.get("aggregations", {})
    outer: dict[str, Any] = next(iter(aggs.values()), {}) if aggs else {}
    buckets = [b for b in outer.get("buckets", []) if b.get("doc_count", 0) > 0]
    return hits, len(buckets)


def import_objects(
    url: str,
    files: list[Path],
    space: str | None = None,
    headers: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    verify: bool | str = True,
    timeout: float = 30.0,
) -> list[str]:
    """Import the files through ``POST /api/saved_objects/_import?overwrite=true``
    (into ``space`` if given); returns what each file imported.

    :raises KibanaError: Kibana is unreachable, refuses the request or some objects.
    """
    base = url.rstrip("/") + (f"/s/{space}" if space else "")
    done = []
    with httpx.Client(timeout=timeout, verify=verify, auth=auth) as client:
        for path in files:
            try:
                response = client.post(
                    f"{base}/api/saved_objects/_import",
                    params={"overwrite": "true"},
                    headers={"kbn-xsrf": "segwatch", **(headers or {})},
                    files={"file": (path.name, path.read_bytes(), "application/ndjson")},
                )
            except httpx.HTTPError as exc:
                raise KibanaError(f"{base}: cannot reach Kibana: {exc}") from exc
            if response.status_code != 200:
                raise KibanaError(f"{path.name}: Kibana answered {response.status_code}: "
                                  f"{response.text[:500]}")  # fmt: skip
            result = response.json()
            if not result.get("success", False):
                errors = "; ".join(
                    f"{e.get('type')} {e.get('id')}: {e.get('error', {}).get('type')}"
                    for e in result.get("errors", [])
                )
                raise KibanaError(f"{path.name}: Kibana refused objects: {errors}")
            done.append(f"{path.name}: {result.get('successCount', 0)} objects")
    return done
