"""Elasticsearch: the index templates, installed idempotently (the sinks that write
there are in :mod:`streams.sinks`).

Templates are data in ``deploy/elasticsearch/`` (``component-*.json``,
``index-*.json``). ``install_templates`` adapts them to what the server has:
``match_only_text`` falls back to ``text`` (without norms) where the server
lacks it; the events' retention is set with data stream lifecycle or ILM,
whichever the server runs (or as configured), and the report says which.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elasticsearch import ApiError, Elasticsearch

from streams.errors import Fatal

__all__ = [
    "ILM_POLICY",
    "TemplateReport",
    "choose_lifecycle",
    "install_templates",
    "load_templates",
]

TEMPLATES = Path(__file__).resolve().parents[1] / "deploy" / "elasticsearch"
EVENTS_STREAM = "segwatch-events"
ALERTS_INDEX = "segwatch-alerts"
INCIDENTS_INDEX = "segwatch-incidents"


def load_templates(folder: Path = TEMPLATES) -> tuple[dict[str, Any], dict[str, Any]]:
    """({component name: body}, {index template name: body}) from the folder."""
    components: dict[str, Any] = {}
    indices: dict[str, Any] = {}
    for path in sorted(folder.glob("*.json")):
        kind, _, name = path.stem.partition("-")
        body = json.loads(path.read_text())
        (components if kind == "component" else indices)[name] = body
    return components, indices


@dataclass
class TemplateReport:
    """What ``install_templates`` did and what the server could not do."""

    server_version: str
    installed: list[str] = field(default_factory=list)
    adaptations: list[str] = field(default_factory=list)
    lifecycle: str = "none"  # dsl, ilm or none: who deletes old events


ILM_POLICY = "segwatch-events"


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


def install_templates(
    client: Elasticsearch, folder: Path = TEMPLATES, lifecycle: str = "auto", retention: str = "30d"
) -> TemplateReport:
    """Put the component and index templates (idempotent: PUT replaces), adapting to the
    server, and set the events' retention with the lifecycle mechanism the server runs
    (``lifecycle``: auto, dsl, ilm or none; see :func:`choose_lifecycle`).

    :raises Fatal: the server is not 8.x or 9.x, or lacks the lifecycle asked for.
    """
    version = _server_version(client)
    if version.split(".")[0] not in ("8", "9"):
        raise Fatal(
            "elasticsearch", f"Elasticsearch {version} is not supported: segwatch needs 8.x or 9.x"
        )
    report = TemplateReport(version)
    dsl = _runs(client.indices.get_data_lifecycle_stats)
    ilm = _runs(client.ilm.get_status)
    report.lifecycle, why = choose_lifecycle(lifecycle, dsl, ilm)
    components, indices = load_templates(folder)
    text_type = "match_only_text"
    try:
        client.indices.simulate_template(
            index_patterns=["segwatch-probe-*"],
            template={"mappings": {"properties": {"p": {"type": "match_only_text"}}}},
        )
    except ApiError:
        text_type = "text"
        report.adaptations.append("match_only_text is not available: event.original is text")
    for name, body in components.items():
        body = _retype(copy.deepcopy(body), text_type)
        client.cluster.put_component_template(name=name, **body)
        report.installed.append(f"component template {name}")
    if report.lifecycle == "ilm":
        client.ilm.put_lifecycle(name=ILM_POLICY, policy={"phases": {
            "hot": {"actions": {"rollover": {"max_age": "1d", "max_primary_shard_size": "50gb"}}},
            "delete": {"min_age": retention, "actions": {"delete": {}}},
        }})  # fmt: skip
        report.installed.append(f"ILM policy {ILM_POLICY} (delete after {retention})")
    for name, body in indices.items():
        body = copy.deepcopy(body)
        if "data_stream" in body:
            template = body.setdefault("template", {})
            if report.lifecycle == "dsl":
                template["lifecycle"] = {"data_retention": retention}
            elif report.lifecycle == "ilm":
                template.setdefault("settings", {})["index.lifecycle.name"] = ILM_POLICY
        client.indices.put_index_template(name=name, **body)
        report.installed.append(f"index template {name}")
    retained = f", events kept {retention}" if report.lifecycle != "none" else ""
    report.adaptations.append(f"lifecycle: {report.lifecycle} ({why}{retained})")
    return report


def _server_version(client: Elasticsearch) -> str:
    try:
        return str(client.info()["version"]["number"])
    except ApiError:  # the integ-test-zip answers GET / with 405: ask the node
        nodes = client.nodes.info(node_id="_local")["nodes"]
        return str(next(iter(nodes.values()))["version"])


def _retype(node: Any, text_type: str) -> Any:
    if isinstance(node, dict):
        if node.get("type") == "match_only_text" and text_type != "match_only_text":
            return {"type": text_type, "norms": False}
        return {k: _retype(v, text_type) for k, v in node.items()}
    return node
