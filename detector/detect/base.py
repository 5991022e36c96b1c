"""What every detector shares: the per-event context, evidence, settings.

Detectors are plain objects over explicit state: ``observe(ctx)`` returns
evidence, ``state()`` returns JSON-ready data and ``load(state)`` restores it,
so the stream app can keep the state in changelogged tables and a restarted
worker resumes where the last one stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from detector.connection import ServerPorts, keep_latest
from detector.events import event_time
from detector.model.compile import Placement

__all__ = [
    "ADMIN_PORTS",
    "Context",
    "Contribution",
    "Detector",
    "DetectorSettings",
    "Evidence",
    "Learning",
    "ZoneMemory",
    "day",
    "event_time",
    "span",
]

# administrative services lateral movement uses: SSH, Telnet, RPC endpoint mapper (WMI,
# DCOM), NetBIOS session, SMB, RDP, VNC, WinRM (HTTP, HTTPS)
ADMIN_PORTS = frozenset({22, 23, 135, 139, 445, 3389, 5900, 5985, 5986})


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
    scan_window_seconds: int = Field(
        default=60, description="The fast window of horizontal sweeps and denied bursts."
    )
    vertical_scan_ports: int = Field(
        default=20,
        description="Distinct ports (below 32768) on one host within the slow window: a "
        "vertical scan, at any rate.",
    )
    horizontal_scan_hosts: int = Field(
        default=25, description="Distinct hosts on one port within the fast window."
    )
    slow_scan_window_seconds: int = Field(
        default=6 * 3600, description="The sliding window of vertical scans and slow sweeps."
    )
    slow_scan_hosts: int = Field(
        default=40, description="Distinct hosts on one port within the slow window."
    )
    deny_burst: int = Field(
        default=30, description="Denied flows from one source within the fast window."
    )
    blocked_series: int = Field(
        default=10,
        description="Blocked attempts from one source into high or restricted zones within "
        "the blocked window.",
    )
    blocked_window_seconds: int = 900
    lateral_hosts: int = Field(
        default=10,
        description="Hosts of its own zone one source reaches on administrative services "
        "within the lateral window.",
    )
    lateral_window_seconds: int = 1800
    dns_outside_flows: int = Field(
        default=100,
        description="DNS flows from one host to resolvers outside the model's DNS zone "
        "within the DNS window.",
    )
    dns_outside_bytes: int = Field(
        default=2_000_000,
        description="Bytes of DNS from one host to resolvers outside the model's DNS zone "
        "within the DNS window.",
    )
    dns_window_seconds: int = 600
    pivot_zones: int = Field(
        default=3, description="Zones a source opens new paths into within the slow window."
    )
    bulk_bytes: int = Field(
        default=50_000_000, description="Bytes in one flow that count as a bulk transfer."
    )
    alert_score: int = Field(
        default=60, ge=0, le=100, description="Events at or above this risk raise an alert."
    )
    alert_update_seconds: int = Field(
        default=60,
        ge=0,
        description="An open alert's changes are sent at most this often (event time); "
        "pages are the incidents'.",
    )
    max_sources: int = Field(default=200_000, description="Sources with scan windows kept at most.")


def day(seconds: float) -> str:
    """``2026-11-25``, UTC."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")


