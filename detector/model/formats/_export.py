"""Shared by the exporters: what each zone must let in and out, from the model's flows."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from detector.errors import DetectorError
from detector.model.schema import (
    ANY_ZONE,
    INTERNET,
    LOCAL_NETWORKS,
    LabelExpression,
    LabelSelector,
    ModelDocument,
    PodSelector,
    Zone,
    inside,
)
from detector.model.services import ALL, Services, flow_services, union

__all__ = [
    "LOCAL_V4",
    "SYSTEM_NAMESPACES",
    "ExportProblem",
    "Need",
    "exclusive_selectors",
    "needs",
    "outside_system",
    "zone_selectors",
]

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


def exclusive_selectors(doc: ModelDocument, warnings: list[str]) -> dict[str, list[PodSelector]]:
    """Each zone's pod selectors, narrowed so that they leave out the pods of the more
    specific zones inside them: the model puts a pod in the most specific zone that
    selects it, while a policy applies to every pod its selector matches.

    A zone inside another by one more label (``{ns a}`` around ``{ns a, app: x}``) is
    left out with ``app NotIn [x]`` (the wider zone's namespaces taken one at a time);
    an overlap that cannot be written so is warned about, naming both zones and the
    wider zone's flows that then also apply to the narrower one's pods.
    """
    out: dict[str, list[PodSelector]] = {}
    pod_zones = [z for z in doc.zones if z.kubernetes]
    for zone in pod_zones:
        kept: list[PodSelector] = []
        for sel in zone.kubernetes:
            parts = [(one, _inner_labels(one, zone, pod_zones, doc, warnings))
                     for one in _per_namespace(sel)]  # fmt: skip
            if not any(excluded for _, excluded in parts):
                kept.append(sel)  # nothing to leave out: as written
                continue
            kept += [_excluding(one, excluded) for one, excluded in parts]
        out[zone.name] = kept
    return out


def _inner_labels(
    sel: PodSelector, zone: Zone, pod_zones: list[Zone], doc: ModelDocument, warnings: list[str]
) -> dict[str, list[str]]:
    """label -> values of the zones inside ``sel`` by that one label (to leave out);
    the other zones inside it are warned about."""
    excluded: dict[str, list[str]] = {}
    for other in pod_zones:
        if other is zone:
            continue
        for inner in other.kubernetes:
            extra = _inside_by(inner, sel)
            if extra is None:
                continue
            if len(extra) == 1 and extra[0][0] and sel.namespaces:
                excluded.setdefault(extra[0][0], []).append(extra[0][1])
                continue
            flows = ", ".join(f.id for f in doc.flows if zone.name in (*f.source, *f.destination))
            warning = (
                f"zone {zone.name}: its selector also matches the pods of zone {other.name} "
                f"too, which the target cannot leave out; what {zone.name} may open and "
                f"receive ({flows or 'its defaults'}) also applies to them"
            )
            if warning not in warnings:
                warnings.append(warning)
    return excluded


def _per_namespace(sel: PodSelector) -> list[PodSelector]:
    if len(sel.namespaces) <= 1:
        return [sel]
    return [sel.model_copy(update={"namespaces": (ns,)}) for ns in sel.namespaces]


def _inside_by(inner: PodSelector, outer: PodSelector) -> list[tuple[str, str]] | None:
    """The label requirements ``inner`` adds to ``outer`` when every pod ``inner``
    selects is also ``outer``'s (None when not inside, or not more specific); an
    added expression is returned as ("", "") so that it cannot be excluded."""
    if outer.namespaces and not set(inner.namespaces) <= set(outer.namespaces):
        return None
    if outer.namespaces and not inner.namespaces:
        return None
    if (
        outer.namespace_selector is not None
        and inner.namespace_selector != outer.namespace_selector
    ):
        return None
    a = outer.pod_selector or LabelSelector()
    b = inner.pod_selector or LabelSelector()
    if not (a.match_labels.items() <= b.match_labels.items()
            and set(a.match_expressions) <= set(b.match_expressions)):  # fmt: skip
        return None
    extra = [(k, v) for k, v in sorted(b.match_labels.items()) if k not in a.match_labels]
    extra += [("", "")] * len(set(b.match_expressions) - set(a.match_expressions))
    if inner.namespace_selector is not None and outer.namespace_selector is None:
        extra.append(("", ""))
    return extra or None


def _excluding(sel: PodSelector, excluded: dict[str, list[str]]) -> PodSelector:
    if not excluded:
        return sel
    base = sel.pod_selector or LabelSelector()
    exprs = [*base.match_expressions,
             *(LabelExpression(key=k, operator="NotIn", values=tuple(sorted(set(v))))
               for k, v in sorted(excluded.items()))]  # fmt: skip
    pod = LabelSelector.model_validate({"matchLabels": dict(base.match_labels)}).model_copy(
        update={"match_expressions": tuple(exprs)}
    )
    return sel.model_copy(update={"pod_selector": pod})


def zone_selectors(zone: Zone, exclusive: dict[str, list[PodSelector]] | None) -> list[PodSelector]:
    """The zone's selectors as :func:`exclusive_selectors` narrowed them."""
    return list(zone.kubernetes) if exclusive is None else exclusive.get(zone.name, [])
