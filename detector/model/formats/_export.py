"""Shared by the exporters: what each zone must let in and out, from the model's flows."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from detector.errors import DetectorError
from detector.model.schema import ANY_ZONE, INTERNET, LOCAL_NETWORKS, ModelDocument, inside
from detector.model.services import ALL, Services, flow_services, union

__all__ = ["LOCAL_V4", "SYSTEM_NAMESPACES", "ExportProblem", "Need", "needs", "outside_system"]

LOCAL_V4 = tuple(n for n in LOCAL_NETWORKS if ":" not in n)
# what a default deny there would break: exports isolate them only when asked
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})


class ExportProblem(DetectorError):
    """A model the target cannot enforce at all: an export never writes nothing
    silently."""

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"cannot export to {target}: {reason}")


def outside_system(
    zone: str, namespaces: list[str], isolate_system: bool, warnings: list[str]
) -> list[str]:
    """The namespaces of a zone an export isolates: the system ones only when asked
    (``isolate_system``), with a warning naming what is left unenforced."""
    system = sorted({ns for ns in namespaces if ns in SYSTEM_NAMESPACES})
    if not system or isolate_system:
        return namespaces
    warnings.append(
        f"zone {zone}: not isolated in {', '.join(system)} (a default deny there breaks "
        f"what the cluster needs): flows into and out of {zone} are not enforced by the "
        "export; --isolate-system writes them"
    )
    return [ns for ns in namespaces if ns not in SYSTEM_NAMESPACES]


@dataclass(frozen=True)
class Need:
    """``zone`` must admit ``services`` in ``direction`` with ``peer`` (a zone or internet)."""

    zone: str
    direction: str  # ingress | egress
    peer: str
    services: tuple[tuple[str, tuple[tuple[int, int], ...]], ...]
    rule: str

    @property
    def service_set(self) -> Services:
        return {p: list(v) for p, v in self.services}


def needs(doc: ModelDocument, can_express: set[str], warnings: list[str]) -> list[Need]:
    """Every (zone, direction, peer, services) the flows, DNS and intra-zone rules ask for.

    :param can_express: protocols the format can write (``tcp``, ``udp``, ``icmp``);
        flows with others are left out with a warning, never widened.
    """
    zones = [z.name for z in doc.zones]
    out: list[Need] = []

    def allow(src: str, dst: str, services: Services, rule: str) -> None:
        frozen = tuple((p, tuple(v)) for p, v in sorted(services.items()))
        if dst != INTERNET:
            out.append(Need(dst, "ingress", src, frozen, rule))
        if src != INTERNET:
            out.append(Need(src, "egress", dst, frozen, rule))

    for flow in doc.flows:
        if flow.protocol not in can_express and flow.protocol != "any":
            warnings.append(f"flow {flow.id}: {flow.protocol} cannot be expressed; left out")
            continue
        if flow.expires is not None:
            warnings.append(
                f"flow {flow.id}: expires {flow.expires:%Y-%m-%d}, which the format "
                "cannot express: remove the rule by then"
            )
        services = flow_services(flow.protocol, flow.ports)
        for src in flow.source:
            for dst in flow.destination:
                for one in zones if src == ANY_ZONE else [src]:
                    for other in zones if dst == ANY_ZONE else [dst]:
                        allow(one, other, services, flow.id)
                        if flow.bidirectional:
                            allow(other, one, services, flow.id)
    if doc.defaults.dns is not None:
        dns = union(
            flow_services("udp", doc.defaults.dns.ports),
            flow_services("tcp", doc.defaults.dns.ports),
        )
        for name in zones:
            allow(name, doc.defaults.dns.zone, dns, "default-dns")
    if doc.defaults.intra_zone == "allow":
        for name in zones:
            allow(name, name, {p: list(v) for p, v in ALL.items()}, "intra-zone")
    return list(dict.fromkeys(out))


def internet_excepts(doc: ModelDocument) -> list[str]:
    """What ``0.0.0.0/0`` must leave out to mean the model's Internet."""
    declared = {str(n) for z in doc.zones for n in z.cidrs if n.version == 4}
    nets = sorted(set(LOCAL_V4) | declared - {"0.0.0.0/0"}, key=ipaddress.ip_network)
    return nets


def inner_networks(doc: ModelDocument, zone_name: str) -> dict[str, list[str]]:
    """For each CIDR of a zone, the more specific CIDRs of other zones inside it."""
    zone = next(z for z in doc.zones if z.name == zone_name)
    others = [n for z in doc.zones if z.name != zone_name for n in z.cidrs]
    return {
        str(net): sorted(str(n) for n in others if n != net and inside(n, net))
        for net in zone.cidrs
    }
