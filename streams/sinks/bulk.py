"""Elasticsearch bulk: the events data streams (kind ``elasticsearch-events``), each item
into its own stream (:attr:`Item.index`) or the sink's.

Each item's body is the document's raw JSON; it is written with ``op_type:
create`` and its id (derived from the source record's topic/partition/offset),
so a replay meets the document already there (409) and counts it as written:
nothing is duplicated. Per item, 429 and 5xx are tried again; any other refusal
(a mapping error) hands the item back with Elasticsearch's reason, for the
dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from elasticsearch import Elasticsearch

from streams.errors import Refused, status_class
from streams.sinks.base import Item, Sink, Written, register

__all__ = ["BulkSink", "EventsSink"]


class BulkSink(Sink):
    """One ``_bulk`` request per attempt, with operation ``op`` into ``index``."""

    op = "create"

    def __init__(self, client: Elasticsearch, index: str, name: str | None = None) -> None:
        self.client, self.index = client, index
        self.name = name or index
        self.dependency = "elasticsearch"

    def write(self, items: Sequence[Item]) -> Written:
        lines: list[bytes] = []  # NDJSON by orjson: the client's own JSON is far slower
        for item in items:
            action = {"_index": item.index or self.index, "_id": item.id}
            lines.append(orjson.dumps({self.op: action}))
            lines.append(item.body if isinstance(item.body, bytes) else orjson.dumps(item.body))
        response = self.client.bulk(
            operations=b"\n".join(lines) + b"\n",  # type: ignore[arg-type]
            refresh=False,
            filter_path="errors,items.*.status,items.*.error",
        )
        written = Written()
        for item, outcome in zip(items, response.get("items", []), strict=True):
            result = next(iter(outcome.values()))
            status = int(result.get("status", 500))
            verdict = status_class(status)
            if verdict is None:
                continue
            error = result.get("error", {})
            reason = f"{error.get('type', status)}: {error.get('reason', '')}"
            cause = error.get("caused_by", {}).get("reason")
            reason += f" ({cause})" if cause else ""
            if verdict is Refused:
                written.refused.append((item, f"Elasticsearch refused the document: {reason}"))
            else:
                written.again.append(item)
                written.reason = f"{len(written.again)} document(s) not taken: {reason}"
        return written

    def close(self) -> None:
        self.client.close()


@register("elasticsearch-events")
class EventsSink(BulkSink):
    """Events into the data stream, each once."""

    op = "create"
