"""A model compiled to lookup structures, and ``place``: event x model -> verdict.

- Addresses: longest-prefix match per address family, one dict per prefix
  length present in the model, so a lookup costs one probe per distinct
  prefix length, whatever the number of zones; results are cached per address.
- Kubernetes workloads: zones' pod selectors, most specific first (ties: the
  zone declared first); results cached per (namespace, labels).
- Flows: an index by (source zone, destination zone), wildcards kept apart.

Verdicts (see DESIGN.md): ``allowed``, ``violation``, ``blocked_attempt``,
``over_restrictive``, ``unmanaged``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from detector.events import event_time
from detector.model.load import SegmentationModel, gc_paused
from detector.model.schema import ANY_ZONE, INTERNET, LOCAL_NETWORKS, Flow, PodSelector, Zone
from detector.model.services import PROTOCOL_WORDS

__all__ = [
    "CompiledModel",
    "CompiledRule",
    "Placement",
    "Verdict",
    "compile_model",
    "enrich",
]

Verdict = Literal["allowed", "violation", "blocked_attempt", "over_restrictive", "unmanaged"]
VERDICTS: tuple[Verdict, ...] = (
    "allowed", "violation", "blocked_attempt", "over_restrictive", "unmanaged",
)  # fmt: skip
_PROTOCOLS = {"tcp": (6,), "udp": (17,), "icmp": (1, 58), "any": ()}
_CACHE_LIMIT = 1 << 18  # entries per cache: ~50 MB at most, steady traffic fits


class CompiledRule(NamedTuple):
    """One allow rule as the index holds it: ``protocols`` () is any, ``ports`` () is any."""

    id: str
    protocols: tuple[int, ...]
    ports: tuple[tuple[int, int], ...]
    expires: float | None  # epoch seconds
    source: str
    destination: str

    def admits(self, proto: int | None, port: int | None) -> bool:
        if self.protocols and proto not in self.protocols:
            return False
        if not self.ports:
            return True
        if port is None:
            return False
        return any(lo <= port <= hi for lo, hi in self.ports)


class Placement(NamedTuple):
    """Where a flow sits on the model, and what that means."""

    source_zone: str | None
    destination_zone: str | None
    verdict: Verdict
    rule_id: str | None
    reason: str
    model_version: str
    mode: Literal["enforce", "monitor"]
    reply: bool = False  # allowed as the answer on a connection a rule allows

    def to_fields(self) -> dict[str, Any]:
        """The event's ``segmentation.*`` fields."""
        fields: dict[str, Any] = {
            "source_zone": self.source_zone,
            "destination_zone": self.destination_zone,
            "verdict": self.verdict,
            "reason": self.reason,
            "model_version": self.model_version,
            "mode": self.mode,
        }
        if self.rule_id is not None:
            fields["rule_id"] = self.rule_id
        return fields


class _Lpm:
    """Longest-prefix match for one address family: one dict probe per prefix length."""

    __slots__ = ("lengths", "probes")

    def __init__(self, bits: int, entries: list[tuple[int, int, str]]) -> None:
        """entries: (network as int, prefix length, zone)."""
        by_length: dict[int, dict[int, str]] = {}
        for network, length, zone in entries:
            by_length.setdefault(length, {})[network >> (bits - length)] = zone
        self.lengths = tuple(sorted(by_length, reverse=True))
        self.probes = tuple((bits - n, by_length[n]) for n in self.lengths)

    def lookup(self, value: int) -> str | None:
        for shift, table in self.probes:
            zone = table.get(value >> shift)
            if zone is not None:
                return zone
        return None


