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

from detector.connection import (
    EPHEMERAL,
    UNKNOWN,
    Initiator,
    ServerPorts,
    Side,
    from_log,
    from_ports,
)
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
    """Where a flow's connection sits on the model, and what that means.

    The zones and the service are the connection's as its initiator opened it: for
    a reply record (``initiator == "destination"``) they are the record's
    destination -> source, and the verdict is its connection's.
    """

    source_zone: str | None
    destination_zone: str | None
    verdict: Verdict
    rule_id: str | None
    reason: str
    model_version: str
    mode: Literal["enforce", "monitor"]
    initiator: Side = "unknown"
    evidence: str = "none"  # how the initiator was told (detector.connection)
    service: str | None = None  # the connection's: "tcp/5432", "icmp"

    @property
    def reply(self) -> bool:
        """The record answers a connection its destination opened."""
        return self.initiator == "destination"

    def to_fields(self) -> dict[str, Any]:
        """The event's ``segmentation.*`` fields."""
        fields: dict[str, Any] = {
            "source_zone": self.source_zone,
            "destination_zone": self.destination_zone,
            "verdict": self.verdict,
            "reason": self.reason,
            "model_version": self.model_version,
            "mode": self.mode,
            "initiator": self.initiator,
            "initiator_evidence": self.evidence,
            "reply": self.reply,
        }
        if self.rule_id is not None:
            fields["rule_id"] = self.rule_id
        if self.service is not None:
            fields["service"] = self.service
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
        # what tells who serves (detector.connection): the rules that name their ports,
        # by zone pair (made as pairs are asked about) and by destination zone ('*' apart)
        self._named: dict[tuple[str, str], tuple[CompiledRule, ...]] = {}
        self._into: dict[str, list[CompiledRule]] = {}
        self._into_any: list[CompiledRule] = []
        # some rule names a port of the ephemeral range
        self._names_ephemeral = any(p.last >= EPHEMERAL for f in doc.flows for p in f.ports) or (
            doc.defaults.dns is not None
            and any(p.last >= EPHEMERAL for p in doc.defaults.dns.ports)
        )
        for rule in self.rules:
            self._index.setdefault((rule.source, rule.destination), []).append(rule)
            if rule.ports:
                if rule.destination == ANY_ZONE:
                    self._into_any.append(rule)
                else:
                    self._into.setdefault(rule.destination, []).append(rule)
        self._wild_src = any(r.source == ANY_ZONE for r in self.rules)
        self._wild_dst = any(r.destination == ANY_ZONE for r in self.rules)
        self._ip_cache: dict[str, str | None] = {}
        self._k8s_cache: dict[tuple[Any, ...], str | None] = {}
        self._has_expiry = any(r.expires is not None for r in self.rules)
        self._intra_allow = self.defaults.intra_zone == "allow"
        self._decisions: dict[tuple[Any, ...], tuple[bool, str | None, str]] = {}
        self._evidence_cache: dict[tuple[Any, ...], Initiator | None] = {}
        self._placements: dict[tuple[Any, ...], Placement] = {}
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
        except (OSError, ValueError, TypeError):
            return None
        if v6 and packed[:12] == _V4_MAPPED:  # ::ffff:10.0.2.7 is 10.0.2.7 (RFC 4291 2.5.5.2)
            return self._lookup_ip(_ntop(_INET, packed[12:]))
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

    def _pairs(self, src: str, dst: str) -> list[tuple[str, str]]:
        """The index keys whose rules could allow ``src`` -> ``dst``: the pair, then the
        wildcards ('*' stands for every zone but the Internet)."""
        keys = [(src, dst)]
        if self._wild_src and src != INTERNET:
            keys.append((ANY_ZONE, dst))
        if self._wild_dst and dst != INTERNET:
            keys.append((src, ANY_ZONE))
            if self._wild_src and src != INTERNET:
                keys.append((ANY_ZONE, ANY_ZONE))
        return keys

    def rules_between(self, src: str, dst: str) -> list[CompiledRule]:
        """Every rule that could allow ``src`` -> ``dst`` (wildcards included)."""
        index = self._index
        return [rule for key in self._pairs(src, dst) for rule in index.get(key, ())]

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

    # --- who opened the connection ------------------------------------------------

    def initiator(
        self,
        src: str,
        dst: str,
        proto: int | None,
        sport: int | None,
        dport: int | None,
        when: float | None = None,
    ) -> Initiator | None:
        """The model's evidence on who opened a record's connection (zones ``src`` ->
        ``dst``): a rule admits one direction and not the other; else the destination
        port is a declared service of the destination zone and the source port not one
        of the source zone's (or the other way round). Only rules that name their ports
        count: one that allows every port says nothing of which side serves, and one over
        ephemeral ports (RPC's dynamic range) nothing against a service port on the
        other side. None when the model cannot tell.
        """
        if sport is None or dport is None or proto not in _PORTED:
            return None
        # a rule over ephemeral ports (RPC's dynamic range) says nothing against a
        # service port on the other side: that side is the server
        on_dst = not (dport >= EPHEMERAL > sport)
        on_src = not (sport >= EPHEMERAL > dport)
        if src != dst:
            forward = on_dst and self._admitted(src, dst, proto, dport, when)
            back = on_src and self._admitted(dst, src, proto, sport, when)
            if forward != back:
                return _BY_MODEL[back]
        to_dst = on_dst and self._serves(dst, proto, dport)
        to_src = on_src and self._serves(src, proto, sport)
        if to_dst != to_src:
            return _BY_MODEL[to_src]
        return None

    def _admitted(
        self, src: str, dst: str, proto: int | None, port: int, when: float | None
    ) -> bool:
        """A rule that names its ports (not the default action, nor an every-port rule,
        which says nothing of who serves) admits connections src -> dst on ``port``."""
        named = self._named
        for key in self._pairs(src, dst):
            rules = named.get(key)
            if rules is None:
                if len(named) >= _CACHE_LIMIT:
                    named.clear()
                rules = named[key] = tuple(r for r in self._index.get(key, ()) if r.ports)
            for rule in rules:
                if rule.admits(proto, port) and (
                    rule.expires is None or when is None or when <= rule.expires
                ):
                    return True
        return False

    def _serves(self, zone: str, proto: int | None, port: int) -> bool:
        """``port`` is a declared service of ``zone``: a rule into it names that port."""
        if any(r.admits(proto, port) for r in self._into.get(zone, ())):
            return True
        return zone != INTERNET and any(r.admits(proto, port) for r in self._into_any)

    # --- placing -----------------------------------------------------------------

    def place(self, event: dict[str, Any], learned: ServerPorts | None = None) -> Placement:
        """Where an event's connection sits, which rule (if any) allows it, and the verdict.

        The record's initiator is told first (``detector.connection``: the log, the
        model, ``learned`` server ports, the port ranges); a reply is judged as the
        connection it answers, and says so in its reason. The event's time decides
        whether a time-bounded exception still applies. A flow whose log does not
        say whether it passed is taken as passed.
        """
        source = event.get("source")
        destination = event.get("destination")
        src = self.zone_of(source)
        dst = self.zone_of(destination)
        network = event.get("network")
        iana = network.get("iana_number") if network else None
        proto = int(iana) if iana else None
        sport = source.get("port") if source else None
        dport = destination.get("port") if destination else None
        when = event_time(event) if self._has_expiry else None
        side, evidence = self._who(event, src, dst, proto, sport, dport, when, learned)
        port = dport
        if side == "destination":  # a reply: judge the connection it answers
            src, dst, source, destination, port = dst, src, destination, source, sport
        transport = network.get("transport") if network else None
        passed = _passed(event)
        case = (src, dst, proto, port, passed, side, evidence, transport)
        if when is None:
            hit = self._placements.get(case)
            if hit is not None:
                return hit
        placement = self._judge(src, dst, proto, port, passed, side, evidence, transport, when,
                                source, destination)  # fmt: skip
        # the reasons of an unmanaged endpoint and of a forbidden reply name addresses
        verdict = placement.verdict
        if when is None and (
            verdict in _ALLOWED or (side != "destination" and verdict != "unmanaged")
        ):
            if len(self._placements) >= _CACHE_LIMIT:
                self._placements.clear()
            self._placements[case] = placement
        return placement

    def initiator_host(self, event: dict[str, Any]) -> str:
        """The address of the host that opened a record's connection as the log, the model
        and the port ranges tell it — never learned state, so every record of a
        connection gets the same answer wherever it is asked — or the source's when they
        cannot tell (as :meth:`place` judges such a record). The key that brings a
        connection's records, and an initiator's connections, to one scorer."""
        return self.connection_hosts(event)[0]

    def connection_hosts(self, event: dict[str, Any]) -> tuple[str, str]:
        """(initiator, responder) addresses of a record's connection, the initiator as
        :meth:`initiator_host` tells it."""
        source = event.get("source")
        destination = event.get("destination")
        network = event.get("network")
        iana = network.get("iana_number") if network else None
        when = event_time(event) if self._has_expiry else None
        side, _ = self._who(event, self.zone_of(source), self.zone_of(destination),
                            int(iana) if iana else None, source.get("port") if source else None,
                            destination.get("port") if destination else None, when)  # fmt: skip
        if side == "destination":
            source, destination = destination, source
        return str((source or {}).get("ip") or ""), str((destination or {}).get("ip") or "")

    def _who(
        self,
        event: dict[str, Any],
        src: str | None,
        dst: str | None,
        proto: int | None,
        sport: int | None,
        dport: int | None,
        when: float | None,
        learned: ServerPorts | None = None,
    ) -> Initiator:
        """Who opened the record's connection: the log, the model, ``learned`` server
        ports, the port ranges, in that order (``detector.connection``)."""
        found = from_log(event)
        if found is None and src is not None and dst is not None:
            if sport is not None and dport is not None and when is None:
                wide = self._names_ephemeral  # else every ephemeral port is alike to the model
                key = (src, dst, proto, sport if wide or sport < EPHEMERAL else -1,
                       dport if wide or dport < EPHEMERAL else -1)  # fmt: skip
                found = self._evidence_cache.get(key, _MISSING)
                if found is _MISSING:
                    found = self._evidence_cache[key] = self.initiator(src, dst, proto, sport,
                                                                       dport)  # fmt: skip
                    if len(self._evidence_cache) >= _CACHE_LIMIT:
                        self._evidence_cache.clear()
            else:
                found = self.initiator(src, dst, proto, sport, dport, when)
        if found is None and learned is not None:
            source, destination = event.get("source"), event.get("destination")
            if source and destination:
                found = learned.decide(
                    (source.get("ip") or "", src, sport),
                    (destination.get("ip") or "", dst, dport),
                    proto,
                )
        if found is None and proto in _PORTED:
            found = from_ports(sport, dport)
        return found or UNKNOWN

    def _judge(
        self,
        src: str | None,
        dst: str | None,
        proto: int | None,
        port: int | None,
        passed: bool,
        side: Side,
        evidence: str,
        transport: str | None,
        when: float | None,
        source: dict[str, Any] | None,
        destination: dict[str, Any] | None,
    ) -> Placement:
        """The placement of a connection as initiated (``source``, ``destination``: the
        initiator's and the responder's endpoints)."""
        service = f"{transport or proto}/{port}" if port is not None else transport
        monitor = self._monitor
        mode: Literal["enforce", "monitor"] = (
            "monitor" if monitor and (src in monitor or dst in monitor) else "enforce"
        )
        if src is None or dst is None:
            which, endpoint = ("source", source) if src is None else ("destination", destination)
            if side == "destination":
                which = "initiator" if src is None else "responder"
            reason = f"{which} {_describe(endpoint)} is in no zone"
            return Placement(src, dst, "unmanaged", None, reason, self.version, mode,
                             side, evidence, service)  # fmt: skip
        if src == dst and self._intra_allow:
            allowed, rule_id, reason = True, None, f"inside zone {src} (intra_zone: allow)"
        else:
            allowed, rule_id, reason = self._decide(src, dst, proto, port, when)
        if allowed:
            verdict: Verdict = "allowed" if passed else "over_restrictive"
        else:
            verdict = "violation" if passed else "blocked_attempt"
        if side == "destination":
            reason = _reply_reason(allowed, rule_id, reason, source, destination, service)
        return Placement(src, dst, verdict, rule_id, reason, self.version, mode, side, evidence,
                         service)  # fmt: skip

    def _decide(
        self, src: str, dst: str, proto: int | None, port: int | None, when: float | None
    ) -> tuple[bool, str | None, str]:
        """(allowed, rule id, reason) for connections src -> dst; cached unless rules expire."""
        key = (src, dst, proto, port)
        if when is None:
            hit = self._decisions.get(key)
            if hit is not None:
                return hit
        rule, expired = self.match(src, dst, proto, port, when)
        if rule is not None:
            decision: tuple[bool, str | None, str] = (True, rule.id, f"flow {rule.id} allows it")
        elif self.defaults.action == "allow" and expired is None:
            decision = (True, None, "no flow matches; default action allow")
        else:
            decision = (False, None, _denial(src, dst, proto, port, expired))
        if when is None:
            if len(self._decisions) >= _CACHE_LIMIT:
                self._decisions.clear()
            self._decisions[key] = decision
        return decision


_MISSING: Any = object()
_PORTED = frozenset({6, 17, 132})  # TCP, UDP, SCTP: protocols with ports
_ALLOWED = frozenset({"allowed", "over_restrictive"})
_BY_MODEL = {True: Initiator("destination", "model"), False: Initiator("source", "model")}


def _reply_reason(
    allowed: bool,
    rule_id: str | None,
    reason: str,
    initiator: dict[str, Any] | None,
    responder: dict[str, Any] | None,
    service: str | None,
) -> str:
    """The reason of a reply record: its connection's, as initiated."""
    if allowed and rule_id is not None:
        return f"reply on a connection flow {rule_id} allows"
    if allowed:
        return f"reply on a connection: {reason}"
    a = (initiator or {}).get("ip") or "?"
    b = (responder or {}).get("ip") or "?"
    return f"reply on {a} -> {b} {service}, which no flow allows ({reason})"


_pton, _ntop, _INET, _INET6, _from_bytes = (
    socket.inet_pton,
    socket.inet_ntop,
    socket.AF_INET,
    socket.AF_INET6,
    int.from_bytes,
)
_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"
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
