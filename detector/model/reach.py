"""Reachability over the declared model: what a zone (or an address) can reach,
directly and through other zones, with the hops and the ports.

The graph's nodes are zones (and ``internet``); an edge is an allow rule in
force at the given time. An attacker who holds a zone can use every rule
leaving it, then every rule leaving the zones those reach, and so on.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from detector.model.compile import CompiledModel, CompiledRule
from detector.model.schema import ANY_ZONE, INTERNET, SENSITIVITY_ORDER
from detector.model.services import PROTOCOL_WORDS

__all__ = [
    "BlastRadius",
    "Hop",
    "Reached",
    "blast_radius",
    "edges",
    "path_text",
    "paths",
    "service",
]


@dataclass(frozen=True)
class Hop:
    """One step: ``source`` may open ``service`` on ``destination`` under ``rule_id``."""

    source: str
    destination: str
    rule_id: str
    service: str


@dataclass(frozen=True)
class Reached:
    """A zone within reach, by the shortest path found."""

    zone: str
    hops: tuple[Hop, ...]
    sensitivity: str

    @property
    def direct(self) -> bool:
        return len(self.hops) == 1


@dataclass(frozen=True)
class BlastRadius:
    """Everything reachable from ``start`` (a zone), most sensitive and nearest first."""

    start: str
    address: str | None
    reached: tuple[Reached, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "start": self.start,
            "address": self.address,
            "reached": [
                {
                    "zone": r.zone,
                    "sensitivity": r.sensitivity,
                    "direct": r.direct,
                    "hops": [h.__dict__ for h in r.hops],
                }
                for r in self.reached
            ],
        }


def service(rule: CompiledRule) -> str:
    """``tcp/5432``, ``udp/53``, ``icmp``, ``any`` for a rule."""
    protos = sorted({PROTOCOL_WORDS.get(p, str(p)) for p in rule.protocols}) or ["any"]
    ports = ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in rule.ports)
    return "+".join(f"{p}/{ports}" if ports and p in ("tcp", "udp") else p for p in protos)


def edges(model: CompiledModel, at: float | None = None) -> dict[str, list[Hop]]:
    """zone -> the hops leaving it (wildcards expanded, expired rules left out)."""
    at = time.time() if at is None else at
    zones = list(model.zones)
    out: dict[str, list[Hop]] = {}
    for rule in model.rules:
        if rule.expires is not None and rule.expires < at:
            continue
        sources = zones if rule.source == ANY_ZONE else [rule.source]
        targets = zones if rule.destination == ANY_ZONE else [rule.destination]
        for src in sources:
            for dst in targets:
                if src != dst:
                    out.setdefault(src, []).append(Hop(src, dst, rule.id, service(rule)))
    return out


def blast_radius(model: CompiledModel, start: str, at: float | None = None) -> BlastRadius:
    """What holding ``start`` (a zone name, ``internet``, or an IP address) gives access to.

    :raises KeyError: ``start`` is neither a zone nor an address in one.
    """
    address = None
    zone = start
    if start not in model.zones and start != INTERNET:
        placed = model.zone_of_ip(start)
        if placed is None:
            raise KeyError(f"{start!r} is not a zone of the model nor an address in one")
        address, zone = start, placed
    best = paths(edges(model, at), zone)
    reached = [Reached(name, hops, _sensitivity(model, name)) for name, hops in best.items()]
    reached.sort(key=lambda r: (-SENSITIVITY_ORDER[r.sensitivity], len(r.hops), r.zone))
    return BlastRadius(zone, address, tuple(reached))


def paths(
    graph: dict[str, list[Hop]], start: str, avoid: frozenset[str] = frozenset()
) -> dict[str, tuple[Hop, ...]]:
    """Each zone reachable from ``start`` over ``graph`` (declared or observed), by a
    shortest chain of hops; zones in ``avoid`` are reached but not gone through."""
    best: dict[str, tuple[Hop, ...]] = {start: ()}
    queue = deque([start])
    while queue:  # breadth first: the first path found to a zone is a shortest one
        current = queue.popleft()
        for hop in graph.get(current, ()):
            if hop.destination not in best:
                best[hop.destination] = (*best[current], hop)
                if hop.destination not in avoid:
                    queue.append(hop.destination)
    best.pop(start)
    return best


def path_text(hops: Iterable[Hop]) -> str:
    """``a -(tcp/443 rule)-> b  b -(...)-> c``: a chain of hops, as the CLI prints it."""
    return "  ".join(f"{h.source} -({h.service} {h.rule_id})-> {h.destination}" for h in hops)


def _sensitivity(model: CompiledModel, zone: str) -> str:
    found = model.zones.get(zone)
    return found.tags.sensitivity if found is not None else "low"
