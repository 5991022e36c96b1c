"""The anomaly detectors: odd ports, off-hours, new paths (and pivoting), scans.

Each keeps bounded, serialisable state and returns :class:`Evidence` with the
numbers that made it suspicious. None of them raises an alert by itself: the
scorer weighs their evidence with the verdict and the zones' sensitivity.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from detector.detect.base import Context, DetectorSettings, Evidence
from detector.model.compile import CompiledModel
from detector.model.schema import WEEKDAYS, BusinessHours

__all__ = [
    "NewPathDetector",
    "OddPortDetector",
    "OffHoursDetector",
    "ScanDetector",
    "VolumeDetector",
]


def _day(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")


def _span(seconds: float) -> str:
    days = seconds / 86_400
    return f"{days:.0f} days" if days >= 2 else f"{seconds / 3600:.0f} h"


class _Learning:
    """Knows when the learning period (counted from the first event seen) is over."""

    def __init__(self, settings: DetectorSettings) -> None:
        self.settings = settings
        self.started: float | None = None

    def learning(self, now: float) -> bool:
        if self.started is None:
            self.started = now
        return now - self.started < self.settings.learning_seconds


class OddPortDetector(_Learning):
    """How rare a destination port is for the destination zone, learned from traffic.

    A port never seen for the zone (once it has had ``rare_port_min_flows``) is
    odd; a seen one is rare when its share of the zone's flows, smoothed
    (+1 / +100), is under ``rare_port_threshold``. Ports in ``well_known_ports``
    are never odd.
    """

    name = "odd_port"

    def __init__(self, settings: DetectorSettings) -> None:
        super().__init__(settings)
        self.counts: dict[str, dict[int, int]] = {}
        self.totals: dict[str, int] = {}
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
        since = _span(ctx.time - self.started)
        if seen == 0:
            reason = f"port {port} never seen for zone {zone} in {since} ({total:,} flows)"
            return [Evidence(self.name, 50, reason, f"port/{port}")]
        reason = (
            f"port {port} rare for zone {zone}: {seen} of {total:,} flows in {since} "
            f"({100 * seen / total:.3f}%)"
        )
        return [Evidence(self.name, 30, reason, f"port/{port}")]

    def state(self) -> dict[str, Any]:
        return {"started": self.started, "counts": self.counts, "totals": self.totals}

    def load(self, state: dict[str, Any]) -> None:
        self.started = state["started"]
        self.counts = {z: {int(p): n for p, n in c.items()} for z, c in state["counts"].items()}
        self.totals = dict(state["totals"])


class OffHoursDetector(_Learning):
    """Traffic outside the declared business hours of the zones involved, in an hour
    of the week the source zone is rarely active in (its learned profile)."""

    name = "off_hours"

    def __init__(self, settings: DetectorSettings, model: CompiledModel) -> None:
        super().__init__(settings)
        self.hours: dict[str, tuple[BusinessHours, ZoneInfo]] = {
            name: (zone.hours, ZoneInfo(zone.hours.timezone))
            for name, zone in model.zones.items()
            if zone.hours is not None
        }
        self.profiles: dict[str, list[int]] = {}  # zone -> 168 hour-of-week counts + total

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

    def _outside(self, ctx: Context) -> tuple[datetime, str, BusinessHours] | None:
        for zone in (ctx.dst_zone, ctx.src_zone):
            declared = self.hours.get(zone)
            if declared is None:
                continue
            hours, tz = declared
            local = datetime.fromtimestamp(ctx.time, tz)
            day = WEEKDAYS[local.weekday()]
            inside = (
                day in hours.days
                and local.date() not in hours.holidays
                and hours.start <= local.time() < hours.end
            )
            if not inside:
                return local, zone, hours
        return None

    def state(self) -> dict[str, Any]:
        return {"started": self.started, "profiles": self.profiles}

    def load(self, state: dict[str, Any]) -> None:
        self.started = state["started"]
        self.profiles = {z: list(p) for z, p in state["profiles"].items()}


_JOURNAL_SECONDS = 3600  # a known path's last-seen time is journalled at most hourly


class NewPathDetector(_Learning):
    """The first time a (source zone -> destination zone, service) path is seen after
    the learning period, and sources opening new paths into several zones (pivoting).

    Paths are stored as 64-bit hashes with their last-seen second: bounded by
    ``max_paths`` (the least recently seen are forgotten first) and expiring after
    ``path_ttl_seconds``.
    """

    name = "new_path"

    def __init__(self, settings: DetectorSettings) -> None:
        super().__init__(settings)
        self.paths: dict[int, int] = {}
        self._keys: dict[tuple[str, str, str], int] = {}  # recent paths' hashes (a cache)
        self.pivots: dict[str, list[Any]] = {}  # source ip -> [window start, {zone: first}]
        # when not None, path changes worth persisting: hash -> last seen, None once forgotten
        self.journal: dict[int, int | None] | None = None

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
        last = self.paths.get(key)
        self.paths[key] = now
        if self.journal is not None and (last is None or now - last >= _JOURNAL_SECONDS):
            self.journal[key] = now
        if len(self.paths) > self.settings.max_paths:
            self._forget()
        learning = self.learning(ctx.time)
        if learning or (last is not None and now - last < self.settings.path_ttl_seconds):
            return []
        assert self.started is not None
        ended = _day(self.started + self.settings.learning_seconds)
        why = "first seen" if last is None else f"unseen for {_span(now - last)}"
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
        self.started = state["started"]
        if "paths" in state:
            self.paths = {int(k): v for k, v in state["paths"].items()}


class _Window:
    """One source's activity in a tumbling window, sets capped so memory stays bounded."""

    __slots__ = ("denied", "hosts_by_port", "ports_by_host", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.ports_by_host: dict[str, set[int]] = {}
        self.hosts_by_port: dict[int, set[str]] = {}
        self.denied = 0


class ScanDetector:
    """Per source: many ports on one host (vertical scan), one port on many hosts
    (horizontal sweep) and bursts of denied flows in a short tumbling window, and
    sweeps spread over hours in a sliding slow window."""

    name = "scan"

    def __init__(self, settings: DetectorSettings) -> None:
        self.settings = settings
        self.fast: dict[str, _Window] = {}
        self.slow: dict[str, dict[int, dict[str, float]]] = {}  # source -> port -> host -> time
        self._cap = (
            max(
                settings.vertical_scan_ports,
                settings.horizontal_scan_hosts,
                settings.slow_scan_hosts,
            )
            + 1
        )

    def _sweep(self, src: str, port: int, dst: str, now: float) -> dict[str, float]:
        """Hosts ``src`` reached on ``port`` within the slow window (sliding), first contact."""
        window = self.settings.slow_scan_window_seconds
        ports = self.slow.get(src)
        if ports is None:
            ports = self.slow[src] = {}
            if len(self.slow) > self.settings.max_sources:
                for stale in list(self.slow)[: len(self.slow) // 10]:
                    del self.slow[stale]
        hosts = ports.setdefault(port, {})
        if dst not in hosts:
            if len(hosts) >= self._cap:  # drop contacts older than the window
                cutoff = now - window
                for host in [h for h, t in hosts.items() if t < cutoff]:
                    del hosts[host]
            if len(hosts) < self._cap:
                hosts[dst] = now
        cutoff = now - window
        if min(hosts.values()) < cutoff:
            for host in [h for h, t in hosts.items() if t < cutoff]:
                del hosts[host]
        return hosts

    def _window(self, table: dict[str, _Window], src: str, now: float, length: int) -> _Window:
        window = table.get(src)
        if window is None or now - window.start > length:
            window = table[src] = _Window(now)
            if len(table) > self.settings.max_sources:
                stale = [s for s, w in table.items() if now - w.start > length]
                for s in stale or list(table)[: len(table) // 10]:
                    del table[s]
        return window

    def observe(self, ctx: Context) -> list[Evidence]:
        s, port, dst, now = self.settings, ctx.port, ctx.dst_ip, ctx.time
        if port is None or not ctx.src_ip or ctx.reply:
            return []
        cap = self._cap
        fast = self._window(self.fast, ctx.src_ip, now, s.scan_window_seconds)
        ports = fast.ports_by_host.setdefault(dst, set())
        if len(ports) < cap:
            ports.add(port)
        hosts = fast.hosts_by_port.setdefault(port, set())
        if len(hosts) < cap:
            hosts.add(dst)
        if ctx.denied:
            fast.denied += 1
        swept = self._sweep(ctx.src_ip, port, dst, now)
        found = []
        secs = max(now - fast.start, 1)
        service = f"{ctx.transport}/{port}"
        if len(ports) >= s.vertical_scan_ports:
            found.append(
                Evidence(
                    self.name,
                    75,
                    f"{ctx.src_ip} probed {len(ports)}"
                    f"{'+' if len(ports) >= cap else ''} ports on {dst} "
                    f"in {secs:.0f} s",
                    "scan/vertical",
                )
            )
        if len(hosts) >= s.horizontal_scan_hosts:
            found.append(
                Evidence(
                    self.name,
                    70,
                    f"{ctx.src_ip} reached {len(hosts)}"
                    f"{'+' if len(hosts) >= cap else ''} hosts on {service} "
                    f"in {secs:.0f} s",
                    "scan/horizontal",
                )
            )
        elif len(swept) >= s.slow_scan_hosts:
            hours = max(now - min(swept.values()), 1) / 3600
            found.append(
                Evidence(
                    self.name,
                    65,
                    f"{ctx.src_ip} reached {len(swept)}"
                    f"{'+' if len(swept) >= cap else ''} hosts on {service} "
                    f"in {hours:.1f} h (slow sweep)",
                    "scan/slow",
                )
            )
        if fast.denied >= s.deny_burst:
            found.append(
                Evidence(
                    self.name,
                    55,
                    f"{fast.denied} denied flows from {ctx.src_ip} in {secs:.0f} s",
                    "scan/denied",
                )
            )
        return found

    def state(self) -> dict[str, Any]:
        def dump(table: dict[str, _Window]) -> dict[str, Any]:
            return {
                src: {
                    "start": w.start,
                    "denied": w.denied,
                    "ports_by_host": {h: sorted(p) for h, p in w.ports_by_host.items()},
                    "hosts_by_port": {str(p): sorted(h) for p, h in w.hosts_by_port.items()},
                }
                for src, w in table.items()
            }

        slow = {src: {str(p): h for p, h in ports.items()} for src, ports in self.slow.items()}
        return {"fast": dump(self.fast), "slow": slow}

    def load(self, state: dict[str, Any]) -> None:
        def restore(data: dict[str, Any]) -> dict[str, _Window]:
            out = {}
            for src, w in data.items():
                window = _Window(w["start"])
                window.denied = w["denied"]
                window.ports_by_host = {h: set(p) for h, p in w["ports_by_host"].items()}
                window.hosts_by_port = {int(p): set(h) for p, h in w["hosts_by_port"].items()}
                out[src] = window
            return out

        self.fast = restore(state["fast"])
        self.slow = {
            src: {int(p): dict(h) for p, h in ports.items()} for src, ports in state["slow"].items()
        }


class VolumeDetector:
    """Bulk transfers: one flow carrying at least ``bulk_bytes``."""

    name = "volume"

    def __init__(self, settings: DetectorSettings) -> None:
        self.settings = settings

    def observe(self, ctx: Context) -> list[Evidence]:
        if ctx.bytes < self.settings.bulk_bytes or ctx.denied:
            return []
        reason = (
            f"bulk transfer: {ctx.bytes / 1e6:,.0f} MB in one flow from zone {ctx.src_zone} "
            f"to zone {ctx.dst_zone}"
        )
        return [Evidence(self.name, 40, reason, "volume")]

    def state(self) -> dict[str, Any]:
        return {}

    def load(self, state: dict[str, Any]) -> None:
        del state
