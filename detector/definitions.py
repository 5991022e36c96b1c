"""Constrained values declared once and reused: families, protocols, verdict words."""

from __future__ import annotations

from typing import Literal

__all__ = [
    "DATA_STREAM_TYPE",
    "DEFAULT_NAMESPACE",
    "ECS_VERSION",
    "FAMILIES",
    "IANA_PROTOCOLS",
    "NAMESPACE_PATTERN",
    "PROTOCOL_NUMBERS",
    "Disposition",
    "Family",
    "dataset",
    "stream_fields",
    "stream_name",
]

# The flow-log families: parsers, raw topics, data streams and every help text read this.
Family = Literal["vpcflow", "calico", "iptables", "hubble", "zeek"]
FAMILIES: tuple[Family, ...] = ("vpcflow", "calico", "iptables", "hubble", "zeek")

# The ECS version the documents follow (``ecs.version`` on every event, alert and
# incident), and Elastic's data stream naming scheme: ``{type}-{dataset}-{namespace}``,
# for example ``logs-segwatch.vpcflow-default``.
ECS_VERSION = "8.17.0"
DATA_STREAM_TYPE = "logs"
DEFAULT_NAMESPACE = "default"
# Elastic's rules for a namespace, kept to the safe part: lowercase letters, digits and
# underscores (no '-', which separates the parts of the name), at most 100 characters.
NAMESPACE_PATTERN = r"^[a-z0-9_]{1,100}$"


def dataset(family: str) -> str:
    """``event.dataset`` and ``data_stream.dataset`` of a family: ``segwatch.vpcflow``."""
    return f"segwatch.{family}"


def stream_fields(dataset: str, namespace: str = DEFAULT_NAMESPACE) -> dict[str, str]:
    """The ``data_stream`` object of a document (a new dict each call)."""
    return {"type": DATA_STREAM_TYPE, "dataset": dataset, "namespace": namespace}


def stream_name(dataset: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """``logs-segwatch.vpcflow-default``: where documents of a dataset are written."""
    return f"{DATA_STREAM_TYPE}-{dataset}-{namespace}"


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