def span(seconds: float) -> str:
    """A readable length of time: ``40 s``, ``12 min``, ``3.5 h``, ``14 days``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86_400:
        hours = seconds / 3600
        return f"{hours:.1f} h" if hours < 10 else f"{hours:.0f} h"
    return f"{seconds / 86_400:.0f} days"


Counts = dict[str, dict[int, int]]  # zone -> port -> flows
Profiles = dict[str, list[int]]  # zone -> 168 hour-of-week counts + total
Contribution = tuple[Counts, dict[str, int], Profiles]  # one partition's own counts


class ZoneMemory:
    """What the detectors learn about zones, services and servers rather than about one
    initiator: when each detector's learning began, the destination ports seen per
    zone, the source zones' hour-of-week profiles, the paths seen (and the journal of
    their changes, when one is kept) and the ports servers answer from.

    The score stage keys events by the connection's initiator, so one zone's traffic
    spreads over partitions, one engine each. All the engines of a process share one
    ZoneMemory: each judges against everything the process has seen, as a single
    engine over all of it would.

    The port and hour counts are the sum of every partition's own counts (each engine
    keeps its partition's, and snapshots them): the partitions scored here, and the
    others' as their workers last snapshotted them (:meth:`remote`), so every worker
    judges from the counts of the whole stream. Paths keep their latest sighting,
    learning starts the earliest, server ports the latest: merging a copy twice
    changes nothing.
    """

    def __init__(self) -> None:
        self.started: dict[str, float] = {}  # detector name -> first event time
        self.port_counts: Counts = {}  # destination zone -> port -> flows
        self.port_totals: dict[str, int] = {}
        self.profiles: Profiles = {}  # source zone -> 168 hour counts + total
        self.paths: dict[int, int] = {}  # path hash -> last seen second
        # when not None, path changes worth persisting: hash -> last seen, None once forgotten
        self.journal: dict[int, int | None] | None = None
        self.server_ports = ServerPorts()
        self._remote: dict[int, Contribution] = {}  # partition scored elsewhere -> its counts

    def merge_paths(self, seen: dict[int, int]) -> None:
        """Paths seen elsewhere (a restored partition, another worker), with their last
        sighting: kept unless known with a later one. Not journalled: they are stored."""
        keep_latest(self.paths, seen)

    def add(self, counts: Counts, totals: dict[str, int], profiles: Profiles,
            sign: int = 1) -> None:  # fmt: skip
        """Add (``sign`` -1: take away) one partition's own counts to the sums."""
        mine = self.port_counts
        for zone, ports in counts.items():
            into = mine.setdefault(zone, {})
            for port, n in ports.items():
                into[port] = into.get(port, 0) + sign * n
        for zone, n in totals.items():
            self.port_totals[zone] = self.port_totals.get(zone, 0) + sign * n
        for zone, hours in profiles.items():
            have = self.profiles.get(zone)
            if have is None:
                have = self.profiles[zone] = [0] * 169
            for slot, n in enumerate(hours):
                have[slot] += sign * n

    def remote(self, partition: int, found: Contribution | None) -> None:
        """``partition``'s counts as its worker last snapshotted them (None: forget
        them, e.g. because the partition is scored here now and counts for itself)."""
        old = self._remote.pop(partition, None)
        if old is not None:
            self.add(*old, sign=-1)
        if found is not None:
            self.add(*found)
            self._remote[partition] = found

    def merge_started(self, starts: dict[str, float]) -> None:
        """Learning starts seen elsewhere: the earliest of each detector's wins."""
        for name, when in starts.items():
            if when < self.started.get(name, when + 1):
                self.started[name] = when

    def handed_over(self, partition: int, own: Contribution) -> None:
        """A partition scored here until now: its counts (already in the sums) stay as
        the last known of it until its next worker snapshots it."""
        self._remote[partition] = own


class Learning:
    """Knows when the learning period (counted from the first event seen) is over.

    Every detector stays quiet until then: it learns what is usual and reports nothing.
    The start is kept in the :class:`ZoneMemory` (one clock per detector for all the
    engines sharing it).
    """

    name: str

    def __init__(self, settings: DetectorSettings, memory: ZoneMemory | None = None) -> None:
        self.settings = settings
        self.memory = memory if memory is not None else ZoneMemory()
        self._clock = self.memory.started

    @property
    def started(self) -> float | None:
        return self._clock.get(self.name)

    @started.setter
    def started(self, when: float | None) -> None:
        """Restore a start: the earliest one known wins (snapshots of several partitions
        may be restored into one memory)."""
        if when is not None:
            self.memory.merge_started({self.name: when})

    def learning(self, now: float) -> bool:
        started = self._clock.get(self.name)
        if started is None:
            started = self._clock[self.name] = now
        return now - started < self.settings.learning_seconds


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
