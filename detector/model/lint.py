"""The design-review checklist, asked of a model: findings with an id, a severity,
the zones and rules concerned, and a hint to fix them.

| id | severity | checks |
|---|---|---|
| SW001 | error | the default action is deny |
| SW002 | error | production and non-production zones do not reach each other |
| SW003 | error | internet-facing (DMZ) zones reach others by named flows, never by '*' |
| SW004 | error | high/restricted zones are not reachable directly from the Internet, |
|       |       | nor restricted ones from low internet-facing zones (gateways excepted) |
| SW005 | info | high/restricted zones reachable from the Internet through other zones |
| SW006 | error | the Internet reaches tier 0/1 only through a declared (internet_facing) |
|       |       | gateway |
| SW007 | warning | DNS is allowed (defaults.dns or a flow to 53) |
| SW008 | error | flows declared one_way are not allowed the other way by any rule |
| SW009 | warning | no exception has expired (remove it, or extend it with a new ticket) |
| SW010 | warning | no flow into a restricted zone allows every port (none listed, or ranges |
|       |         | covering 1-65535) |
| SW011 | error | zones of different tenants do not reach each other (no tenant: may) |
| SW012 | info | zones in monitor mode (violations reported at lower severity) |
| SW013 | info | zones no flow mentions |
| SW014 | error | no zone claims every address (0.0.0.0/0, ::/0): it would shadow internet |
| SW015 | warning | compliance-scoped zones (a `compliance` tag) are tagged high or restricted |
| SW016 | warning | internet-facing (DMZ) zones reach internal zones on named protocols, never |
|       |         | on `protocol: any` |
| SW017 | warning | every allow rule has an `owner` or a `ticket`, so its changes can be |
|       |         | reviewed |
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from detector.model.compile import CompiledModel
from detector.model.reach import blast_radius, edges
from detector.model.schema import ANY_ZONE, INTERNET, SENSITIVITY_ORDER

__all__ = ["Finding", "Severity", "lint"]

Severity = Literal["error", "warning", "info"]
_SENSITIVE = SENSITIVITY_ORDER["high"]


@dataclass(frozen=True)
class Finding:
    """One checklist item the model fails."""

    id: str
    severity: Severity
    message: str
    hint: str
    zones: tuple[str, ...] = ()
    rules: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        where = ", ".join([*(f"zone {z}" for z in self.zones), *(f"flow {r}" for r in self.rules)])
        return f"{self.severity:7} {self.id} {self.message}" + (f" [{where}]" if where else "")


def _every_port(ports: tuple[tuple[int, int], ...] | list[tuple[int, int]]) -> bool:
    """No ports listed, or ranges that together cover 1-65535."""
    covered = 1
    for lo, hi in sorted(ports):
        if lo > covered:
            return False
        covered = max(covered, hi + 1)
    return not ports or covered > 65535


def lint(model: CompiledModel, at: float | None = None) -> list[Finding]:
    """Every finding, errors first."""
    at = time.time() if at is None else at
    doc = model.model.document
    zones = model.zones
    graph = edges(model, at)
    hops = [hop for out in graph.values() for hop in out]
    findings: list[Finding] = []
    add = findings.append

    if doc.defaults.action != "deny":
        add(Finding("SW001", "error", "the default action is allow: anything not declared passes",
                    "set defaults.action: deny and declare the flows you need"))  # fmt: skip

    def env(zone: str) -> str | None:
        z = zones.get(zone)
        return z.tags.environment if z is not None else None

    for hop in hops:
        a, b = env(hop.source), env(hop.destination)
        if a and b and (a == "production") != (b == "production"):
            add(Finding(
                "SW002", "error",
                f"{hop.source} ({a}) reaches {hop.destination} ({b}) by {hop.service}",
                "production and non-production must not talk: remove the flow or move the zone",
                (hop.source, hop.destination), (hop.rule_id,),
            ))  # fmt: skip

    facing = {name for name, z in zones.items() if z.tags.internet_facing}
    for rule in model.rules:
        if rule.source in facing and rule.destination == ANY_ZONE:
            add(Finding(
                "SW003", "error",
                f"internet-facing zone {rule.source} may reach every zone",
                "name the zones and ports the DMZ needs instead of '*'",
                (rule.source,), (rule.id,),
            ))  # fmt: skip

    for hop in hops:
        target, source = zones.get(hop.destination), zones.get(hop.source)
        if target is None or target.tags.internet_facing:
            continue  # a declared gateway is meant to be exposed
        level = SENSITIVITY_ORDER[target.tags.sensitivity]
        from_internet = hop.source == INTERNET and level >= _SENSITIVE
        from_low_facing = (
            source is not None and source.tags.internet_facing
            and source.tags.sensitivity == "low" and target.tags.sensitivity == "restricted"
        )  # fmt: skip
        if from_internet or from_low_facing:
            add(Finding(
                "SW004", "error",
                f"{target.tags.sensitivity} zone {hop.destination} is reachable directly from "
                f"{'the Internet' if from_internet else hop.source} ({hop.service})",
                "put a gateway or application tier in between",
                (hop.source, hop.destination), (hop.rule_id,),
            ))  # fmt: skip

    direct = {h.destination for h in graph.get(INTERNET, ())}
    for reached in blast_radius(model, INTERNET, at).reached:
        if SENSITIVITY_ORDER[reached.sensitivity] >= _SENSITIVE and reached.zone not in direct:
            path = " -> ".join([INTERNET, *(h.destination for h in reached.hops)])
            add(Finding(
                "SW005", "info",
                f"{reached.sensitivity} zone {reached.zone} is reachable from the Internet "
                f"in {len(reached.hops)} hops: {path}",
                "check each hop is needed; see `segwatch model blast-radius --from internet`",
                (reached.zone,), tuple(h.rule_id for h in reached.hops),
            ))  # fmt: skip

    for hop in graph.get(INTERNET, ()):
        target = zones.get(hop.destination)
        if target is not None and target.tags.tier in (0, 1) and not target.tags.internet_facing:
            add(Finding(
                "SW006", "error",
                f"the Internet reaches tier {target.tags.tier} zone {hop.destination} directly",
                "route it through a gateway zone tagged internet_facing: true",
                (hop.destination,), (hop.rule_id,),
            ))  # fmt: skip

    if doc.defaults.dns is None and not any(
        17 in r.protocols and any(lo <= 53 <= hi for lo, hi in r.ports) for r in model.rules
    ):
        add(Finding("SW007", "warning", "no zone may reach DNS",
                    "set defaults.dns.zone to your resolvers' zone (e.g. kube-dns)"))  # fmt: skip

    allowed_pairs = {(h.source, h.destination): h for h in hops}
    for flow in doc.flows:
        if not flow.one_way:
            continue
        for src in flow.source:
            for dst in flow.destination:
                back = allowed_pairs.get((dst, src))
                if back is not None:
                    add(Finding(
                        "SW008", "error",
                        f"{flow.id} is one way {src} -> {dst}, but {back.rule_id} lets {dst} "
                        f"open {back.service} on {src}",
                        "remove the reverse rule, or drop one_way if both directions are meant",
                        (src, dst), (flow.id, back.rule_id),
                    ))  # fmt: skip

    for flow in doc.flows:
        if flow.expires is not None and flow.expires.timestamp() < at:
            add(Finding(
                "SW009", "warning",
                f"{flow.id} expired {flow.expires:%Y-%m-%d} and no longer allows anything",
                "remove the exception, or renew it with a new ticket and date",
                tuple(z for z in (*flow.source, *flow.destination) if z in zones), (flow.id,),
            ))  # fmt: skip

    for rule in model.rules:
        target = zones.get(rule.destination)
        if (
            target is not None
            and target.tags.sensitivity == "restricted"
            and _every_port(rule.ports)
        ):
            add(Finding(
                "SW010", "warning",
                f"{rule.id} allows every port into restricted zone {rule.destination}",
                "list the ports the service needs",
                (rule.destination,), (rule.id,),
            ))  # fmt: skip

    for hop in hops:
        za, zb = zones.get(hop.source), zones.get(hop.destination)
        if za and zb and za.tags.tenant and zb.tags.tenant and za.tags.tenant != zb.tags.tenant:
            add(Finding(
                "SW011", "error",
                f"tenant {za.tags.tenant} ({hop.source}) reaches tenant {zb.tags.tenant} "
                f"({hop.destination})",
                "tenants must not reach each other; shared services belong in a zone "
                "without a tenant",
                (hop.source, hop.destination), (hop.rule_id,),
            ))  # fmt: skip

    for name, zone in zones.items():
        if zone.mode == "monitor":
            add(Finding("SW012", "info", f"zone {name} is in monitor mode",
                        "switch to mode: enforce once its violations are understood",
                        (name,)))  # fmt: skip

    mentioned = {z for f in doc.flows for z in (*f.source, *f.destination)}
    if doc.defaults.dns is not None:
        mentioned.add(doc.defaults.dns.zone)
    if ANY_ZONE not in mentioned:
        for name in zones:
            if name not in mentioned:
                add(Finding("SW013", "info", f"no flow mentions zone {name}",
                            "fine if it talks only to itself; otherwise declare its flows",
                            (name,)))  # fmt: skip

    for zone_doc in doc.zones:
        for cidr in zone_doc.cidrs:
            if cidr.prefixlen == 0:
                add(Finding(
                    "SW014", "error",
                    f"zone {zone_doc.name} claims every address ({cidr}): no address is ever "
                    f"in internet, so no flow from or to internet can match",
                    "list the zone's own networks; the Internet is what no zone claims",
                    (zone_doc.name,),
                ))  # fmt: skip

    for name, zone in zones.items():
        if zone.tags.compliance and SENSITIVITY_ORDER[zone.tags.sensitivity] < _SENSITIVE:
            add(Finding(
                "SW015", "warning",
                f"zone {name} is in {', '.join(zone.tags.compliance)} scope but tagged "
                f"sensitivity {zone.tags.sensitivity}",
                "compliance-scoped zones hold what the audit is about: tag them high or "
                "restricted, so their violations score as such",
                (name,),
            ))  # fmt: skip

    for flow in doc.flows:
        if flow.protocol == "any":
            dmz = [z for z in flow.source if z in zones and zones[z].tags.internet_facing]
            internal = [z for z in flow.destination if z != INTERNET]
            if dmz and internal:
                add(Finding(
                    "SW016", "warning",
                    f"internet-facing {', '.join(dmz)} reaches {', '.join(internal)} on "
                    f"every protocol ({flow.id})",
                    "a DMZ talks to internal zones on the services it fronts: name the "
                    "protocol and ports",
                    (*dmz, *internal), (flow.id,),
                ))  # fmt: skip
        if not (flow.owner or flow.ticket):
            add(Finding(
                "SW017", "warning", f"flow {flow.id} has no owner or ticket",
                "say who asked for it (owner) or where it was approved (ticket), so the "
                "rule can be reviewed and removed when it is no longer needed",
                (), (flow.id,),
            ))  # fmt: skip

    order = {"error": 0, "warning": 1, "info": 2}
    unique = list(dict.fromkeys(findings))
    unique.sort(key=lambda f: (order[f.severity], f.id))
    return unique
