"""What every detector shares: the per-event context, evidence, settings.

Detectors are plain objects over explicit state: ``observe(ctx)`` returns
evidence, ``state()`` returns JSON-ready data and ``load(state)`` restores it,
so the stream app can keep the state in changelogged tables and a restarted
worker resumes where the last one stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from detector.events import event_time
from detector.model.compile import Placement

__all__ = ["Context", "Detector", "DetectorSettings", "Evidence", "event_time"]


class DetectorSettings(BaseModel):
    """Tuning for every detector (README "Detectors"); file and environment via streams.settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    learning_seconds: int = Field(
        default=86_400, description="No anomaly alerts before this much traffic time."
    )
    well_known_ports: tuple[int, ...] = (
        22,
        25,
        53,
        80,
        123,
        389,
        443,
        445,
        636,
        3389,
        5432,
        8080,
        8443,
    )
    rare_port_threshold: float = Field(
        default=0.001, description="Share of a zone's traffic below which a port is rare."
    )
    rare_port_min_flows: int = Field(
        default=500, description="Flows a zone must have had before its ports are judged."
    )
    path_ttl_seconds: int = Field(
        default=30 * 86_400, description="A path unseen this long is new again."
    )
    max_paths: int = Field(
        default=1_000_000, description="Paths remembered at most (oldest forgotten first)."
    )
    offhours_min_share: float = Field(
        default=0.002,
        description="Share of a source zone's traffic in an hour of the week below which "
        "that hour is unusual for it.",
    )
    scan_window_seconds: int = 60
    vertical_scan_ports: int = Field(
        default=25, description="Distinct ports on one host within the window."
    )
    horizontal_scan_hosts: int = Field(
        default=25, description="Distinct hosts on one port within the window."
    )
    slow_scan_window_seconds: int = 6 * 3600
    slow_scan_hosts: int = Field(
        default=40, description="Distinct hosts on one port within the slow window."
    )
    deny_burst: int = Field(
        default=30, description="Denied flows from one source within the window."
    )
    pivot_zones: int = Field(
        default=3, description="Zones a source opens new paths into within the slow window."
    )
    bulk_bytes: int = Field(
        default=50_000_000, description="Bytes in one flow that count as a bulk transfer."
    )
    alert_score: int = Field(
        default=60, ge=0, le=100, description="Events at or above this risk raise an alert."
    )
    suppress_seconds: int = Field(
        default=3600, description="Repeats of an alert within this are counted, not sent again."
    )
    max_sources: int = Field(default=200_000, description="Sources with scan windows kept at most.")


@dataclass(frozen=True)
class Evidence:
    """Why an event is suspicious: ``score`` 0-100 and a reason with its numbers.

    ``key`` says what the finding is about (``port/4444``, ``scan/vertical``) and
    goes into the alert's fingerprint.
    """

    detector: str
    score: int
    reason: str
    key: str


@dataclass(slots=True)
class Context:
    """One placed event, with the fields every detector reads, extracted once."""

    event: dict[str, Any]
    placement: Placement
    time: float
    src_ip: str
    dst_ip: str
    port: int | None
    transport: str
    denied: bool
    bytes: int
    reply: bool

    @classmethod
    def of(cls, event: dict[str, Any], placement: Placement) -> Context:
        """The connection as initiated: for a reply record the record's destination is
        the initiator (``src_ip``) and its source port the service (``port``)."""
        source = event.get("source") or {}
        destination = event.get("destination") or {}
        network = event.get("network") or {}
        types = (event.get("event") or {}).get("type") or ()
        reply = placement.initiator == "destination"
        if reply:
            source, destination = destination, source
        return cls(
            event,
            placement,
            event_time(event),
            source.get("ip") or "",
            destination.get("ip") or "",
            destination.get("port"),
            network.get("transport") or "",
            "denied" in types,
            network.get("bytes") or 0,
            reply,
        )

    @property
    def src_zone(self) -> str:
        return self.placement.source_zone or "(none)"

    @property
    def dst_zone(self) -> str:
        return self.placement.destination_zone or "(none)"


class Detector(Protocol):
    """A stateful detector."""

    name: str

    def observe(self, ctx: Context) -> list[Evidence]: ...

    def state(self) -> dict[str, Any]: ...

    def load(self, state: dict[str, Any]) -> None: ...
