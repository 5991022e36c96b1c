"""Scans and blocked series, per source, in sliding windows (the same at any rate):

- a **vertical scan**: many ports (below 32768; the dynamic range is what RPC and
  passive FTP hand out) on one host within the slow window, named with its rate —
  ``vertical scan of 10.50.2.1 by 10.50.10.1: 200 ports in 40 s, 180 rejected``;
- a **horizontal sweep**: one port on many hosts within the fast window, or on more
  hosts within the slow one (``slow sweep``); the Internet's hosts are not counted
  (a busy client reaches dozens of them on 443 a minute);
- a **denied burst**: many denied flows within the fast window;
- a **blocked series** (:class:`BlockedSeriesDetector`): tens of blocked attempts
  into high or restricted zones within minutes.

Sources that scanned during the learning period (monitoring systems do) are known
scanners: their scans are not reported (give them a zone and a flow).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from detector.connection import EPHEMERAL
from detector.detect.base import (
    Context,
    DetectorSettings,
    Evidence,
    Learning,
    ZoneMemory,
    span,
)
from detector.detect.windows import Recent, bounded
from detector.model.compile import CompiledModel
from detector.model.schema import INTERNET

__all__ = ["BlockedSeriesDetector", "ScanDetector"]

_MAX_KEYS = 1024  # distinct ports of one host, or hosts of one port, counted at most
_MAX_INNER = 256  # hosts (or ports) tracked per source
_MAX_KNOWN = 10_000


def _recent(table: dict[Any, Recent], key: Any) -> Recent:
    """One source's window for ``key`` (a host, or a port); past ``_MAX_INNER`` of them
    the oldest goes first."""
    recent = table.get(key)
    if recent is None:
        if len(table) >= _MAX_INNER:
            del table[next(iter(table))]
        recent = table[key] = Recent()
    return recent


def _count(n: int, cap: int) -> str:
    return f"{n}+" if n >= cap else str(n)


class ScanDetector(Learning):
    """Vertical scans and horizontal sweeps in sliding windows, and denied bursts."""

    name = "scan"

    def __init__(self, settings: DetectorSettings, memory: ZoneMemory | None = None) -> None:
        super().__init__(settings, memory)
        self.vertical: dict[str, dict[str, Recent]] = {}  # source -> host -> ports
        self.horizontal: dict[str, dict[int, Recent]] = {}  # source -> port -> hosts
        self.denied: dict[str, list[float]] = {}  # source -> [window start, denied]
        self.known: dict[str, str] = {}  # sources that scanned while learning -> what

    def observe(self, ctx: Context) -> list[Evidence]:
        s, port, src, dst, now = self.settings, ctx.port, ctx.src_ip, ctx.dst_ip, ctx.time
        if port is None or not src or ctx.reply:
            return []
        learning = self.learning(now)
        slow = s.slow_scan_window_seconds
        found: list[Evidence] = []
        # a connection adds to a scan when it probes a port (a host) anew or is refused
        if port < EPHEMERAL:
            ports = _recent(bounded(self.vertical, src, dict, s.max_sources), dst)
            probe = ports.touch(port, now, ctx.denied, slow, _MAX_KEYS) or ctx.denied
            if probe and len(ports) >= s.vertical_scan_ports:
                found += self._vertical(ctx, ports, learning)
        if ctx.placement.destination_zone != INTERNET:
            reached = _recent(bounded(self.horizontal, src, dict, s.max_sources), port)
            probe = reached.touch(dst, now, ctx.denied, slow, _MAX_KEYS) or ctx.denied
            if probe and len(reached) >= s.horizontal_scan_hosts:
                found += self._horizontal(ctx, reached, learning)
        if ctx.denied:
            window = self.denied.get(src)
            if window is None or now - window[0] > s.scan_window_seconds:
                window = self.denied[src] = [now, 0]
                if len(self.denied) > s.max_sources:
                    self.denied = {k: v for k, v in self.denied.items()
                                   if now - v[0] <= s.scan_window_seconds}  # fmt: skip
            window[1] += 1
            if window[1] >= s.deny_burst and not learning:
                secs = max(now - window[0], 1)
                found.append(Evidence(self.name, 55, f"{window[1]:.0f} denied flows from {src} "
                                      f"in {span(secs)}", "denied"))  # fmt: skip
        return found

    def _known(self, src: str, kind: str, learning: bool) -> bool:
        """While learning, remember the source as a known scanner; after, say if it is one."""
        if learning:
            if len(self.known) < _MAX_KNOWN:
                self.known[src] = kind
            return True
        return src in self.known

    def _vertical(self, ctx: Context, ports: Recent, learning: bool) -> list[Evidence]:
        if self._known(ctx.src_ip, "vertical", learning):
            return []
        n = len(ports)
        took = span(max(ctx.time - ports.first(), 1))
        reason = (
            f"vertical scan of {ctx.dst_ip} by {ctx.src_ip}: {_count(n, _MAX_KEYS)} ports "
            f"in {took}, {ports.denied()} rejected"
        )
        return [Evidence(self.name, 75, reason, "vertical")]

    def _horizontal(self, ctx: Context, hosts: Recent, learning: bool) -> list[Evidence]:
        s = self.settings
        fast = hosts.since(ctx.time - s.scan_window_seconds)
        if fast < s.horizontal_scan_hosts and len(hosts) < s.slow_scan_hosts:
            return []
        if self._known(ctx.src_ip, "horizontal", learning):
            return []
        service = f"{ctx.transport}/{ctx.port}"
        took: float
        if fast >= s.horizontal_scan_hosts:
            n, took, kind, score = fast, s.scan_window_seconds, "horizontal", 70
        else:
            n, took, kind, score = len(hosts), ctx.time - hosts.first(), "slow", 65
        reason = (
            f"horizontal sweep of {service} by {ctx.src_ip}: {_count(n, _MAX_KEYS)} hosts in "
            f"{span(max(min(took, ctx.time - hosts.first()), 1))}, {hosts.denied()} rejected"
        )
        if kind == "slow":
            reason += " (slow sweep)"
        return [Evidence(self.name, score, reason, kind)]

    def state(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "vertical": {s: {h: r.dump() for h, r in d.items()} for s, d in self.vertical.items()},
            "horizontal": {
                s: {str(p): r.dump() for p, r in d.items()} for s, d in self.horizontal.items()
            },
            "denied": self.denied,
            "known": self.known,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.started = state.get("started")
        self.vertical = {
            s: {h: Recent.restore(r, int) for h, r in d.items()}
            for s, d in state.get("vertical", {}).items()
        }
        self.horizontal = {
            s: {int(p): Recent.restore(r) for p, r in d.items()}
            for s, d in state.get("horizontal", {}).items()
        }
        self.denied = {s: list(w) for s, w in state.get("denied", {}).items()}
        self.known = dict(state.get("known", {}))


_GUARDED = frozenset({"high", "restricted"})


class BlockedSeriesDetector(Learning):
    """A source the network keeps refusing on its way into high or restricted zones:
    ``blocked_series`` blocked attempts within ``blocked_window_seconds`` (sliding)."""

    name = "blocked_series"

    def __init__(
        self, settings: DetectorSettings, model: CompiledModel, memory: ZoneMemory | None = None
    ) -> None:
        super().__init__(settings, memory)
        self.guarded = frozenset(
            name for name, zone in model.zones.items() if zone.tags.sensitivity in _GUARDED
        )
        self.attempts: dict[str, deque[tuple[float, str, str]]] = {}  # (time, zone, service)

    def observe(self, ctx: Context) -> list[Evidence]:
        placement = ctx.placement
        learning = self.learning(ctx.time)
        if placement.verdict != "blocked_attempt" or placement.destination_zone not in self.guarded:
            return []
        s = self.settings
        src, now = ctx.src_ip, ctx.time
        attempts = bounded(self.attempts, src, deque, s.max_sources)
        attempts.append((now, ctx.dst_zone, placement.service or ctx.transport))
        cutoff = now - s.blocked_window_seconds
        while attempts and attempts[0][0] < cutoff:
            attempts.popleft()
        while len(attempts) > 4 * s.blocked_series:
            attempts.popleft()
        if learning or len(attempts) < s.blocked_series:
            return []
        zones = sorted({z for _, z, _ in attempts})
        services = sorted({svc for _, _, svc in attempts})
        shown = ", ".join(services[:5]) + (f" (+{len(services) - 5})" if len(services) > 5 else "")
        reason = (
            f"blocked series: {len(attempts)} blocked attempts from {src} into "
            f"{', '.join(zones)} in {span(max(now - attempts[0][0], 1))} ({shown})"
        )
        return [Evidence(self.name, 60, reason, "blocked_series")]

    def state(self) -> dict[str, Any]:
        attempts = {s: [list(a) for a in q] for s, q in self.attempts.items()}
        return {"started": self.started, "attempts": attempts}

    def load(self, state: dict[str, Any]) -> None:
        self.started = state.get("started")
        self.attempts = {
            s: deque((float(t), str(z), str(svc)) for t, z, svc in q)
            for s, q in state.get("attempts", {}).items()
        }