class CompiledModel:
    """A model ready to place events; build with :func:`compile_model`."""

    def __init__(self, model: SegmentationModel) -> None:
        doc = model.document
        self.model = model
        self.version = model.version
        self.zones: dict[str, Zone] = {z.name: z for z in doc.zones}
        self.defaults = doc.defaults
        v4: list[tuple[int, int, str]] = []
        v6: list[tuple[int, int, str]] = []
        for zone in doc.zones:
            for net in zone.cidrs:
                (v4 if net.version == 4 else v6).append(
                    (int(net.network_address), net.prefixlen, zone.name)
                )
        self._v4, self._v6 = _Lpm(32, v4), _Lpm(128, v6)
        self._selectors: tuple[tuple[PodSelector, str], ...] = tuple(
            sorted(
                ((sel, zone.name) for zone in doc.zones for sel in zone.kubernetes),
                key=lambda item: -item[0].specificity,  # stable: declaration order on ties
            )
        )
        self.rules: tuple[CompiledRule, ...] = tuple(self._rules(doc.flows))
        self._index: dict[tuple[str, str], list[CompiledRule]] = {}
        for rule in self.rules:
            self._index.setdefault((rule.source, rule.destination), []).append(rule)
        self._wild_src = any(r.source == ANY_ZONE for r in self.rules)
        self._wild_dst = any(r.destination == ANY_ZONE for r in self.rules)
        self._ip_cache: dict[str, str | None] = {}
        self._k8s_cache: dict[tuple[Any, ...], str | None] = {}
        self._has_expiry = any(r.expires is not None for r in self.rules)
        self._intra_allow = self.defaults.intra_zone == "allow"
        self._decisions: dict[tuple[Any, ...], tuple[bool, str | None, str]] = {}
        self._monitor = frozenset(z.name for z in doc.zones if z.mode == "monitor")

    def _rules(self, flows: tuple[Flow, ...]) -> Iterator[CompiledRule]:
        for flow in flows:
            protocols = _PROTOCOLS[flow.protocol]
            ports = tuple((p.first, p.last) for p in flow.ports)
            expires = flow.expires.timestamp() if flow.expires else None
            for src in flow.source:
                for dst in flow.destination:
                    yield CompiledRule(flow.id, protocols, ports, expires, src, dst)
                    if flow.bidirectional:
                        yield CompiledRule(flow.id, protocols, ports, expires, dst, src)
        dns = self.defaults.dns
        if dns is not None:
            ports = tuple((p.first, p.last) for p in dns.ports)
            for name, proto in (("udp", 17), ("tcp", 6)):
                yield CompiledRule(f"default-dns-{name}", (proto,), ports, None, ANY_ZONE, dns.zone)

    # --- zones -----------------------------------------------------------------

    def zone_of_ip(self, ip: str) -> str | None:
        """The zone of an address: most specific CIDR, else ``internet`` if public, else None."""
        cache = self._ip_cache
        if ip in cache:
            return cache[ip]
        zone = self._lookup_ip(ip)
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[ip] = zone
        return zone

    def _lookup_ip(self, ip: str) -> str | None:
        v6 = ":" in ip
        try:
            packed = _pton(_INET6 if v6 else _INET, ip)
        except (OSError, ValueError):
            return None
        zone = (self._v6 if v6 else self._v4).lookup(_from_bytes(packed, "big"))
        if zone is None and self.defaults.internet and not _is_local(ip):
            return INTERNET
        return zone

    def zone_of_workload(self, k8s: dict[str, Any]) -> str | None:
        """The zone whose selector matches a Kubernetes endpoint, if any."""
        if not self._selectors:
            return None
        namespace = k8s.get("namespace")
        labels = k8s.get("labels") or {}
        ns_labels = k8s.get("namespace_labels") or {}
        key = (namespace, tuple(sorted(labels.items())), tuple(sorted(ns_labels.items())))
        cache = self._k8s_cache
        zone: str | None = cache.get(key, _MISSING)
        if zone is _MISSING:
            zone = next(
                (
                    name
                    for sel, name in self._selectors
                    if sel.matches(namespace, labels, ns_labels)
                ),
                None,
            )
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[key] = zone
        return zone

    def zone_of(self, endpoint: dict[str, Any] | None) -> str | None:
        """An event's ``source`` or ``destination``: workload selectors first, then the address."""
        if not endpoint:
            return None
        if self._selectors:
            k8s = endpoint.get("kubernetes")
            if k8s:
                zone = self.zone_of_workload(k8s)
                if zone is not None:
                    return zone
        ip = endpoint.get("ip")
        if not ip:
            return None
        zone = self._ip_cache.get(ip, _MISSING)
        return self.zone_of_ip(ip) if zone is _MISSING else zone

    # --- rules -----------------------------------------------------------------

    def rules_between(self, src: str, dst: str) -> list[CompiledRule]:
        """Every rule that could allow ``src`` -> ``dst`` (wildcards included)."""
        index = self._index
        found = list(index.get((src, dst), ()))
        if self._wild_src and src != INTERNET:
            found += index.get((ANY_ZONE, dst), ())
        if self._wild_dst and dst != INTERNET:
            found += index.get((src, ANY_ZONE), ())
            if self._wild_src and src != INTERNET:
                found += index.get((ANY_ZONE, ANY_ZONE), ())
        return found

    def match(
        self, src: str, dst: str, proto: int | None, port: int | None, when: float | None
    ) -> tuple[CompiledRule | None, CompiledRule | None]:
        """(the rule that allows it, or None; an expired rule that would have)."""
        expired = None
        for rule in self.rules_between(src, dst):
            if rule.admits(proto, port):
                if rule.expires is not None and when is not None and when > rule.expires:
                    expired = rule
                    continue
                return rule, None
        return None, expired

    # --- placing -----------------------------------------------------------------

    def place(self, event: dict[str, Any]) -> Placement:
        """Where an event's endpoints sit, which rule (if any) allows it, and the verdict.

        The event's time decides whether a time-bounded exception still applies.
        A flow that answers an allowed connection (source port = the rule's
        port, reverse direction) is allowed as a reply. A flow whose log does
        not say whether it passed is taken as passed.
        """
        source = event.get("source")
        destination = event.get("destination")
        src = self.zone_of(source)
        dst = self.zone_of(destination)
        monitor = self._monitor
        mode: Literal["enforce", "monitor"] = (
            "monitor" if monitor and (src in monitor or dst in monitor) else "enforce"
        )
        if src is None or dst is None:
            side, endpoint = ("source", source) if src is None else ("destination", destination)
            what = _describe(endpoint)
            return Placement(
                src, dst, "unmanaged", None, f"{side} {what} is in no zone", self.version, mode
            )
        network = event.get("network")
        iana = network.get("iana_number") if network else None
        proto = int(iana) if iana else None
        dport = destination.get("port") if destination else None
        if src == dst and self._intra_allow:
            allowed, rule_id, reason = True, None, f"inside zone {src} (intra_zone: allow)"
        else:
            when = event_time(event) if self._has_expiry else None
            allowed, rule_id, reason = self._decide(src, dst, proto, dport, when)
            if not allowed and proto in (6, 17, 132) and source:
                sport = source.get("port")
                if sport is not None:
                    back, back_id, _ = self._decide(dst, src, proto, sport, when, reply=True)
                    if back and back_id is not None:
                        reason = f"reply on a connection flow {back_id} allows"
                        verdict_: Verdict = "allowed" if _passed(event) else "over_restrictive"
                        return Placement(
                            src, dst, verdict_, back_id, reason, self.version, mode, True
                        )
        passed = _passed(event)
        if allowed:
            verdict: Verdict = "allowed" if passed else "over_restrictive"
        else:
            verdict = "violation" if passed else "blocked_attempt"
        return Placement(src, dst, verdict, rule_id, reason, self.version, mode)

    def _decide(
        self,
        src: str,
        dst: str,
        proto: int | None,
        port: int | None,
        when: float | None,
        reply: bool = False,
    ) -> tuple[bool, str | None, str]:
        """(allowed, rule id, reason) for connections src -> dst; cached unless rules expire.

        ``reply``: the question is whether a rule admits it; the default action
        does not make replies.
        """
        key = (src, dst, proto, port, reply)
        if when is None:
            hit = self._decisions.get(key)
            if hit is not None:
                return hit
        rule, expired = self.match(src, dst, proto, port, when)
        if rule is not None:
            decision: tuple[bool, str | None, str] = (True, rule.id, f"flow {rule.id} allows it")
        elif self.defaults.action == "allow" and expired is None and not reply:
            decision = (True, None, "no flow matches; default action allow")
        else:
            decision = (False, None, _denial(src, dst, proto, port, expired))
        if when is None:
            if len(self._decisions) >= _CACHE_LIMIT:
                self._decisions.clear()
            self._decisions[key] = decision
        return decision


