"""Elasticsearch documents by id: alerts by fingerprint, incidents by their id (kind
``elasticsearch-docs``). The latest state replaces the older one; within a batch
only each id's last version is sent."""

from __future__ import annotations

from collections.abc import Sequence

from streams.sinks.base import Item, Written, register
from streams.sinks.bulk import BulkSink

__all__ = ["DocumentsSink"]


@register("elasticsearch-docs")
class DocumentsSink(BulkSink):
    """Upserts (``index`` by id) into a regular index."""

    op = "index"

    def write(self, items: Sequence[Item]) -> Written:
        latest = {item.id: item for item in items}  # a later version of an id wins
        return super().write(list(latest.values()))
