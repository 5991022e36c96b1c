"""Movement the zone model cannot see as a violation, per source, in sliding windows:

- **lateral movement inside a zone**: one host reaching many hosts of its own zone
  on administrative services (SSH, RDP, SMB, WinRM, WMI/RPC, VNC, Telnet) within
  ``lateral_window_seconds``, weighed up off-hours. Hosts that did so while the
  detectors learned (jump hosts, management servers) are known and not reported;
- **unusual DNS volume** to resolvers outside the model's DNS zone (tunnelling and
  exfiltration over DNS): only in models that declare one (``defaults.dns``).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from detector.detect.base import (
    ADMIN_PORTS,
    Context,
    DetectorSettings,
    Evidence,
    Learning,
    ZoneMemory,
    span,
)
from detector.detect.detectors import OffHoursDetector
from detector.detect.windows import Recent, bounded
from detector.model.compile import CompiledModel

__all__ = ["DnsDetector", "LateralMovementDetector"]

_MAX_HOSTS = 1024
_MAX_KNOWN = 10_000
_DNS_PORTS = frozenset({53, 853})


class LateralMovementDetector(Learning):
    """One source reaching ``lateral_hosts`` hosts of its own zone on administrative
    services within the lateral window."""

    name = "lateral"

    def __init__(self, settings: DetectorSettings, hours: OffHoursDetector) -> None:
        super().__init__(settings, hours.memory)
        self.hours = hours
        self.reached: dict[str, Recent] = {}  # source -> hosts of its zone
        self.services: dict[str, set[str]] = {}  # source -> admin services it used
        self.known: set[str] = set()  # sources that fanned out while learning

    def observe(self, ctx: Context) -> list[Evidence]:
        placement = ctx.placement
        learning = self.learning(ctx.time)
        zone = placement.source_zone
        if (
            ctx.port not in ADMIN_PORTS
            or zone is None
            or zone != placement.destination_zone
            or not ctx.src_ip
            or ctx.reply
        ):
            return []
        s = self.settings
        hosts = bounded(self.reached, ctx.src_ip, Recent, s.max_sources)
        new = hosts.touch(ctx.dst_ip, ctx.time, ctx.denied, s.lateral_window_seconds, _MAX_HOSTS)
        services = self.services.setdefault(ctx.src_ip, set())
        if len(services) < 16:
            services.add(f"{ctx.transport}/{ctx.port}")
        if len(hosts) < s.lateral_hosts or not (new or ctx.denied):
            return []
        if learning:
            if len(self.known) < _MAX_KNOWN:
                self.known.add(ctx.src_ip)
            return []
        if ctx.src_ip in self.known:
            return []
        night = self.hours.unusual_hour(ctx)
        reason = (
            f"lateral movement in zone {zone}: {ctx.src_ip} reached {len(hosts)} of its "
            f"peers on {', '.join(sorted(services))} in "
            f"{span(max(ctx.time - hosts.first(), 1))}, {hosts.denied()} refused"
            + (", off-hours" if night else "")
        )
        return [Evidence(self.name, 95 if night else 85, reason, "lateral")]

    def state(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "reached": {s: r.dump() for s, r in self.reached.items()},
            "services": {s: sorted(v) for s, v in self.services.items() if s in self.reached},
            "known": sorted(self.known),
        }

    def load(self, state: dict[str, Any]) -> None:
        self.started = state.get("started")
        self.reached = {s: Recent.restore(r) for s, r in state.get("reached", {}).items()}
        self.services = {s: set(v) for s, v in state.get("services", {}).items()}
        self.known = set(state.get("known", ()))


class DnsDetector(Learning):
    """A host sending ``dns_outside_flows`` DNS flows, or ``dns_outside_bytes``, to
    resolvers outside the model's DNS zone within the DNS window."""

    name = "dns"

    def __init__(
        self, settings: DetectorSettings, model: CompiledModel, memory: ZoneMemory | None = None
    ) -> None:
        super().__init__(settings, memory)
        dns = model.defaults.dns
        self.zone = dns.zone if dns is not None else None
        self.flows: dict[str, deque[tuple[float, int, str]]] = {}  # (time, bytes, resolver)
        self.totals: dict[str, int] = {}  # source -> bytes in its window

    def observe(self, ctx: Context) -> list[Evidence]:
        if self.zone is None or ctx.port not in _DNS_PORTS or ctx.reply or not ctx.src_ip:
            return []
        learning = self.learning(ctx.time)
        if ctx.dst_zone == self.zone or ctx.denied:
            return []
        s = self.settings
        src, now = ctx.src_ip, ctx.time
        flows = self.flows.get(src)
        if flows is None:
            flows = bounded(self.flows, src, deque, s.max_sources)
            self.totals = {k: v for k, v in self.totals.items() if k in self.flows}
        flows.append((now, ctx.bytes, ctx.dst_ip))
        total = self.totals.get(src, 0) + ctx.bytes
        cutoff = now - s.dns_window_seconds
        while flows and (flows[0][0] < cutoff or len(flows) > 4 * s.dns_outside_flows):
            total -= flows.popleft()[1]
        self.totals[src] = total
        if learning or (len(flows) < s.dns_outside_flows and total < s.dns_outside_bytes):
            return []
        resolvers = sorted({r for _, _, r in flows})
        shown = ", ".join(resolvers[:3]) + (
            f" (+{len(resolvers) - 3})" if len(resolvers) > 3 else ""
        )
        reason = (
            f"unusual DNS volume: {len(flows)} flows ({total / 1e6:.1f} MB) from {src} in "
            f"{span(max(now - flows[0][0], 1))} to resolvers outside zone {self.zone}: {shown}"
        )
        return [Evidence(self.name, 70, reason, "dns")]

    def state(self) -> dict[str, Any]:
        return {"started": self.started,
                "flows": {s: [list(f) for f in q] for s, q in self.flows.items()}}  # fmt: skip

    def load(self, state: dict[str, Any]) -> None:
        self.started = state.get("started")
        self.flows = {
            s: deque((float(t), int(b), str(r)) for t, b, r in q)
            for s, q in state.get("flows", {}).items()
        }
        self.totals = {s: sum(f[1] for f in q) for s, q in self.flows.items()}
