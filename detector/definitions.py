"""Constrained values declared once and reused: families, protocols, verdict words."""

from __future__ import annotations

from typing import Literal

__all__ = [
    "FAMILIES",
    "IANA_PROTOCOLS",
    "PROTOCOL_NUMBERS",
    "Disposition",
    "Family",
]

Family = Literal["vpcflow", "calico", "iptables", "hubble"]
FAMILIES: tuple[Family, ...] = ("vpcflow", "calico", "iptables", "hubble")

# What the network did with a flow, as the log says it.
Disposition = Literal["allowed", "denied", "unknown"]

# IANA protocol number -> ECS network.transport (Elastic's names, e.g. ipv6-icmp).
IANA_PROTOCOLS: dict[int, str] = {
    0: "hopopt", 1: "icmp", 2: "igmp", 4: "ipv4", 6: "tcp", 8: "egp", 17: "udp",
    41: "ipv6", 47: "gre", 50: "esp", 51: "ah", 58: "ipv6-icmp", 89: "ospf",
    103: "pim", 112: "vrrp", 132: "sctp", 136: "udplite",
}  # fmt: skip

# Names as logs write them (lower-cased) -> IANA number.
PROTOCOL_NUMBERS: dict[str, int] = {
    **{name: number for number, name in IANA_PROTOCOLS.items()},
    "icmpv6": 58, "icmp6": 58, "ipv6-icmp": 58, "icmpv4": 1,
}  # fmt: skip