_MISSING: Any = object()
_pton, _INET, _INET6, _from_bytes = (
    socket.inet_pton,
    socket.AF_INET,
    socket.AF_INET6,
    int.from_bytes,
)
_LOCAL_NETWORKS = tuple(ipaddress.ip_network(n) for n in LOCAL_NETWORKS)


def _is_local(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return any(address in net for net in _LOCAL_NETWORKS if net.version == address.version)


def _passed(event: dict[str, Any]) -> bool:
    ev = event.get("event") or {}
    types = ev.get("type") or ()
    if "denied" in types:
        return False
    if "allowed" in types:
        return True
    return ev.get("outcome") != "failure"


def _describe(endpoint: dict[str, Any] | None) -> str:
    if not endpoint:
        return "(absent)"
    k8s = endpoint.get("kubernetes") or {}
    name = (k8s.get("pod") or {}).get("name") or k8s.get("workload")
    ip = endpoint.get("ip") or "?"
    if name:
        return f"{k8s.get('namespace', '')}/{name} ({ip})"
    return str(ip)


def _denial(
    src: str, dst: str, proto: int | None, port: int | None, expired: CompiledRule | None
) -> str:
    what = PROTOCOL_WORDS.get(proto or -1, f"protocol {proto}")
    target = f"{what}/{port}" if port is not None else what
    if expired is not None:
        when = datetime.fromtimestamp(expired.expires or 0, UTC).strftime("%Y-%m-%d %H:%M UTC")
        return f"flow {expired.id} would allow {src} -> {dst} {target} but expired {when}"
    return f"no flow allows {src} -> {dst} {target} (default deny)"


def compile_model(model: SegmentationModel) -> CompiledModel:
    """Build the lookup structures for a validated model."""
    with gc_paused():
        return CompiledModel(model)


def enrich(event: dict[str, Any], placement: Placement) -> dict[str, Any]:
    """Write the placement into the event's ``segmentation`` fields (in place) and return it."""
    event["segmentation"] = placement.to_fields()
    return event
