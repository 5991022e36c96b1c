"""The public schema of a normalized flow event (ECS plus provider namespaces).

Parsers build plain dicts on the hot path (a model per record costs too much
there, see ``make bench``); :class:`FlowEventModel` states the same shape once,
for validation at the edges, in tests, and for the documentation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress

from detector.definitions import FAMILIES

__all__ = [
    "Endpoint",
    "EventFields",
    "FlowEventModel",
    "NetworkFields",
    "event_time",
    "is_flow",
    "iso_ms",
    "parse_stamp",
    "validate_event",
]

Port = int  # declared with bounds on the fields below
_DATASETS = tuple(f"segwatch.{f}" for f in FAMILIES)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class EventFields(_Open):
    """``event.*``."""

    kind: Literal["event", "alert", "state"]
    category: list[Literal["network"]]
    type: list[Literal["connection", "allowed", "denied", "info"]]
    outcome: Literal["success", "failure", "unknown"] | None = None
    dataset: str = Field(pattern=r"^segwatch\.[a-z]+$")
    start: str
    end: str
    action: str | None = None
    reason: str | None = None
    original: str | None = None


class Kubernetes(_Open):
    """``source.kubernetes`` / ``destination.kubernetes`` (segwatch's extension)."""

    namespace: str | None = None
    workload: str | None = None
    labels: dict[str, str] = {}
    namespace_labels: dict[str, str] = {}


class Endpoint(_Open):
    """``source`` / ``destination``."""

    ip: IPvAnyAddress | None = None
    address: str | None = None
    port: int | None = Field(default=None, ge=0, le=65535)
    bytes: int | None = Field(default=None, ge=0)
    packets: int | None = Field(default=None, ge=0)
    mac: str | None = Field(default=None, pattern=r"^([0-9A-F]{2}-){5}[0-9A-F]{2}$")
    kubernetes: Kubernetes | None = None


class NetworkFields(_Open):
    """``network.*``."""

    transport: str | None = None
    iana_number: str | None = Field(default=None, pattern=r"^\d{1,3}$")
    type: Literal["ipv4", "ipv6"] | None = None
    bytes: int | None = Field(default=None, ge=0)
    packets: int | None = Field(default=None, ge=0)
    community_id: str | None = Field(default=None, pattern=r"^1:[A-Za-z0-9+/]{27}=$")
    direction: Literal["ingress", "egress", "inbound", "outbound", "internal", "external",
                       "unknown"] | None = None  # fmt: skip


class FlowEventModel(_Open):
    """One normalized flow event."""

    timestamp: str = Field(alias="@timestamp", pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
    event: EventFields
    source: Endpoint | None = None
    destination: Endpoint | None = None
    network: NetworkFields | None = None
    related: dict[str, list[str]] | None = None


def is_flow(event: dict[str, Any]) -> bool:
    """Whether an event is a flow (to place and score), not a state record such as a VPC
    ``NODATA`` interval (``event.kind: state``)."""
    head = event.get("event")
    return not isinstance(head, dict) or head.get("kind", "event") == "event"


def validate_event(event: dict[str, Any]) -> FlowEventModel:
    """Validate a parser's dict against the schema.

    :raises pydantic.ValidationError: the event does not have the public shape.
    """
    model = FlowEventModel.model_validate(event)
    if model.event.dataset not in _DATASETS:
        raise ValueError(f"unknown dataset {model.event.dataset}")
    return model


_STAMPS: dict[str, float] = {}


def parse_stamp(text: str) -> float:
    """Epoch seconds of an ISO 8601 stamp as segwatch writes them (``...Z``).

    :raises ValueError: not such a stamp.
    """
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def iso_ms(seconds: float) -> str:
    """``2026-11-25T10:00:00.123Z``: epoch seconds as the documents carry them."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event_time(event: dict[str, Any]) -> float:
    """``@timestamp`` as epoch seconds (0 if absent or unreadable); cached per stamp."""
    stamp = event.get("@timestamp")
    when = _STAMPS.get(stamp) if isinstance(stamp, str) else 0.0
    if when is not None:
        return when
    assert isinstance(stamp, str)
    try:
        when = parse_stamp(stamp)
    except ValueError:
        return 0.0
    if len(_STAMPS) > 100_000:
        _STAMPS.clear()
    _STAMPS[stamp] = when
    return when
