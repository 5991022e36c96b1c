"""Recommendations from observed traffic: what each allow rule was used for, and the
narrower model that would still let all of it through.

From connections as their initiators opened them (reply records belong to their
connection and are not counted again):

- per allow rule: connections, services (``tcp/5432``), zone pairs, last use;
- rules never used: proposed for removal (the traffic may not cover their use:
  a monthly job, a failover; the report says how long the traffic lasted);
- ``protocol: any`` and port ranges wider than what was used: narrowed to the
  services used;
- forbidden traffic that looks like a service someone relies on (stable,
  repeated, in business hours): proposed as a new allow rule without owner, for
  review. A group qualifies with at least ``min_connections`` connections, on at
  least ``min_hours`` distinct hours, from at most ``max_sources`` hosts (not a
  sweep), ``business_share`` of them inside the source zone's business hours
  (its ``hours``, or Monday to Friday 08:00-19:00 UTC).

The result is a proposal, a new model and its diff; nothing is applied.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from detector.events import event_time
from detector.model.compile import CompiledModel
from detector.model.load import SegmentationModel, model_from_data
from detector.model.schema import WEEKDAYS, BusinessHours

__all__ = ["Recommendation", "RuleUse", "recommend"]


@dataclass
class RuleUse:
    """What one allow rule was used for."""

    rule: str
    connections: int = 0
    services: Counter[str] = field(default_factory=Counter)
    pairs: Counter[tuple[str, str]] = field(default_factory=Counter)
    last_used: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "connections": self.connections,
            "services": dict(self.services.most_common()),
            "pairs": [
                {"from": s, "to": d, "connections": n} for (s, d), n in self.pairs.most_common()
            ],
            "last_used": _iso(self.last_used) if self.connections else None,
        }


@dataclass
class _Forbidden:
    connections: int = 0
    hours: set[int] = field(default_factory=set)
    sources: set[str] = field(default_factory=set)
    in_hours: int = 0
    first: float = float("inf")
    last: float = 0.0


@dataclass
class Recommendation:
    usage: list[RuleUse]
    unused: list[str]
    narrowed: list[dict[str, Any]]  # {rule, allowed, used, proposed}
    proposed: list[dict[str, Any]]  # new flows, with the evidence
    connections: int
    first: float | None
    last: float | None
    model: SegmentationModel  # the proposed model

    def to_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "from": _iso(self.first) if self.first is not None else None,
            "to": _iso(self.last) if self.last is not None else None,
            "rules": [u.to_dict() for u in self.usage],
            "unused_rules": self.unused,
            "narrowed": self.narrowed,
            "proposed_flows": self.proposed,
        }


def recommend(
    model: CompiledModel,
    events: Iterable[dict[str, Any]],
    *,
    min_connections: int = 10,
    min_hours: int = 3,
    max_sources: int = 5,
    business_share: float = 0.8,
) -> Recommendation:
    """Count what the traffic used, and propose the narrower model (see module doc)."""
    doc = model.model.document
    usage = {f.id: RuleUse(f.id) for f in doc.flows}
    forbidden: dict[tuple[str, str, str], _Forbidden] = {}
    hours = {z.name: (z.hours or BusinessHours()) for z in doc.zones}
    tz = {name: ZoneInfo(h.timezone) for name, h in hours.items()}
    connections, first, last = 0, None, None
    for event in events:
        placed = model.place(event)
        if placed.reply:
            continue
        connections += 1
        when = event_time(event)
        first = when if first is None else min(first, when)
        last = when if last is None else max(last, when)
        service = placed.service or "?"
        src, dst = placed.source_zone, placed.destination_zone
        if placed.verdict == "allowed" and placed.rule_id in usage:
            use = usage[placed.rule_id]
            use.connections += 1
            use.services[service] += 1
            use.pairs[(src or "?", dst or "?")] += 1
            use.last_used = max(use.last_used, when)
        elif placed.verdict == "violation" and src is not None and dst is not None:
            group = forbidden.setdefault((src, dst, service), _Forbidden())
            group.connections += 1
            group.hours.add(int(when // 3600))
            ip = (
                event.get("destination" if placed.initiator == "destination" else "source") or {}
            ).get("ip")
            group.sources.add(str(ip))
            if src in hours and _inside(hours[src], tz[src], when):
                group.in_hours += 1
            group.first, group.last = min(group.first, when), max(group.last, when)
    data = yaml.safe_load(model.model.to_yaml())
    unused = [u.rule for u in usage.values() if not u.connections]
    narrowed = []
    flows: list[dict[str, Any]] = []
    for flow in data.get("flows") or []:
        used = usage.get(flow.get("id", ""))
        if used is None or not used.connections:
            continue  # never used: proposed for removal
        replacement = _narrow(flow, used)
        if replacement is not None:
            narrowed.append(
                {
                    "rule": flow["id"],
                    "allowed": _allowed_text(flow),
                    "used": dict(used.services.most_common()),
                    "proposed": [_allowed_text(f) for f in replacement],
                }
            )
            flows += replacement
        else:
            flows.append(flow)
    proposed = []
    for (src, dst, service), group in sorted(forbidden.items()):
        if (
            group.connections < min_connections
            or len(group.hours) < min_hours
            or len(group.sources) > max_sources
            or group.in_hours < business_share * group.connections
        ):
            continue
        proto, _, port = service.partition("/")
        new: dict[str, Any] = {
            "id": _unique(f"observed-{src}-to-{dst}-{proto}-{port}", flows),
            "from": src,
            "to": dst,
            "protocol": proto if proto in ("tcp", "udp", "icmp") else "any",
            "description": (
                f"proposed by segwatch model recommend: {group.connections} "
                f"connections from {len(group.sources)} host(s) on "
                f"{len(group.hours)} hours, {_iso(group.first)} to "
                f"{_iso(group.last)}; review and name an owner"
            ),
        }
        if proto in ("tcp", "udp") and port.isdigit():
            new["ports"] = [int(port)]
        flows.append(new)
        proposed.append(
            {
                **new,
                "connections": group.connections,
                "sources": sorted(group.sources),
                "business_hours_share": round(group.in_hours / group.connections, 3),
            }
        )
    data["flows"] = flows
    data.setdefault("metadata", {})["description"] = (
        f"{data['metadata'].get('description', '')} (narrowed by segwatch model recommend "
        f"from {connections} connections)"
    ).strip()
    return Recommendation(
        sorted(usage.values(), key=lambda u: -u.connections),
        unused,
        narrowed,
        proposed,
        connections,
        first,
        last,
        model_from_data(data, "<recommended>"),
    )


def _narrow(flow: dict[str, Any], use: RuleUse) -> list[dict[str, Any]] | None:
    """The flows that allow exactly the services used, if narrower than ``flow``."""
    used: dict[str, set[int]] = {}
    for service in use.services:
        proto, _, port = service.partition("/")
        used.setdefault(proto, set()).update([int(port)] if port.isdigit() else [])
    protocol = flow.get("protocol", "tcp")
    ports = [str(p) for p in flow.get("ports") or []]
    wide_ports = any("-" in p for p in ports) or (not ports and protocol in ("tcp", "udp"))
    if protocol != "any" and not wide_ports:
        return None
    if protocol == "any" and any(p not in ("tcp", "udp") for p in used):
        return None  # ICMP or other protocols were used: "any" is what it takes
    out = []
    for proto in sorted(used) if protocol == "any" else [protocol]:
        numbers = sorted(used.get(proto, set()))
        if not numbers:
            return None  # used without a port to narrow to
        narrowed = {k: v for k, v in flow.items() if k not in ("ports", "protocol", "id")}
        suffix = f"-{proto}" if protocol == "any" and len(used) > 1 else ""
        out.append({"id": f"{flow['id']}{suffix}", **narrowed, "protocol": proto, "ports": numbers})
    return out


def _allowed_text(flow: dict[str, Any]) -> str:
    ports = ",".join(str(p) for p in flow.get("ports") or []) or "all"
    return f"{flow.get('protocol', 'tcp')}/{ports}"


def _unique(name: str, flows: list[dict[str, Any]]) -> str:
    taken = {f.get("id") for f in flows}
    base = "".join(c if c.isalnum() or c in "-_.:" else "-" for c in name.lower())[:120].strip("-")
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def _inside(hours: BusinessHours, tz: ZoneInfo, when: float) -> bool:
    local = datetime.fromtimestamp(when, tz)
    return (
        WEEKDAYS[local.weekday()] in hours.days
        and local.date() not in hours.holidays
        and hours.start <= local.time() < hours.end
    )


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")
