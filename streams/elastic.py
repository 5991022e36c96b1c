"""Elasticsearch: the templates (installed idempotently) and the bulk sinks.

Templates are data in ``deploy/elasticsearch/`` (``component-*.json``,
``index-*.json``). ``install_templates`` adapts them to what the server has:
``match_only_text`` falls back to ``text`` (without norms) where the server
lacks it; the events' retention is set with data stream lifecycle or ILM,
whichever the server runs (or as configured), and the report says which.

The events sink indexes into the data stream with ``op_type: create`` and ids
derived from the source record (topic/partition/offset): a replay finds the
document there (409) and counts it as done, so nothing is duplicated. Items
refused for their content (mapping errors) are handed back with the reason,
for the dead-letter topic; 429 and 5xx are retried with backoff; nothing is
dropped.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from elasticsearch import ApiError, Elasticsearch, TransportError

__all__ = [
    "ILM_POLICY",
    "BulkResult",
    "EventsSink",
    "TemplateReport",
    "choose_lifecycle",
    "install_templates",
    "load_templates",
    "upsert",
    "upsert_alert",
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

    :raises RuntimeError: ``wanted`` names a mechanism the server does not run.
    """
    if wanted == "none":
        return "none", "elasticsearch.lifecycle is none: events are kept until deleted"
    if wanted in ("dsl", "ilm"):
        if not (dsl if wanted == "dsl" else ilm):
            name = "data stream lifecycle" if wanted == "dsl" else "ILM"
            raise RuntimeError(f"elasticsearch.lifecycle is {wanted}, but this server does not "
                               f"run {name}; set it to auto or none")  # fmt: skip
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

    :raises RuntimeError: the server is not 8.x or 9.x, or lacks the lifecycle asked for.
    """
    version = _server_version(client)
    if version.split(".")[0] not in ("8", "9"):
        raise RuntimeError(f"Elasticsearch {version} is not supported: segwatch needs 8.x or 9.x")
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


@dataclass
class BulkResult:
    """Per flush: written (incl. already there), rejected (doc id, reason) for the DLQ."""

    written: int = 0
    duplicates: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    attempts: int = 0


@dataclass
class EventsSink:
    """Buffers documents and writes them with the bulk API; retries until acknowledged."""

    client: Elasticsearch
    target: str = EVENTS_STREAM
    batch_size: int = 2000
    max_backoff: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    buffer: list[tuple[str, dict[str, Any] | bytes]] = field(default_factory=list)

    def add(self, doc_id: str, document: dict[str, Any] | bytes) -> BulkResult | None:
        """Queue one document; flushes (and returns the result) when the batch is full."""
        self.buffer.append((doc_id, document))
        return self.flush() if len(self.buffer) >= self.batch_size else None

    def flush(self) -> BulkResult:
        """Write everything queued; returns only when every item is written or rejected."""
        result = BulkResult()
        pending = self.buffer
        self.buffer = []
        delay = 0.5
        while pending:
            result.attempts += 1
            lines: list[bytes] = []  # NDJSON by orjson: the client's own JSON is far slower
            for doc_id, document in pending:
                lines.append(orjson.dumps({"create": {"_index": self.target, "_id": doc_id}}))
                lines.append(document if isinstance(document, bytes) else orjson.dumps(document))
            try:
                response = self.client.bulk(
                    operations=b"\n".join(lines) + b"\n",  # type: ignore[arg-type]
                    refresh=False,
                    filter_path="errors,items.*.status,items.*.error",
                )
            except (TransportError, ApiError) as exc:
                status = getattr(exc, "status_code", None)
                if (
                    isinstance(exc, ApiError)
                    and status is not None
                    and status < 500
                    and status != 429
                ):
                    raise  # a request-level refusal (auth, bad target): not the documents' fault
                self.sleep(random.uniform(0, delay))
                delay = min(delay * 2, self.max_backoff)
                continue
            retry: list[tuple[str, dict[str, Any] | bytes]] = []
            for (doc_id, document), item in zip(pending, response["items"], strict=True):
                outcome = item["create"]
                status = outcome.get("status", 500)
                if status in (200, 201):
                    result.written += 1
                elif status == 409:  # written before: a replay
                    result.written += 1
                    result.duplicates += 1
                elif status == 429 or status >= 500:
                    retry.append((doc_id, document))
                else:
                    error = outcome.get("error", {})
                    reason = f"{error.get('type', status)}: {error.get('reason', '')}"
                    cause = error.get("caused_by", {}).get("reason")
                    result.rejected.append((doc_id, reason + (f" ({cause})" if cause else "")))
            pending = retry
            if pending:
                self.sleep(random.uniform(0, delay))
                delay = min(delay * 2, self.max_backoff)
        return result


def upsert_alert(
    client: Elasticsearch,
    document: dict[str, Any],
    index: str = ALERTS_INDEX,
    sleep: Callable[[float], None] = time.sleep,
    max_backoff: float = 30.0,
) -> None:
    """Write an alert by fingerprint (the latest state replaces the older one); retries
    with backoff while the node is unreachable or busy, so no alert is dropped."""
    upsert(client, index, document["segwatch"]["alert"]["fingerprint"], document, sleep,
           max_backoff)  # fmt: skip


def upsert(
    client: Elasticsearch,
    index: str,
    doc_id: str,
    document: dict[str, Any],
    sleep: Callable[[float], None] = time.sleep,
    max_backoff: float = 30.0,
) -> None:
    """Write a document by id (an alert by fingerprint, an incident by its id: the latest
    state replaces the older one); retries with backoff while the node is unreachable or
    busy. A refusal for the document itself (4xx but 429) is raised."""
    delay = 0.5
    while True:
        try:
            client.index(index=index, id=doc_id, document=document)
            return
        except (TransportError, ApiError) as exc:
            status = getattr(exc, "status_code", None)
            if isinstance(exc, ApiError) and status is not None and status < 500 and status != 429:
                raise
            sleep(random.uniform(0, delay))
            delay = min(delay * 2, max_backoff)
