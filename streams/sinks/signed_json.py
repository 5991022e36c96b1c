"""Signed JSON (kind ``json``): every page, the whole incident document with
``segwatch.page`` (``action``, ``why``, ``id``: the delivery id, also in
``X-Segwatch-Delivery``), signed per attempt (a fresh timestamp) with
:func:`streams.webhooks.sign`."""

from __future__ import annotations

from typing import Any

import orjson

from streams.sinks.base import register
from streams.sinks.http import WebhookSink
from streams.webhooks import DELIVERY_HEADER, sign

__all__ = ["SignedJsonSink", "signed_body"]


def signed_body(page: dict[str, Any], delivery: str) -> bytes:
    """The incident document with the page (what it is, why, its delivery id)."""
    document = page["doc"]
    meta = {"action": page["action"], "why": page.get("why", ""), "id": delivery}
    return orjson.dumps({**document, "segwatch": {**document.get("segwatch", {}), "page": meta}})


@register("json")
class SignedJsonSink(WebhookSink):
    def encode(self, page: dict[str, Any], delivery: str) -> tuple[bytes, dict[str, str]]:
        body = signed_body(page, delivery)
        headers = {"Content-Type": "application/json", "User-Agent": "segwatch",
                   DELIVERY_HEADER: delivery, **sign(self.target.secret_value(), body)}  # fmt: skip
        return body, headers
