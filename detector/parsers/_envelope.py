"""Wrappers around flow-log lines: JSON ``{"message": ...}`` documents (Filebeat,
Elastic Agent, Vector, Fluent Bit), journald's JSON export, and the CloudWatch
Logs subscription envelope, plain or gzip-compressed and base64-encoded as
Kinesis Data Firehose delivers it.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from detector.parsers._common import parse_rfc3339

__all__ = ["Inner", "decompress", "looks_compressed", "unwrap_json"]


@dataclass(frozen=True)
class Inner:
    """One record found inside an envelope, with what the envelope says about it."""

    text: str
    timestamp: datetime | None = None
    host: str | None = None
    account_id: str | None = None
    where: str | None = None  # its place in the envelope (``logEvents[3]``), for errors


class EnvelopeError(Exception):
    """The wrapper itself is broken (bad base64, bad gzip, bad JSON shape)."""


def looks_compressed(data: bytes) -> bool:
    """gzip bytes, or base64 text of gzip bytes (``H4sI`` is base64 of the gzip magic)."""
    return data[:2] == b"\x1f\x8b" or data[:4] == b"H4sI"


def decompress(data: bytes, limit: int) -> bytes:
    """gunzip (after base64-decoding if needed), refusing output over ``limit`` bytes."""
    if data[:4] == b"H4sI":
        try:
            data = base64.b64decode(data.strip(), validate=True)
        except binascii.Error as exc:
            raise EnvelopeError(f"not valid base64: {exc}") from None
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise EnvelopeError(f"not valid gzip: {exc}") from None
    if len(out) > limit:
        raise EnvelopeError(f"decompresses to over {limit} bytes (max_envelope_bytes)")
    if not inflater.eof:
        raise EnvelopeError("gzip stream is truncated")
    return out


def unwrap_json(doc: Any) -> list[Inner] | None:
    """The records inside a JSON envelope, or None if ``doc`` is not one.

    - CloudWatch Logs subscription: ``{"messageType": "DATA_MESSAGE", "owner",
      "logGroup", "logStream", "logEvents": [{"timestamp": ms, "message"}]}``;
      a ``CONTROL_MESSAGE`` holds no records (an empty list).
    - ``{"message": "...", "@timestamp"?, "host": {"hostname"}?}`` (shippers).
    - journald export: ``{"MESSAGE": "...", "__REALTIME_TIMESTAMP": µs, "_HOSTNAME"}``.
    """
    if not isinstance(doc, dict):
        return None
    if "logEvents" in doc:
        if doc.get("messageType") == "CONTROL_MESSAGE":
            return []
        events = doc["logEvents"]
        if not isinstance(events, list):
            raise EnvelopeError("logEvents is not a list")
        owner = _str(doc.get("owner"))
        inners = []
        for i, item in enumerate(events):
            if not isinstance(item, dict) or not isinstance(item.get("message"), str):
                raise EnvelopeError(f"logEvents[{i}] has no string 'message'")
            inners.append(
                Inner(
                    item["message"],
                    _from_millis(item.get("timestamp")),
                    account_id=owner,
                    where=f"logEvents[{i}]",
                )
            )
        return inners
    message = doc.get("message")
    if isinstance(message, str):
        host = doc.get("host")
        hostname = (
            _str(host.get("hostname") or host.get("name")) if isinstance(host, dict) else None
        )
        ts = _from_iso(doc.get("@timestamp"))
        if ts is None:
            event = doc.get("event")
            ts = _from_iso(event.get("created")) if isinstance(event, dict) else None
        return [Inner(message, ts, host=hostname)]
    message = doc.get("MESSAGE")
    if isinstance(message, str):
        micros = doc.get("__REALTIME_TIMESTAMP")
        ts = None
        if isinstance(micros, str) and micros.isdigit():
            ts = datetime.fromtimestamp(int(micros) / 1e6, UTC)
        return [Inner(message, ts, host=_str(doc.get("_HOSTNAME")))]
    return None


def loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"not valid JSON: {exc}") from None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _from_millis(value: object) -> datetime | None:
    if isinstance(value, int) and 0 <= value < 253402300799000:
        return datetime.fromtimestamp(value / 1000, UTC)
    return None


def _from_iso(value: object) -> datetime | None:
    return parse_rfc3339(value) if isinstance(value, str) and value else None
