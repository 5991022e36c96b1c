"""Elasticsearch: the index templates, installed idempotently (the sinks that write
there are in :mod:`streams.sinks`).

Names follow Elastic's data stream scheme, ``{type}-{dataset}-{namespace}``: events go
to one data stream per family (``logs-segwatch.vpcflow-default``), alerts and incidents
to regular indices named the same way (``logs-segwatch.alerts-default``), documents
updated by id. Elastic's ``logs-*`` data views and Elastic Security's default index
patterns see them all.

The component templates are data in :mod:`streams.assets` (``elasticsearch/``):
``segwatch-ecs`` (the ECS fields segwatch writes, for a server without Elastic's own
``ecs@mappings``), ``segwatch-fields`` (segwatch's and the providers' namespaces) and
``segwatch-settings``. The index templates are built here, per dataset, composing
Elastic's built-in ``logs@mappings``, ``logs@settings`` and ``ecs@mappings`` where the
server has them (segwatch's ECS component where it has not), then segwatch's own
components, then the ``logs@custom`` and ``logs-<dataset>@custom`` hooks when they
exist, as Elastic's integrations do. ``install_templates`` adapts them to what the
server has: ``match_only_text`` falls back to ``text`` (without norms) and
``constant_keyword`` to ``keyword`` where the server lacks them; the events'
retention is set with data stream lifecycle or ILM, whichever the server runs (or as
configured), and the report says which.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elasticsearch import ApiError, Elasticsearch

from detector.definitions import FAMILIES, dataset
from streams.assets import TEMPLATES
from streams.errors import Fatal
from streams.settings import ElasticsearchSettings

__all__ = [
    "BUILTIN_COMPONENTS",
    "ILM_POLICY",
    "TemplateReport",
    "choose_lifecycle",
    "index_templates",
    "install_templates",
    "load_components",
]

ILM_POLICY = "segwatch-events"
PRIORITY = 200  # above the built-in logs-*-* template (100), as integrations' templates
# Elastic's built-in component templates (x-pack's stack templates), when the server has them
BUILTIN_COMPONENTS = ("logs@mappings", "logs@settings", "ecs@mappings")
DOCUMENT_DATASETS = ("segwatch.alerts", "segwatch.incidents")


def load_components(folder: Path = TEMPLATES) -> dict[str, Any]:
    """{component template name: body} from ``component-<name>.json`` in the folder."""
    return {path.stem.removeprefix("component-"): json.loads(path.read_text())
            for path in sorted(folder.glob("component-*.json"))}  # fmt: skip


def index_templates(settings: ElasticsearchSettings | None = None,
                    builtin: frozenset[str] = frozenset()) -> dict[str, Any]:  # fmt: skip
    """{index template name: body} for these settings, given the built-in components
    the server has (``builtin``): one data stream template per family, one regular-index
    template each for alerts and incidents, and the segwatch 0.1 names where the
    settings still use them."""
    settings = settings or ElasticsearchSettings()
    ecs = ["ecs@mappings"] if "ecs@mappings" in builtin else ["segwatch-ecs"]
    logs = [name for name in ("logs@mappings", "logs@settings") if name in builtin]
    mappings = [name for name in ("logs@mappings",) if name in builtin]

    def template(name: str, patterns: list[str], what: str, stream: bool,
                 parts: list[str], custom: list[str]) -> dict[str, Any]:  # fmt: skip
        body: dict[str, Any] = {
            "index_patterns": patterns,
            "priority": PRIORITY,
            "composed_of": [*parts, *ecs, "segwatch-fields", "segwatch-settings", *custom],
            "ignore_missing_component_templates": custom,
            "_meta": {"description": what, "managed_by": "segwatch"},
        }
        if stream:
            body["data_stream"] = {}
        return {name: body}

    out: dict[str, Any] = {}
    for family in FAMILIES:
        name = f"logs-{dataset(family)}"
        out |= template(name, [f"{name}-*"], f"segwatch {family} flow events (data stream)",
                        True, logs, ["logs@custom", f"{name}@custom"])  # fmt: skip
    for kind in DOCUMENT_DATASETS:
        name = f"logs-{kind}"
        what = f"segwatch {kind.split('.')[1]}, one document per id (regular index)"
        # logs@settings is left out: its ILM policy rolls over, which a regular index cannot
        out |= template(name, [f"{name}-*"], what, False, mappings, [f"{name}@custom"])
    if settings.events_stream:  # segwatch 0.1: every family in one stream
        out |= template("segwatch-events", ["segwatch-events*"], "segwatch flow events, all "
                        "families (segwatch 0.1's data stream)", True, [], [])  # fmt: skip
        # every family shares the stream: dataset is a keyword here, not a constant
        out["segwatch-events"]["template"] = {
            "mappings": {
                "properties": {
                    "data_stream": {
                        "properties": {
                            "dataset": {"type": "keyword"},
                            "namespace": {"type": "keyword"},
                        }
                    }
                }
            }
        }
    for index, kind in ((settings.alerts_index, "alerts"),
                        (settings.incidents_index, "incidents")):  # fmt: skip
        if index.startswith(f"segwatch-{kind}"):
            out |= template(
                f"segwatch-{kind}",
                [f"segwatch-{kind}*"],
                f"segwatch {kind} (segwatch 0.1's index)",
                False,
                [],
                [],
            )
    return out


@dataclass
class TemplateReport:
    """What ``install_templates`` did and what the server could not do."""

    server_version: str
    installed: list[str] = field(default_factory=list)
    adaptations: list[str] = field(default_factory=list)
    lifecycle: str = "none"  # dsl, ilm or none: who deletes old events


def choose_lifecycle(wanted: str, dsl: bool, ilm: bool) -> tuple[str, str]:
    """(dsl | ilm | none, why) for the events data stream, given what the server runs.

    :raises Fatal: ``wanted`` names a mechanism the server does not run.
    """
    if wanted == "none":
        return "none", "elasticsearch.lifecycle is none: events are kept until deleted"
    if wanted in ("dsl", "ilm"):
        if not (dsl if wanted == "dsl" else ilm):
            name = "data stream lifecycle" if wanted == "dsl" else "ILM"
            raise Fatal("elasticsearch", f"elasticsearch.lifecycle is {wanted}, but this "
                        f"server does not run {name}; set it to auto or none")  # fmt: skip
        return wanted, f"elasticsearch.lifecycle is {wanted}"
    if dsl:
        return "dsl", "the server runs data stream lifecycle"
    if ilm:
        return "ilm", "the server runs ILM but not data stream lifecycle"
    return "none", ("the server runs neither data stream lifecycle nor ILM: "
                    "events are kept until deleted")  # fmt: skip


def _runs(call: Callable[[], Any]) -> bool:
    try:
        call()
        return True
    except ApiError:  # 404/405: the module is not there (or not allowed to us)
        return False


def install_templates(client: Elasticsearch, settings: ElasticsearchSettings | None = None,
                      folder: Path = TEMPLATES) -> TemplateReport:  # fmt: skip
    """Put the component and index templates (idempotent: PUT replaces), adapting to the
    server, and set the events' retention (``elasticsearch.retention``) with the
    lifecycle mechanism the server runs (``elasticsearch.lifecycle``: auto, dsl, ilm or
    none; see :func:`choose_lifecycle`).

    :raises Fatal: the server is not 8.x or 9.x, or lacks the lifecycle asked for.
    """
    settings = settings or ElasticsearchSettings()
    retention = settings.retention
    version = _server_version(client)
    if version.split(".")[0] not in ("8", "9"):
        raise Fatal(
            "elasticsearch", f"Elasticsearch {version} is not supported: segwatch needs 8.x or 9.x"
        )
    report = TemplateReport(version)
    dsl = _runs(client.indices.get_data_lifecycle_stats)
    ilm = _runs(client.ilm.get_status)
    report.lifecycle, why = choose_lifecycle(settings.lifecycle, dsl, ilm)
    builtin = frozenset(name for name in BUILTIN_COMPONENTS
                        if client.cluster.exists_component_template(name=name))  # fmt: skip
    if builtin:
        report.adaptations.append(f"composed with the server's {', '.join(sorted(builtin))}")
    if "ecs@mappings" not in builtin:
        report.adaptations.append("the server has no ecs@mappings: segwatch-ecs maps ECS")
    fallbacks = _missing_types(client)
    for kind, instead in fallbacks.items():
        report.adaptations.append(f"{kind} is not available: {instead['type']} instead")
    for name, body in load_components(folder).items():
        if name == "segwatch-ecs" and "ecs@mappings" in builtin:
            continue  # Elastic's own ECS mappings serve
        body = _retype(copy.deepcopy(body), fallbacks)
        client.cluster.put_component_template(name=name, **body)
        report.installed.append(f"component template {name}")
    if report.lifecycle == "ilm":
        client.ilm.put_lifecycle(name=ILM_POLICY, policy={"phases": {
            "hot": {"actions": {"rollover": {"max_age": "1d", "max_primary_shard_size": "50gb"}}},
            "delete": {"min_age": retention, "actions": {"delete": {}}},
        }})  # fmt: skip
        report.installed.append(f"ILM policy {ILM_POLICY} (delete after {retention})")
    for name, body in index_templates(settings, builtin).items():
        if "data_stream" in body:
            template = body.setdefault("template", {})
            index_settings = template.setdefault("settings", {})
            if report.lifecycle == "dsl":
                template["lifecycle"] = {"data_retention": retention}
                if "logs@settings" in builtin:  # it names an ILM policy, which would win
                    index_settings["index.lifecycle.prefer_ilm"] = False
            elif report.lifecycle == "ilm":
                index_settings["index.lifecycle.name"] = ILM_POLICY
        client.indices.put_index_template(name=name, **body)
        report.installed.append(f"index template {name} ({', '.join(body['index_patterns'])})")
    retained = f", events kept {retention}" if report.lifecycle != "none" else ""
    report.adaptations.append(f"lifecycle: {report.lifecycle} ({why}{retained})")
    return report


def _server_version(client: Elasticsearch) -> str:
    try:
        return str(client.info()["version"]["number"])
    except ApiError:  # the integ-test-zip answers GET / with 405: ask the node
        nodes = client.nodes.info(node_id="_local")["nodes"]
        return str(next(iter(nodes.values()))["version"])


# Field types some servers lack (an OSS or integ-test node has neither), and what stands
# in for each: the documents are the same, only the index stores them less tightly.
_FALLBACKS: dict[str, dict[str, Any]] = {
    "match_only_text": {"type": "text", "norms": False},
    "constant_keyword": {"type": "keyword"},
}


def _missing_types(client: Elasticsearch) -> dict[str, dict[str, Any]]:
    """{type the server lacks: its stand-in}, asked with a simulated template each."""
    missing = {}
    for kind, instead in _FALLBACKS.items():
        try:
            client.indices.simulate_template(
                index_patterns=["segwatch-probe-*"],
                template={"mappings": {"properties": {"p": {"type": kind}}}},
            )
        except ApiError:
            missing[kind] = instead
    return missing


def _retype(node: Any, fallbacks: dict[str, dict[str, Any]]) -> Any:
    if isinstance(node, dict):
        kind = node.get("type")  # (a field may be named "type" too: its mapping is a dict)
        if isinstance(kind, str) and kind in fallbacks:
            return dict(fallbacks[kind])
        return {k: _retype(v, fallbacks) for k, v in node.items()}
    return node
