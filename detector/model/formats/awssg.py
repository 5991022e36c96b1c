"""AWS security groups (``aws ec2 describe-security-groups`` JSON) <-> the native model.

Import semantics (AWS's): security groups only allow, and are stateful. A
connection from A to B passes when one of A's groups allows it out (to B's
address or one of B's groups) *and* one of B's groups allows it in (from A's
address or one of A's groups). Addresses outside every group are not
restricted by groups.

Members come from ``aws ec2 describe-network-interfaces`` JSON (each
interface's private addresses and groups), or from a group's
``segwatch:cidrs`` tag (what the export writes). Interfaces with the same set
of groups form one zone (``web+ssh-admin``); rule CIDRs become zones
(``net-10.1.0.0-16``), ``0.0.0.0/0`` and ``::/0`` cover every zone and the
Internet. Refused: prefix lists (expand them first); ICMP type restrictions
are widened to all ICMP with a warning; groups referenced but not given are
left out with a warning.

Export writes one group per zone (``segwatch-<zone>``, deterministic ids) with
its CIDRs in the ``segwatch:cidrs`` tag, ingress and egress rules referencing
peer groups, and the Internet as the public address space minus the model's
networks (security groups have no "except").
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from detector.model.compile import CompiledModel
from detector.model.formats._derive import (
    DerivedZone,
    ImportProblem,
    build_model,
    internet_representative,
    nest,
    representative_address,
    slug,
    unique,
)
from detector.model.formats._export import LOCAL_V4, ExportProblem, needs
from detector.model.formats._io import read_documents
from detector.model.load import SegmentationModel
from detector.model.schema import INTERNET, inside
from detector.model.services import ALL, FULL, Services, intersect, union

__all__ = ["export_aws_sg", "import_aws_sg"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CIDRS_TAG = "segwatch:cidrs"
_EVERYWHERE = ("0.0.0.0/0", "::/0")


@dataclass
class _Group:
    id: str
    name: str
    where: str
    ingress: list[dict[str, Any]]
    egress: list[dict[str, Any]]
    members: list[Network] = field(default_factory=list)


def import_aws_sg(
    paths: list[str], name: str = "imported-aws-sg"
) -> tuple[SegmentationModel, list[str]]:
    """Security groups (and optionally network interfaces) -> a native model, and warnings."""
    groups: dict[str, _Group] = {}
    interfaces: list[tuple[str, list[Network], tuple[str, ...]]] = []
    for where, doc in read_documents(paths):
        if "SecurityGroups" in doc:
            for i, sg in enumerate(doc["SecurityGroups"]):
                group = _Group(
                    str(sg.get("GroupId")),
                    str(sg.get("GroupName") or sg.get("GroupId")),
                    f"{where} SecurityGroups[{i}] {sg.get('GroupId')}",
                    sg.get("IpPermissions") or [],
                    sg.get("IpPermissionsEgress") or [],
                )
                for tag in sg.get("Tags") or []:
                    if tag.get("Key") == "segwatch:zone":  # written by the export
                        group.name = str(tag["Value"])
                    if tag.get("Key") == CIDRS_TAG:
                        group.members += [_net(t, group.where) for t in str(tag["Value"]).split()]
                groups[group.id] = group
        elif "NetworkInterfaces" in doc:
            for eni in doc["NetworkInterfaces"]:
                addresses = [a.get("PrivateIpAddress") for a in eni.get("PrivateIpAddresses") or []]
                addresses += [a.get("Ipv6Address") for a in eni.get("Ipv6Addresses") or []]
                nets = [_net(a, where) for a in addresses if a]
                ids = tuple(sorted(str(g.get("GroupId")) for g in eni.get("Groups") or []))
                interfaces.append((str(eni.get("NetworkInterfaceId")), nets, ids))
        else:
            raise ImportProblem(
                where,
                "expected describe-security-groups JSON (SecurityGroups) "
                "or describe-network-interfaces JSON (NetworkInterfaces)",
            )
    if not groups:
        raise ImportProblem(", ".join(paths), "no security group found")
    warnings: list[str] = []
    zones, members_of = _zones(groups, interfaces, warnings)

    def side(zone: DerivedZone, peer: DerivedZone, direction: str) -> Services:
        mine = members_of.get(zone.name)
        if mine is None:
            return ALL  # not in any group: groups do not restrict it
        theirs = members_of.get(peer.name, ())
        allowed: Services = {}
        for gid in mine:
            group = groups[gid]
            for i, perm in enumerate(group.ingress if direction == "ingress" else group.egress):
                if _peer_matches(perm, peer, theirs, groups, warnings):
                    allowed = union(
                        allowed, _services(perm, f"{group.where} {direction}[{i}]", warnings)
                    )
        return allowed

    def governed(a: DerivedZone, b: DerivedZone) -> bool:
        return a.name in members_of or b.name in members_of

    def allowed(a: DerivedZone, b: DerivedZone) -> Services:
        return intersect(side(a, b, "egress"), side(b, a, "ingress"))

    model = build_model(
        name, f"Imported from {len(groups)} AWS security groups", zones, allowed, governed, warnings
    )
    return model, list(dict.fromkeys(warnings))


def _net(text: Any, where: str) -> Network:
    try:
        return ipaddress.ip_network(str(text), strict=False)
    except ValueError:
        raise ImportProblem(where, f"{text!r} is not an address or network") from None


def _peer_matches(
    perm: dict[str, Any],
    peer: DerivedZone,
    peer_groups: Iterable[str],
    groups: dict[str, _Group],
    warnings: list[str],
) -> bool:
    if perm.get("PrefixListIds"):
        raise ImportProblem(
            str(perm.get("PrefixListIds")),
            "prefix lists are not supported; expand them into CIDRs first",
        )
    ip = peer.endpoint.get("ip")
    if ip is not None:
        address = ipaddress.ip_address(ip)
        for key, field_ in (("IpRanges", "CidrIp"), ("Ipv6Ranges", "CidrIpv6")):
            for entry in perm.get(key) or []:
                net = ipaddress.ip_network(entry[field_], strict=False)
                if address.version == net.version and address in net:
                    return True
    for pair in perm.get("UserIdGroupPairs") or []:
        gid = str(pair.get("GroupId"))
        if gid not in groups:
            warnings.append(f"a rule references {gid}, which is not in the input: left out")
            continue
        if gid in peer_groups:
            return True
    return False


def _services(perm: dict[str, Any], where: str, warnings: list[str]) -> Services:
    proto = str(perm.get("IpProtocol", "-1")).lower()
    if proto == "-1":
        return {p: list(v) for p, v in ALL.items()}
    name = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmp", "icmpv6": "icmp"}.get(proto, proto)
    if name in ("tcp", "udp"):
        lo, hi = perm.get("FromPort"), perm.get("ToPort")
        if lo is None or hi is None or int(lo) < 0:
            return {name: list(FULL)}
        return {name: [(int(lo), int(hi))]}
    if name == "icmp":
        if perm.get("FromPort") not in (None, -1):
            warnings.append(
                f"{where}: ICMP type {perm.get('FromPort')} widened to all ICMP "
                "(the model does not distinguish ICMP types)"
            )
        return {"icmp": list(FULL)}
    warnings.append(f"{where}: protocol {proto} cannot be expressed by itself; left out")
    return {}


def _zones(
    groups: dict[str, _Group],
    interfaces: list[tuple[str, list[Network], tuple[str, ...]]],
    warnings: list[str],
) -> tuple[list[DerivedZone], dict[str, tuple[str, ...]]]:
    taken: set[str] = set()
    atoms: dict[tuple[str, ...], list[Network]] = {}
    for gid, group in sorted(groups.items()):
        if group.members:
            atoms.setdefault((gid,), []).extend(group.members)
    for eni, nets, ids in interfaces:
        known = tuple(g for g in ids if g in groups)
        if len(known) != len(ids):
            warnings.append(f"{eni}: groups {sorted(set(ids) - set(known))} not in the input")
        if known and nets:
            atoms.setdefault(known, []).extend(nets)
    # rule CIDRs, with where each appears: CIDRs used by exactly the same rules and
    # overlapping nothing else behave alike and become one zone (e.g. the export's
    # "internet" ranges)
    rule_nets: dict[str, Network] = {}
    used_by: dict[str, set[tuple[str, str, int]]] = {}
    for gid, group in groups.items():
        for direction, rules in (("in", group.ingress), ("out", group.egress)):
            for i, perm in enumerate(rules):
                for key, field_ in (("IpRanges", "CidrIp"), ("Ipv6Ranges", "CidrIpv6")):
                    for entry in perm.get(key) or []:
                        text = str(entry.get(field_))
                        if text not in _EVERYWHERE:
                            rule_nets.setdefault(text, _net(text, group.where))
                            used_by.setdefault(text, set()).add((gid, direction, i))
    all_nets = [*rule_nets.values(), *(n for nets in atoms.values() for n in nets)]
    alike: dict[frozenset[tuple[str, str, int]], list[Network]] = {}
    for text, net in sorted(rule_nets.items(), key=lambda item: (item[1].version, item[1])):
        alone: bool = not any(
            other != net and other.version == net.version and net.overlaps(other)
            for other in all_nets
        )
        signature = frozenset(used_by[text]) if alone else frozenset({(text, "", -1)})
        alike.setdefault(signature, []).append(net)
    member_all = [n for nets in atoms.values() for n in nets]
    public = set(_internet_ranges(member_all))
    cidr_zones = []
    internet_nets: list[Network] = []
    for nets in alike.values():
        if {str(n) for n in nets} == public:  # exactly "the Internet", as the export writes it
            internet_nets = nets
            continue
        first = nets[0]
        label = f"net-{str(first).replace('/', '-').replace(':', '-')}"
        if len(nets) > 1:
            label += f"-and-{len(nets) - 1}-more"
        cidr_zones.append(
            DerivedZone(
                unique(slug(label), taken),
                {},
                cidrs=nets,
                description="rule CIDRs "
                + " ".join(map(str, nets[:4]))
                + (" ..." if len(nets) > 4 else ""),
            )
        )
    zones: list[DerivedZone] = []
    members_of: dict[str, tuple[str, ...]] = {}
    for ids, nets in sorted(atoms.items()):
        label = "+".join(groups[g].name for g in ids)
        # split by the rule CIDR each member lies in, so nesting can be declared
        by_parent: dict[str | None, list[Network]] = {}
        for net in sorted(set(nets), key=lambda n: (n.version, n)):
            parents = [
                z
                for z in cidr_zones
                if len(z.cidrs) == 1
                and z.cidrs[0].version == net.version
                and inside(net, z.cidrs[0])
                and z.cidrs[0] != net
            ]
            parent = max(parents, key=lambda z: z.cidrs[0].prefixlen).name if parents else None
            by_parent.setdefault(parent, []).append(net)
        for parent, members in by_parent.items():
            zone = DerivedZone(
                unique(slug(label + (f"-in-{parent}" if parent else "")), taken),
                {"ip": str(members[0].network_address)},
                cidrs=members,
                within=parent,
                description=f"security groups {', '.join(ids)}",
            )
            zones.append(zone)
            members_of[zone.name] = ids
    for gid, group in sorted(groups.items()):
        if not any(gid in ids for ids in atoms):
            warnings.append(
                f"{gid} ({group.name}) has no members: give the network interfaces "
                "(describe-network-interfaces JSON) to place its addresses"
            )
    member_nets = [n for z in zones for n in z.cidrs]
    for zone in cidr_zones:
        others = [n for z in cidr_zones if z is not zone for n in z.cidrs] + member_nets
        rep = representative_address(zone.cidrs[0], others)
        if rep is None:
            warnings.append(f"{zone.name}: every address is in a more specific zone; left out")
            continue
        zone.endpoint = {"ip": rep}
        zones.append(zone)
    nest([z for z in zones if z.name not in members_of or z.within is None])
    internet = internet_representative(
        [n for n in rule_nets.values() if n not in internet_nets] + member_nets
    )
    if internet is not None:
        zones.append(DerivedZone(INTERNET, {"ip": internet}))
    return zones, members_of


# --- export ----------------------------------------------------------------------


def group_id(zone: str) -> str:
    return "sg-" + hashlib.sha1(zone.encode(), usedforsecurity=False).hexdigest()[:17]


def export_aws_sg(model: CompiledModel) -> tuple[dict[str, Any], list[str]]:
    """The model as describe-security-groups JSON: {file name: document} and warnings."""
    doc = model.model.document
    warnings: list[str] = []
    internet = _internet_ranges([n for z in doc.zones for n in z.cidrs])
    perms: dict[tuple[str, str], dict[tuple[Any, ...], dict[str, Any]]] = {}
    for need in needs(doc, {"tcp", "udp", "icmp"}, warnings):
        table = perms.setdefault((need.zone, need.direction), {})
        for key, template in _permissions(need.service_set):
            perm = table.setdefault(
                key,
                {
                    **template,
                    "IpRanges": [],
                    "Ipv6Ranges": [],
                    "UserIdGroupPairs": [],
                    "PrefixListIds": [],
                },
            )
            if need.peer == INTERNET:
                perm["IpRanges"] += [{"CidrIp": c, "Description": "internet"} for c in internet]
            else:
                pair = {"GroupId": group_id(need.peer), "Description": f"zone {need.peer}"}
                if pair not in perm["UserIdGroupPairs"]:
                    perm["UserIdGroupPairs"].append(pair)
    if not any(zone.cidrs for zone in doc.zones):
        raise ExportProblem("aws-sg", "security groups are attached to network interfaces, and "
                            "no zone of the model has addresses (cidrs) to attach its group to "
                            "(pod zones: --to k8s, calico)")  # fmt: skip
    groups = []
    for zone in doc.zones:
        if not zone.cidrs:
            warnings.append(f"zone {zone.name} has no CIDRs: its group has no members to attach to")
        if zone.mode == "monitor":
            warnings.append(
                f"zone {zone.name} is in monitor mode, and security groups have no audit "
                "mode: its group enforces (VPC flow logs show what it rejects); the import "
                "reads it back as enforce"
            )
        groups.append(
            {
                "GroupId": group_id(zone.name),
                "GroupName": f"segwatch-{zone.name}",
                "Description": (zone.description or f"segwatch zone {zone.name}")[:255],
                "IpPermissions": _sorted(perms.get((zone.name, "ingress"), {})),
                "IpPermissionsEgress": _sorted(perms.get((zone.name, "egress"), {})),
                "Tags": [
                    {"Key": "Name", "Value": f"segwatch-{zone.name}"},
                    {"Key": "segwatch:zone", "Value": zone.name},
                    {"Key": CIDRS_TAG, "Value": " ".join(str(c) for c in zone.cidrs)},
                ],
            }
        )
    return {"security-groups.json": {"SecurityGroups": groups}}, warnings


def _permissions(services: Services) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    if all(services.get(p) == FULL for p in ("tcp", "udp", "icmp", "other")):
        return [(("-1",), {"IpProtocol": "-1"})]
    out: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    for proto in ("tcp", "udp"):
        for lo, hi in services.get(proto, []):
            out.append(((proto, lo, hi), {"IpProtocol": proto, "FromPort": lo, "ToPort": hi}))
    if services.get("icmp"):
        out.append((("icmp",), {"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1}))
        out.append((("icmpv6",), {"IpProtocol": "icmpv6", "FromPort": -1, "ToPort": -1}))
    return out


def _sorted(table: dict[tuple[Any, ...], dict[str, Any]]) -> list[dict[str, Any]]:
    return [table[k] for k in sorted(table, key=repr)]


def _internet_ranges(declared: list[Network]) -> list[str]:
    """0.0.0.0/0 minus the local ranges and the model's networks, as CIDRs."""
    remaining = [ipaddress.IPv4Network("0.0.0.0/0")]
    excluded = [ipaddress.IPv4Network(n) for n in LOCAL_V4]
    excluded += [n for n in declared if isinstance(n, ipaddress.IPv4Network)]
    for ex in ipaddress.collapse_addresses(excluded):
        nxt: list[ipaddress.IPv4Network] = []
        for net in remaining:
            if ex.subnet_of(net):
                nxt.extend(net.address_exclude(ex))
            elif not net.subnet_of(ex):
                nxt.append(net)
        remaining = nxt
    return [str(n) for n in ipaddress.collapse_addresses(remaining)]
