"""The anomaly detectors on services and time: odd ports, off-hours, new paths (and
pivoting), bulk transfers. Scans and blocked series are in ``scans``, lateral
movement and DNS in ``lateral``.

Each keeps bounded, serialisable state and returns :class:`Evidence` with the
numbers that made it suspicious. None of them raises an alert by itself: the
scorer weighs their evidence with the verdict and the zones' sensitivity.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from detector.detect.base import (
    Context,
    DetectorSettings,
    Evidence,
    Learning,
    ZoneMemory,
    day,
    span,
)
from detector.model.compile import CompiledModel
from detector.model.schema import WEEKDAYS, BusinessHours

__all__ = [
    "NewPathDetector",
    "OddPortDetector",
    "OffHoursDetector",
    "VolumeDetector",
    "hour_profiles",
    "port_counts",
]


def port_counts(state: dict[str, Any]) -> tuple[dict[str, dict[int, int]], dict[str, int]]:
    """(counts, totals) of an :class:`OddPortDetector` state (JSON: ports as text)."""
    counts = {z: {int(p): n for p, n in c.items()} for z, c in state["counts"].items()}
    return counts, dict(state["totals"])


def hour_profiles(state: dict[str, Any]) -> dict[str, list[int]]:
    """The profiles of an :class:`OffHoursDetector` state."""
    return {z: list(p) for z, p in state["profiles"].items()}


class OddPortDetector(Learning):
    """How rare a destination port is for the destination zone, learned from traffic.

    A port never seen for the zone (once it has had ``rare_port_min_flows``) is
    odd; a seen one is rare when its share of the zone's flows, smoothed
    (+1 / +100), is under ``rare_port_threshold``. Ports in ``well_known_ports``
    are never odd.
    """

    name = "odd_port"

    def __init__(self, settings: DetectorSettings, memory: ZoneMemory | None = None) -> None:
        super().__init__(settings, memory)
        self.counts = self.memory.port_counts  # every partition's (judged by)
        self.totals = self.memory.port_totals
        self.own_counts: dict[str, dict[int, int]] = {}  # this partition's (snapshotted)
        self.own_totals: dict[str, int] = {}
        self.well_known = frozenset(settings.well_known_ports)

    def observe(self, ctx: Context) -> list[Evidence]:
        port = ctx.port
        if port is None or ctx.denied or ctx.reply:
            return []
        zone = ctx.dst_zone
        ports = self.counts.setdefault(zone, {})
        seen = ports.get(port, 0)
        total = self.totals.get(zone, 0)
        ports[port] = seen + 1
        self.totals[zone] = total + 1
        own = self.own_counts.get(zone)
        if own is None:
            own = self.own_counts[zone] = {}
        own[port] = own.get(port, 0) + 1
        self.own_totals[zone] = self.own_totals.get(zone, 0) + 1
        if (
            self.learning(ctx.time)
            or port in self.well_known
            or total < self.settings.rare_port_min_flows
        ):
            return []
        share = (seen + 1) / (total + 100)  # smoothed: a zone with little traffic judges softly
        if seen and share >= self.settings.rare_port_threshold:
            return []
        assert self.started is not None
        since = span(ctx.time - self.started)
        if seen == 0:
            reason = f"port {port} never seen for zone {zone} in {since} ({total:,} flows)"
            return [Evidence(self.name, 50, reason, f"port/{port}")]
        reason = (
            f"port {port} rare for zone {zone}: {seen} of {total:,} flows in {since} "
            f"({100 * seen / total:.3f}%)"
        )
        return [Evidence(self.name, 30, reason, f"port/{port}")]

    def state(self) -> dict[str, Any]:
        """This partition's own counts (the memory sums every partition's)."""
        return {"started": self.started, "counts": self.own_counts, "totals": self.own_totals}

    def load(self, state: dict[str, Any], share: bool = True) -> None:
        """This partition's counts, added to the memory's sums unless ``share`` is
        False (they are there already: the same partition under a new model)."""
        self.started = state["started"]
        self.own_counts, self.own_totals = port_counts(state)
        if share:
            self.memory.add(self.own_counts, self.own_totals, {})


class OffHoursDetector(Learning):
    """Traffic outside the declared business hours of the zones involved, in an hour
    of the week the source zone is rarely active in (its learned profile)."""

    name = "off_hours"

    def __init__(
        self, settings: DetectorSettings, model: CompiledModel, memory: ZoneMemory | None = None
    ) -> None:
        super().__init__(settings, memory)
        self.hours: dict[str, tuple[BusinessHours, ZoneInfo]] = {
            name: (zone.hours, ZoneInfo(zone.hours.timezone))
            for name, zone in model.zones.items()
            if zone.hours is not None
        }
        self.profiles = self.memory.profiles  # zone -> 168 hour-of-week counts + total
        self.own: dict[str, list[int]] = {}  # this partition's (the memory sums them all)

    def observe(self, ctx: Context) -> list[Evidence]:
        when = ctx.time
        profile = self.profiles.get(ctx.src_zone)
        if profile is None:
            profile = self.profiles[ctx.src_zone] = [0] * 169
        slot = int((when // 3600 + 72) % 168)  # hour of the week, UTC, Monday 00:00 = 0
        usual = profile[slot]
        total = profile[168]
        profile[slot] = usual + 1
        profile[168] = total + 1
        own = self.own.get(ctx.src_zone)
        if own is None:
            own = self.own[ctx.src_zone] = [0] * 169
        own[slot] += 1
        own[168] += 1
        if self.learning(when) or not self.hours:
            return []
        share = usual / total if total else 0.0
        if share >= self.settings.offhours_min_share:
            return []  # an hour the source usually works in (checked first: it is cheap)
        outside = self._outside(ctx)
        if outside is None:
            return []
        local, zone, hours = outside
        days = f"{hours.days[0]}-{hours.days[-1]}" if len(hours.days) > 1 else hours.days[0]
        reason = (
            f"{local:%H:%M} local ({hours.timezone}), zone {zone} hours "
            f"{hours.start:%H:%M}-{hours.end:%H:%M} {days}; {100 * share:.2f}% of zone "
            f"{ctx.src_zone}'s traffic falls in this hour of the week"
        )
        return [Evidence(self.name, 45, reason, "off_hours")]

    def unusual_hour(self, ctx: Context) -> bool:
        """The event falls outside the declared business hours of its zones, or in an
        hour of the week its source zone is rarely active in (once the zone's profile
        holds a thousand flows). Other detectors weigh their findings up with it."""
        if self.hours and self._outside(ctx) is not None:
            return True
        profile = self.profiles.get(ctx.src_zone)
        if profile is None or profile[168] < 1000:
            return False
        slot = int((ctx.time // 3600 + 72) % 168)
        return profile[slot] / profile[168] < self.settings.offhours_min_share

    def _outside(self, ctx: Context) -> tuple[datetime, str, BusinessHours] | None:
        for zone in (ctx.dst_zone, ctx.src_zone):
            declared = self.hours.get(zone)
            if declared is None:
                continue
            hours, tz = declared
            local = datetime.fromtimestamp(ctx.time, tz)
            weekday = WEEKDAYS[local.weekday()]
            inside = (
                weekday in hours.days
                and local.date() not in hours.holidays
                and hours.start <= local.time() < hours.end
            )
            if not inside:
                return local, zone, hours
        return None

    def state(self) -> dict[str, Any]:
        """This partition's own profiles (the memory sums every partition's)."""
        return {"started": self.started, "profiles": self.own}

    def load(self, state: dict[str, Any], share: bool = True) -> None:
        """As :meth:`OddPortDetector.load`."""
        self.started = state["started"]
        self.own = hour_profiles(state)
        if share:
            self.memory.add({}, {}, self.own)


_JOURNAL_SECONDS = 3600  # a known path's last-seen time is journalled at most hourly


class NewPathDetector(Learning):
    """The first time a (source zone -> destination zone, service) path is seen after
    the learning period, and sources opening new paths into several zones (pivoting).

    Paths are stored as 64-bit hashes with their last-seen second: bounded by
    ``max_paths`` (the least recently seen are forgotten first) and expiring after
    ``path_ttl_seconds``.
    """

    name = "new_path"

    def __init__(self, settings: DetectorSettings, memory: ZoneMemory | None = None) -> None:
        super().__init__(settings, memory)
        self._keys: dict[tuple[str, str, str], int] = {}  # recent paths' hashes (a cache)
        self.pivots: dict[str, list[Any]] = {}  # source ip -> [window start, {zone: first}]

    @property
    def paths(self) -> dict[int, int]:
        """Path hash -> last seen second (in the shared memory)."""
        return self.memory.paths

    @paths.setter
    def paths(self, paths: dict[int, int]) -> None:
        self.memory.paths = paths

    @property
    def journal(self) -> dict[int, int | None] | None:
        """Path changes worth persisting, when kept (``ZoneMemory.journal``)."""
        return self.memory.journal

    @journal.setter
    def journal(self, journal: dict[int, int | None] | None) -> None:
        self.memory.journal = journal

    @staticmethod
    def path_key(src: str, dst: str, service: str) -> int:
        digest = hashlib.blake2b(f"{src}\0{dst}\0{service}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big")

    def observe(self, ctx: Context) -> list[Evidence]:
        if ctx.denied or ctx.reply:
            return []  # a path is what got through, opened from its source
        service = f"{ctx.transport}/{ctx.port}" if ctx.port is not None else ctx.transport
        names = (ctx.src_zone, ctx.dst_zone, service)
        key = self._keys.get(names)
        if key is None:
            key = self._keys[names] = self.path_key(*names)
            if len(self._keys) > 100_000:
                self._keys.clear()
        now = int(ctx.time)
        memory = self.memory
        paths = memory.paths
        last = paths.get(key)
        paths[key] = now
        journal = memory.journal
        if journal is not None and (last is None or now - last >= _JOURNAL_SECONDS):
            journal[key] = now
        if len(paths) > self.settings.max_paths:
            self._forget()
        learning = self.learning(ctx.time)
        if learning or (last is not None and now - last < self.settings.path_ttl_seconds):
            return []
        assert self.started is not None
        ended = day(self.started + self.settings.learning_seconds)
        why = "first seen" if last is None else f"unseen for {span(now - last)}"
        found = [
            Evidence(
                self.name,
                45,
                f"new path {ctx.src_zone} -> {ctx.dst_zone} {service} ({why}; learning ended "
                f"{ended})",
                f"path/{service}",
            )
        ]
        pivot = self._pivot(ctx)
        if pivot is not None:
            found.append(pivot)
        return found

    def _pivot(self, ctx: Context) -> Evidence | None:
        window = self.settings.slow_scan_window_seconds
        entry = self.pivots.get(ctx.src_ip)
        if entry is None or ctx.time - entry[0] > window:
            entry = self.pivots[ctx.src_ip] = [ctx.time, {}]
            if len(self.pivots) > self.settings.max_sources:
                self._forget_pivots(ctx.time)
        zones: dict[str, float] = entry[1]
        zones.setdefault(ctx.dst_zone, ctx.time)
        if len(zones) < self.settings.pivot_zones:
            return None
        minutes = (ctx.time - entry[0]) / 60
        names = ", ".join(sorted(zones))
        reason = (
            f"{ctx.src_ip} opened new paths into {len(zones)} zones in {minutes:.0f} min: {names}"
        )
        return Evidence("pivot", 65, reason, "pivot")

    def _forget(self) -> None:
        """Drop the least recently seen tenth."""
        keep = int(self.settings.max_paths * 0.9)
        cutoff = sorted(self.paths.values())[len(self.paths) - keep]
        if self.journal is not None:
            self.journal.update((k, None) for k, v in self.paths.items() if v < cutoff)
        self.paths = {k: v for k, v in self.paths.items() if v >= cutoff}

    def _forget_pivots(self, now: float) -> None:
        window = self.settings.slow_scan_window_seconds
        self.pivots = {ip: e for ip, e in self.pivots.items() if now - e[0] <= window}

    def state(self, paths: bool = True) -> dict[str, Any]:
        """JSON-ready state; ``paths=False`` leaves out the paths (kept by the journal)."""
        state: dict[str, Any] = {"started": self.started}
        if paths:
            state["paths"] = {str(k): v for k, v in self.paths.items()}
        return state

    def load(self, state: dict[str, Any]) -> None:
        """Merge ``state`` in: a path keeps its latest sighting."""
        self.started = state["started"]
        self.memory.merge_paths({int(k): v for k, v in state.get("paths", {}).items()})


class VolumeDetector(Learning):
    """Bulk transfers: one flow carrying at least ``bulk_bytes``."""

    name = "volume"

    def observe(self, ctx: Context) -> list[Evidence]:
        if self.learning(ctx.time) or ctx.bytes < self.settings.bulk_bytes or ctx.denied:
            return []
        reason = (
            f"bulk transfer: {ctx.bytes / 1e6:,.0f} MB in one flow from zone {ctx.src_zone} "
            f"to zone {ctx.dst_zone}"
        )
        return [Evidence(self.name, 40, reason, "volume")]

    def state(self) -> dict[str, Any]:
        return {"started": self.started}

    def load(self, state: dict[str, Any]) -> None:
        self.started = state.get("started")
