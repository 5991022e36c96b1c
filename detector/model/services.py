"""Sets of services (protocol x port intervals) and their algebra.

Used wherever allow rules from different formats are compared or combined:
model diffs, and the imports, which compute what a pair of zones may open.
A set maps ``tcp``/``udp`` to merged inclusive port intervals, and ``icmp`` /
``other`` to ``FULL`` (they have no ports).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from detector.model.schema import Flow, PortRange

__all__ = [
    "ALL",
    "FULL",
    "PROTOCOLS",
    "PROTOCOL_WORDS",
    "Services",
    "flow_services",
    "intersect",
    "render",
    "subtract",
    "to_flow_specs",
    "union",
]

Interval = tuple[int, int]
Services = dict[str, list[Interval]]
FULL: list[Interval] = [(0, 65535)]
# IANA protocol number -> the model's protocol word (ICMP and ICMPv6 are one)
PROTOCOL_WORDS: dict[int, str] = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp"}
PROTOCOLS = ("tcp", "udp", "icmp", "other")
ALL: Services = {p: list(FULL) for p in PROTOCOLS}


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return out


def union(*sets: Mapping[str, list[Interval]]) -> Services:
    out: Services = {}
    for s in sets:
        for proto, intervals in s.items():
            out[proto] = merge([*out.get(proto, []), *intervals])
    return out


def intersect(a: Mapping[str, list[Interval]], b: Mapping[str, list[Interval]]) -> Services:
    out: Services = {}
    for proto in a.keys() & b.keys():
        both = [
            (max(lo, blo), min(hi, bhi))
            for lo, hi in a[proto]
            for blo, bhi in b[proto]
            if max(lo, blo) <= min(hi, bhi)
        ]
        if both:
            out[proto] = merge(both)
    return out


def subtract(a: Mapping[str, list[Interval]], b: Mapping[str, list[Interval]]) -> Services:
    """The services in ``a`` and not in ``b``."""
    out: Services = {}
    for proto, intervals in a.items():
        rest = list(intervals)
        for blo, bhi in b.get(proto, []):
            nxt = []
            for lo, hi in rest:
                if bhi < lo or blo > hi:
                    nxt.append((lo, hi))
                    continue
                if lo < blo:
                    nxt.append((lo, blo - 1))
                if hi > bhi:
                    nxt.append((bhi + 1, hi))
            rest = nxt
        if rest:
            out[proto] = rest
    return out


def flow_services(protocol: str, ports: Iterable[PortRange]) -> Services:
    """What a native flow (protocol, ports) allows."""
    if protocol == "any":
        return {p: list(FULL) for p in PROTOCOLS}
    if protocol == "icmp":
        return {"icmp": list(FULL)}
    intervals = merge((p.first, p.last) for p in ports) or list(FULL)
    return {protocol: intervals}


def to_flow_specs(services: Mapping[str, list[Interval]]) -> list[tuple[str, list[PortRange]]]:
    """(protocol, ports) pairs for native flows that allow exactly ``services``.

    ``other`` (protocols with no name in the model) can only be written as
    ``any``; a set with ``other`` but not everything else is widened to the
    named protocols it has (the caller warns).
    """
    if all(services.get(p) == FULL for p in PROTOCOLS):
        return [("any", [])]
    specs: list[tuple[str, list[PortRange]]] = []
    for proto in ("tcp", "udp"):
        intervals = services.get(proto)
        if intervals:
            ports = (
                [] if intervals == FULL else [PortRange(first=lo, last=hi) for lo, hi in intervals]
            )
            specs.append((proto, ports))
    if services.get("icmp"):
        specs.append(("icmp", []))
    return specs


def render(services: Mapping[str, list[Interval]]) -> str:
    """``tcp/80,443 udp/53 icmp`` for people."""
    parts = []
    for proto in sorted(services):
        intervals = services[proto]
        if proto in ("icmp", "other"):
            parts.append(proto)
        elif intervals == FULL:
            parts.append(f"{proto}/any")
        else:
            parts.append(
                f"{proto}/"
                + ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in intervals)
            )
    return " ".join(parts)


def of_flow(flow: Flow) -> Services:
    return flow_services(flow.protocol, flow.ports)
