"""Elasticsearch documents by id: alerts by fingerprint, incidents by their id (kind
``elasticsearch-docs``). The latest state replaces the older one; within a batch
only each id's last version is sent. A document's ``data_stream`` says where it is
written: an index named by Elastic's scheme (``logs-segwatch.alerts-prod``) sets it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson
from elasticsearch import Elasticsearch

from streams.sinks.base import Item, Written, register
from streams.sinks.bulk import BulkSink

_SCHEME = re.compile(r"^(?P<type>[a-z]+)-(?P<dataset>[a-z0-9_.]+)-(?P<namespace>[a-z0-9_]+)$")

__all__ = ["DocumentsSink"]


@register("elasticsearch-docs")
class DocumentsSink(BulkSink):
    """Upserts (``index`` by id) into a regular index."""

    op = "index"

    def __init__(self, client: Elasticsearch, index: str, name: str | None = None) -> None:
        super().__init__(client, index, name)
        m = _SCHEME.match(index)
        self.stream: dict[str, str] | None = m.groupdict() if m else None

    def write(self, items: Sequence[Item]) -> Written:
        latest = {item.id: item for item in items}  # a later version of an id wins
        return super().write([self._placed(item) for item in latest.values()])

    def _placed(self, item: Item) -> Item:
        """The item with the ``data_stream`` of this index, if it says another."""
        if self.stream is None:
            return item
        body: Any = item.body
        doc = orjson.loads(body) if isinstance(body, bytes) else body
        if not isinstance(doc, dict) or doc.get("data_stream") == self.stream:
            return item
        return replace(item, body={**doc, "data_stream": self.stream})
