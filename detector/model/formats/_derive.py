"""Shared by the importers: zones derived from another format's selectors or groups,
and the native model that allows, between each pair of them, exactly what the
other format allows.

Each derived zone has a *representative*: an endpoint (address and/or
Kubernetes identity) that the zone's members stand for. The importer's
``allowed(a, b)`` answers with the other format's own semantics for the two
representatives; the result is written as native flows. A zone is the
members its selector names and no others (a pod matching several zones
belongs to the most specific one, as in placement).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from detector.errors import DetectorError
from detector.model.load import SegmentationModel, model_from_data
from detector.model.schema import INTERNET, LOCAL_NETWORKS, inside
from detector.model.services import Services, to_flow_specs

__all__ = [
    "DerivedZone",
    "ImportProblem",
    "Selecting",
    "add_address_zones",
    "build_model",
    "catch_all",
    "catch_all_zones",
    "named_namespaces",
    "namespace_of",
    "port_range",
    "representative_address",
    "selector_labels",
    "slug",
    "zone_worthy",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# tried in order for the Internet's representative: public, in no declared zone
_PUBLIC_CANDIDATES = ("198.51.100.77", "203.0.113.77", "192.0.2.77", "8.8.8.8", "1.1.1.1")


class ImportProblem(DetectorError):
    """Input another tool wrote that segwatch cannot translate faithfully.

    :param where: ``file`` or ``file: policy ns/name`` and the field.
    """

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


def namespace_of(meta: Any, where: str) -> str:
    """A policy's ``metadata.namespace`` (``default`` if none), checked: a name such
    as ``../x`` is refused, here, with the file and policy named.

    :raises ImportProblem: not a Kubernetes namespace name.
    """
    namespace = (meta.get("namespace") if isinstance(meta, dict) else None) or "default"
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise ImportProblem(where, f"metadata.namespace {str(namespace)[:80]!r} is not a "
                            "Kubernetes namespace name")  # fmt: skip
    return namespace


class Selecting:
    """The policies (anything with ``types`` and ``selects(zone)``) that select each
    zone in one direction, worked out once per zone: an import asks it for every pair
    of zones."""

    def __init__(self, policies: Sequence[Any]) -> None:
        self.policies = policies
        self._found: dict[tuple[str, str], list[Any]] = {}

    def __call__(self, zone: DerivedZone, direction: str) -> list[Any]:
        kind = "Ingress" if direction == "ingress" else "Egress"
        found = self._found.get((zone.name, kind))
        if found is None:
            found = self._found[(zone.name, kind)] = [
                p for p in self.policies if kind in p.types and p.selects(zone)
            ]
        return found


def port_range(first: int, last: int, where: str) -> tuple[int, int]:
    """A policy's port range, checked: reversed, negative or beyond 65535 is refused
    (the platform would refuse it too), never dropped silently.

    :raises ImportProblem: not a range of ports.
    """
    if not 0 <= first <= last <= 65535:
        what = f"port {first}" if first == last else f"port range {first}-{last}"
        raise ImportProblem(where, f"{what} is not within 0-65535 (a range's first port "
                            "no more than its last)")  # fmt: skip
    return first, last


_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass
class DerivedZone:
    """A zone the importer found, with what it stands for."""

    name: str
    endpoint: dict[str, Any]  # the representative, shaped like an event's source/destination
    cidrs: list[Network] = field(default_factory=list)
    kubernetes: list[dict[str, Any]] = field(default_factory=list)
    within: str | None = None
    description: str = ""
    tags: dict[str, Any] = field(default_factory=dict)
    mode: str = "enforce"

    @property
    def is_internet(self) -> bool:
        return self.name == INTERNET

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name}
        if self.description:
            data["description"] = self.description
        if self.cidrs:
            data["cidrs"] = [str(c) for c in self.cidrs]
        if self.kubernetes:
            data["kubernetes"] = self.kubernetes
        if self.within:
            data["within"] = self.within
        if self.tags:
            data["tags"] = self.tags
        if self.mode != "enforce":
            data["mode"] = self.mode
        return data


def build_model(
    name: str,
    description: str,
    zones: list[DerivedZone],
    allowed: Callable[[DerivedZone, DerivedZone], Services],
    governed: Callable[[DerivedZone, DerivedZone], bool],
    warnings: list[str],
) -> SegmentationModel:
    """The native model allowing, for each governed pair, what ``allowed`` says.

    :param governed: whether the source format decides this pair at all
        (traffic between two external networks is nobody's business here).
    """
    flows: list[dict[str, Any]] = []
    for src in zones:
        for dst in zones:
            if not governed(src, dst):
                continue
            services = allowed(src, dst)
            if not services:
                continue
            if services.get("other") and not all(services.get(p) for p in ("tcp", "udp", "icmp")):
                warnings.append(
                    f"{src.name} -> {dst.name}: protocols other than tcp, udp and icmp are "
                    "allowed there; the model can only say 'any', so they are left out"
                )
            specs = to_flow_specs(services)
            for proto, ports in specs:
                flow: dict[str, Any] = {
                    "id": slug(
                        f"{src.name}-to-{dst.name}" + (f"-{proto}" if len(specs) > 1 else "")
                    ),
                    "from": src.name,
                    "to": dst.name,
                    "protocol": proto,
                }
                if ports:
                    flow["ports"] = [
                        p.first if p.first == p.last else f"{p.first}-{p.last}" for p in ports
                    ]
                flows.append(flow)
    data = {
        "apiVersion": "segwatch/v1",
        "kind": "SegmentationModel",
        "metadata": {"name": slug(name), "description": description},
        "defaults": {
            "action": "deny",
            "intra_zone": "deny",  # the source format decides traffic inside a zone too
            "internet": any(z.is_internet for z in zones),
        },
        "zones": [z.to_data() for z in zones if not z.is_internet],
        "flows": flows,
    }
    return model_from_data(data, f"<imported {name}>")


def slug(text: str, limit: int = 63) -> str:
    """A zone/flow name: lower case, ``[a-z0-9_.-]``, starting and ending alphanumeric."""
    out = re.sub(r"[^a-z0-9_.-]+", "-", text.lower()).strip("-_.")
    return out[:limit].rstrip("-_.") or "zone"


CATCH_ALL = "catch_all"  # the tag of a zone an import made for pods no policy names


def catch_all(why: str) -> dict[str, Any]:
    """The description and tags of a catch-all zone (``why`` it exists)."""
    return {"description": why, "tags": {CATCH_ALL: "true"}}


def catch_all_zones(model: SegmentationModel) -> list[tuple[str, str]]:
    """(name, why) of the catch-all zones an import made, for its summary."""
    return [(z.name, z.description or "") for z in model.document.zones
            if z.tags.extra.get(CATCH_ALL) == "true"]  # fmt: skip


def named_namespaces(zones: Iterable[DerivedZone]) -> list[str]:
    """The namespaces the zones' selectors name: each needs a zone for its other pods
    (Kubernetes makes every pod a member of its namespace, selected or not)."""
    return sorted({ns for z in zones for sel in z.kubernetes for ns in sel.get("namespaces") or []})


def unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken or candidate == INTERNET:
        suffix = f"-{n}"
        candidate, n = name[: 63 - len(suffix)] + suffix, n + 1
    taken.add(candidate)
    return candidate


def selector_labels(selector: dict[str, Any] | None) -> dict[str, str] | None:
    """Labels a representative member of a Kubernetes label selector carries.

    None when the selector can match nothing (its parts contradict).
    """
    labels = dict((selector or {}).get("matchLabels") or {})
    for expr in (selector or {}).get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        have = labels.get(key)
        if op == "In":
            if have is not None and have not in values:
                return None
            labels.setdefault(key, values[0])
        elif op == "Exists":
            labels.setdefault(key, "present")
        elif (op == "NotIn" and have in values) or (op == "DoesNotExist" and have is not None):
            return None
    return labels


def representative_address(network: Network, inner: Iterable[Network]) -> str | None:
    """An address of ``network`` outside every network in ``inner``, if one exists."""
    inner = [n for n in inner if n != network and inside(n, network)]
    first, last = int(network.network_address), int(network.broadcast_address)
    candidates = [first + 1, last - 1, (first + last) // 2, first, last]
    for net in inner:  # just past each excluded block
        candidates += [int(net.broadcast_address) + 1, int(net.network_address) - 1]
    for value in candidates:
        if not first <= value <= last:
            continue
        address = (
            ipaddress.ip_address(value) if network.version == 4 else ipaddress.IPv6Address(value)
        )
        if not any(address in n for n in inner):
            return str(address)
    return None


def internet_representative(networks: Iterable[Network]) -> str | None:
    """A public address in none of the given networks (None: they cover the Internet)."""
    nets = list(networks)
    for text in _PUBLIC_CANDIDATES:
        address = ipaddress.ip_address(text)
        if not any(address in n for n in nets if n.version == 4):
            return text
    return None


_SKIP_AS_ZONES = {"0.0.0.0/0", "::/0", *LOCAL_NETWORKS}


def zone_worthy(net: Network) -> bool:
    """Whether a network named in a rule becomes a zone: not "everything", and not one
    of the local ranges a rule names only to carve them out of the Internet."""
    return str(net) not in _SKIP_AS_ZONES


def add_address_zones(
    zones: list[DerivedZone],
    nets: dict[str, Network],
    taken: set[str],
    what: str,
    warnings: list[str],
) -> list[DerivedZone]:
    """``zones`` plus one zone per network the rules name (``what``: "ipBlock", "nets"),
    each with a representative address, nested, and the Internet when some public
    address is left outside them all."""
    by_address = sorted(nets.items(), key=lambda item: (item[1].version, item[1]))
    candidates = [
        DerivedZone(unique(slug(f"net-{t.replace('/', '-').replace(':', '-')}"), taken), {},
                    cidrs=[n], description=f"{what} {t}")
        for t, n in by_address
    ]  # fmt: skip
    out = list(zones)
    for zone in candidates:
        rep = representative_address(zone.cidrs[0], [z.cidrs[0] for z in candidates])
        if rep is None:
            warnings.append(f"{zone.name}: every address is in a more specific {what}; left out")
            continue
        zone.endpoint = {"ip": rep}
        out.append(zone)
    nest(out)
    internet = internet_representative(nets.values())
    if internet is not None:
        out.append(DerivedZone(INTERNET, {"ip": internet}))
    return out


def nest(zones: list[DerivedZone]) -> None:
    """Declare ``within`` for CIDR zones whose (single) network lies in another zone's."""
    nets = [(z.cidrs[0], z) for z in zones if len(z.cidrs) == 1]
    for net, zone in nets:
        parents = [
            (other_net, other)
            for other_net, other in nets
            if other is not zone
            and other_net.version == net.version
            and inside(net, other_net)
            and other_net != net
        ]
        if parents:
            zone.within = max(parents, key=lambda p: p[0].prefixlen)[1].name
