"""Who opened a connection: the initiator of a flow-log record, and the evidence used.

Flow logs record each direction of a connection as a record of its own (VPC Flow
Logs, iptables LOG rules that match both ways, Hubble), or one record per
connection (Calico flow logs). Everything segwatch judges — verdicts, paths, scans,
alerts — is about the connection as its initiator opened it, so each record is
first told apart: a *request* (its source opened the connection) or a *reply* (its
destination did). The evidence, strongest first:

1. the log itself (:func:`from_log`): Hubble's ``is_reply``; Calico flow logs, which
   are written per connection from the initiator's side (``reporter`` src or dst);
   Zeek's originator (``id.orig_*`` is the source), unless it saw only midstream
   traffic (``OTH``, ``SHR``, ``RSTRH``); TCP flags where the log carries them (VPC
   Flow Logs v3+ ``tcp-flags``, iptables/nftables and Hubble flags): SYN without ACK
   opens, SYN-ACK answers; ICMP echo request/reply and error types;
2. the model (:meth:`detector.model.CompiledModel.initiator`): a rule admits one
   direction and not the other, or the destination port is a declared service of
   the destination zone and the source port is not one of the source zone's;
3. learned server ports (:class:`ServerPorts`): ports a host or zone was seen
   answering from, on connections whose initiator the log or the model decided;
4. the port ranges (:func:`from_ports`): a system port (0-1023) against a
   registered one (1024-32767) against an ephemeral one (32768-65535: Linux
   32768-60999, Windows 49152-65535) — the lower range is the server;
5. otherwise ``unknown``: the record is judged as written (source first).

VPC Flow Logs' ``flow-direction`` (v5) says on which side of the interface a
record was captured, not who opened the connection, so it decides nothing here.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, NamedTuple

from aiokafka.partitioner import murmur2

__all__ = [
    "EPHEMERAL",
    "STRONG_EVIDENCE",
    "UNKNOWN",
    "Initiator",
    "ServerPorts",
    "Side",
    "from_log",
    "from_ports",
    "keep_latest",
    "key_partition",
    "port_class",
]

Side = Literal["source", "destination", "unknown"]


class Initiator(NamedTuple):
    """Which side of a record opened its connection, and the evidence (a short word):
    ``is_reply``, ``reporter``, ``tcp_flags``, ``icmp_type`` (the log), ``model``,
    ``learned``, ``ports``, or ``none``."""

    side: Side
    evidence: str

    @property
    def reply(self) -> bool:
        """The record is the answer on a connection its destination opened."""
        return self.side == "destination"


UNKNOWN = Initiator("unknown", "none")
SOURCE_BY_REPORTER = Initiator("source", "reporter")
SOURCE_BY_ORIGINATOR = Initiator("source", "originator")
# evidence good enough to learn server ports from
STRONG_EVIDENCE = frozenset({"is_reply", "reporter", "originator", "tcp_flags", "icmp_type",
                             "model"})  # fmt: skip

_BY_FLAGS = {True: Initiator("destination", "tcp_flags"), False: Initiator("source", "tcp_flags")}
_BY_ICMP = {True: Initiator("destination", "icmp_type"), False: Initiator("source", "icmp_type")}
_BY_HUBBLE = {True: Initiator("destination", "is_reply"), False: Initiator("source", "is_reply")}
# ICMP types that answer (echo reply, unreachable, source quench, redirect, time exceeded,
# parameter problem, timestamp/information/mask replies) and those that ask
_ICMP_ANSWERS = frozenset({0, 3, 4, 5, 11, 12, 14, 16, 18})
_ICMP_ASKS = frozenset({8, 13, 15, 17})
_ICMP6_ANSWERS = frozenset({1, 2, 3, 4, 129, 131, 136})  # errors, echo reply, MLD report, NA
_ICMP6_ASKS = frozenset({128, 130, 135})  # echo request, MLD query, neighbour solicitation
_AWS_SYN, _AWS_SYN_ACK = 0x02, 0x12
# Zeek states where it never saw the opening: its originator is a guess
_ZEEK_MIDSTREAM = frozenset({"OTH", "SHR", "RSTRH"})


def _syn(flags: Any) -> bool | None:
    """From a list of flag names: True for SYN-ACK, False for SYN alone, None otherwise."""
    if not flags:
        return None
    upper = {str(f).upper() for f in flags}
    if "SYN" not in upper:
        return None
    return "ACK" in upper


def from_log(event: dict[str, Any]) -> Initiator | None:
    """The initiator as the record itself tells it, or None when it does not."""
    hubble = event.get("hubble")
    if hubble is not None:
        is_reply = hubble.get("is_reply")
        if type(is_reply) is bool:
            return _BY_HUBBLE[is_reply]
        answer = _syn(hubble.get("tcp_flags"))
        return None if answer is None else _BY_FLAGS[answer]
    calico = event.get("calico")
    if calico is not None and calico.get("reporter") in ("src", "dst"):
        return SOURCE_BY_REPORTER
    zeek = event.get("zeek")
    if zeek is not None:  # Zeek's originator, unless it saw only midstream traffic
        state = (zeek.get("connection") or {}).get("state")
        return None if state in _ZEEK_MIDSTREAM else SOURCE_BY_ORIGINATOR
    aws = event.get("aws")
    if aws is not None:
        flags = (aws.get("vpcflow") or {}).get("tcp_flags")
        if flags is None:
            return None
        try:
            bits = int(flags)
        except (TypeError, ValueError):
            return None
        if bits & _AWS_SYN_ACK == _AWS_SYN_ACK:
            return _BY_FLAGS[True]
        return _BY_FLAGS[False] if bits & _AWS_SYN else None
    ipt = event.get("iptables")
    if ipt is not None:
        tcp = ipt.get("tcp")
        if tcp is not None:
            answer = _syn(tcp.get("flags"))
            return None if answer is None else _BY_FLAGS[answer]
        icmp = ipt.get("icmp")
        if icmp is not None and "type" in icmp:
            v6 = (event.get("network") or {}).get("iana_number") == "58"
            answers, asks = (_ICMP6_ANSWERS, _ICMP6_ASKS) if v6 else (_ICMP_ANSWERS, _ICMP_ASKS)
            kind = icmp["type"]
            if kind in answers:
                return _BY_ICMP[True]
            if kind in asks:
                return _BY_ICMP[False]
    return None


EPHEMERAL = 32768  # the first port of the ephemeral range (Linux and Windows alike above it)


def port_class(port: int) -> int:
    """0 system (0-1023), 1 registered (1024-32767), 2 ephemeral (32768-65535)."""
    return 0 if port < 1024 else 1 if port < EPHEMERAL else 2


_BY_PORTS = {True: Initiator("destination", "ports"), False: Initiator("source", "ports")}


def from_ports(sport: int | None, dport: int | None) -> Initiator | None:
    """The last resort: the side on the lower port range is the server."""
    if sport is None or dport is None or sport == 0 or dport == 0:
        return None
    s, d = port_class(sport), port_class(dport)
    if s == d:
        return None
    return _BY_PORTS[s < d]


_BY_LEARNED = {True: Initiator("destination", "learned"), False: Initiator("source", "learned")}


class ServerPorts:
    """Ports hosts and zones were seen answering from, learned from records whose
    initiator the log or the model decided; bounded (the oldest forgotten first).

    Plain, JSON-ready state (``state()`` / ``load()``), like the detectors'.
    """

    name = "server_ports"

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self.ports: dict[str, int] = {}  # "ip|proto|port" or "=zone|proto|port" -> last seen

    @staticmethod
    def _key(owner: str, proto: int | None, port: int) -> str:
        return f"{owner}|{proto}|{port}"

    def learn(self, ip: str, zone: str | None, proto: int | None, port: int, when: int) -> None:
        """``ip`` (of ``zone``) answered a connection on ``port``."""
        ports = self.ports
        key = self._key(ip, proto, port)
        if key not in ports and len(ports) >= self.max_entries:
            for stale in list(ports)[: self.max_entries // 10]:
                del ports[stale]
        ports[key] = when
        if zone is not None:
            ports[self._key("=" + zone, proto, port)] = when

    def serves(self, ip: str, zone: str | None, proto: int | None, port: int) -> bool:
        ports = self.ports
        return self._key(ip, proto, port) in ports or (
            zone is not None and self._key("=" + zone, proto, port) in ports
        )

    def decide(
        self,
        src: tuple[str, str | None, int | None],
        dst: tuple[str, str | None, int | None],
        proto: int | None,
    ) -> Initiator | None:
        """Given (ip, zone, port) of each side: the side that answers from a learned
        server port, if exactly one does."""
        (sip, szone, sport), (dip, dzone, dport) = src, dst
        if not self.ports or sport is None or dport is None:
            return None
        src_serves = self.serves(sip, szone, proto, sport)
        dst_serves = self.serves(dip, dzone, proto, dport)
        if src_serves == dst_serves:
            return None
        return _BY_LEARNED[src_serves]

    def state(self) -> dict[str, Any]:
        return {"ports": self.ports}

    def load(self, state: dict[str, Any]) -> None:
        """Merge ``state`` in: each entry keeps its latest sighting."""
        keep_latest(self.ports, state["ports"])


def keep_latest(into: dict[Any, int], seen: dict[Any, int]) -> None:
    """Merge sightings (key -> last seen) into ``into``: each key keeps its latest."""
    for key, when in seen.items():
        if when > into.get(key, -1):
            into[key] = when


@functools.lru_cache(maxsize=1 << 16)  # hosts come back: murmur2 in Python costs ~3 us
def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's Java client (and the worker's ``murmur2_random``
    partitioner) puts a message with ``key`` on, of ``partitions``."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions
