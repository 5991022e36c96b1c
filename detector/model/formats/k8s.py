"""Kubernetes ``networking.k8s.io/v1`` NetworkPolicy <-> the native model.

Import semantics (the Kubernetes ones):

- A pod selected by a policy whose ``policyTypes`` include Ingress (Egress)
  is isolated for ingress (egress): only what some rule of such a policy
  admits may pass. A pod no policy selects is not isolated. ``policyTypes``
  defaults to Ingress, plus Egress when the policy has ``egress`` rules.
- A connection from A to B passes when A's egress admits it *and* B's ingress
  admits it.
- Peers: ``podSelector`` (pods of the policy's namespace), ``namespaceSelector``
  (all pods of matching namespaces), both (matching pods in matching
  namespaces), ``ipBlock`` (addresses outside the cluster, ``except`` honoured).
  No ``from``/``to``: every source/destination. No ``ports``: every port and
  protocol.
- Ports: TCP (default) and UDP, numbers, ranges (``endPort``) and the well-known
  named ports below; SCTP and other named ports are refused with a message.

Zones are derived from the selectors: one per policy target and per peer
(``<namespace>.<labels>``, ``ns.<labels>``, ``net-<cidr>``), plus the
Internet for public addresses no ipBlock names.

Export writes, per namespace, a default-deny policy, and per zone selector a
policy isolating the zone both ways with the ingress and egress its flows
need (DNS included when the model asks for it). ICMP flows cannot be written
as NetworkPolicy and are left out with a warning; zones selected only by
namespace labels can be peers but not targets.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from detector.model.compile import CompiledModel
from detector.model.formats._derive import (
    DerivedZone,
    ImportProblem,
    Selecting,
    add_address_zones,
    build_model,
    catch_all,
    named_namespaces,
    namespace_of,
    port_range,
    selector_labels,
    slug,
    unique,
    zone_worthy,
)
from detector.model.formats._export import (
    SYSTEM_NAMESPACES,
    ExportProblem,
    exclusive_selectors,
    inner_networks,
    internet_excepts,
    needs,
    outside_system,
    zone_selectors,
)
from detector.model.formats._io import read_documents
from detector.model.load import SegmentationModel
from detector.model.schema import INTERNET, LabelSelector, ModelDocument, PodSelector, Zone
from detector.model.services import ALL, FULL, Services, intersect, merge, union

__all__ = ["NAMED_PORTS", "SYSTEM_NAMESPACES", "export_k8s", "import_k8s"]

API = "networking.k8s.io/v1"
NAME_LABEL = "kubernetes.io/metadata.name"
NAMED_PORTS = {
    "http": 80,
    "https": 443,
    "dns": 53,
    "dns-tcp": 53,
    "ssh": 22,
    "postgres": 5432,
    "postgresql": 5432,
    "mysql": 3306,
    "redis": 6379,
    "metrics": 9090,
    "grpc": 50051,
}

KUBE_DNS = {
    "namespaceSelector": {"matchLabels": {NAME_LABEL: "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}
DNS: Services = {"tcp": [(53, 53)], "udp": [(53, 53)]}
# what the cluster's DNS server itself needs: upstream resolvers and the API server
DNS_SERVER_EGRESS: Services = {"tcp": [(53, 53), (443, 443), (6443, 6443)], "udp": [(53, 53)]}

# --- import --------------------------------------------------------------------


class _Policy:
    def __init__(self, where: str, doc: dict[str, Any]) -> None:
        meta = doc.get("metadata") or {}
        spec = doc.get("spec") or {}
        self.where = f"{where}: NetworkPolicy {meta.get('namespace', 'default')}/{meta.get('name')}"
        self.namespace = namespace_of(meta, self.where)
        self.pod_selector = spec.get("podSelector") or {}
        self.ingress = spec.get("ingress") or []
        self.egress = spec.get("egress") or []
        types = spec.get("policyTypes")
        if types is None:
            types = ["Ingress", *(["Egress"] if "egress" in spec else [])]
        self.types = set(types)
        unknown = self.types - {"Ingress", "Egress"}
        if unknown:
            raise ImportProblem(self.where, f"policyTypes {sorted(unknown)} are not Ingress/Egress")

        self._selectors: dict[int, LabelSelector] = {}  # parsed once each, by identity

    def selects(self, zone: DerivedZone) -> bool:
        k8s = zone.endpoint.get("kubernetes")
        return (
            k8s is not None
            and k8s["namespace"] == self.namespace
            and self.matches(self.pod_selector, k8s["labels"])
        )

    def matches(self, selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
        """Does a selector of this policy's document match the labels? (Each selector is
        validated once: an import compares every zone with every other.)"""
        parsed = self._selectors.get(id(selector))
        if parsed is None:
            parsed = self._selectors[id(selector)] = LabelSelector.model_validate(selector or {})
        return parsed.matches(labels)


def _peer_matches(peer: dict[str, Any], policy: _Policy, zone: DerivedZone) -> bool:
    k8s = zone.endpoint.get("kubernetes")
    if "ipBlock" in peer:
        ip = zone.endpoint.get("ip")
        if k8s is not None or ip is None:
            return False  # ipBlock names addresses outside the cluster
        block = peer["ipBlock"]
        address = ipaddress.ip_address(ip)
        inside = address in ipaddress.ip_network(block["cidr"], strict=False)
        return inside and not any(
            address in ipaddress.ip_network(e, strict=False) for e in block.get("except") or []
        )
    if k8s is None:
        return False
    ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
    if ns_sel is None and k8s["namespace"] != policy.namespace:
        return False
    if ns_sel is not None and not policy.matches(ns_sel, k8s["namespace_labels"]):
        return False
    return pod_sel is None or policy.matches(pod_sel, k8s["labels"])


def _rule_services(rule: dict[str, Any], where: str) -> Services:
    ports = rule.get("ports")
    if not ports:
        return {p: list(v) for p, v in ALL.items()}
    out: Services = {}
    for i, port in enumerate(ports):
        proto = str(port.get("protocol") or "TCP").upper()
        if proto not in ("TCP", "UDP"):
            raise ImportProblem(
                f"{where} ports[{i}]", f"protocol {proto} has no equivalent in the segwatch model"
            )
        value = port.get("port")
        if value is None:
            out = union(out, {proto.lower(): list(FULL)})
            continue
        if isinstance(value, str) and not value.isdigit():
            if value not in NAMED_PORTS:
                raise ImportProblem(
                    f"{where} ports[{i}]",
                    f"named port {value!r} cannot be resolved without the pods' specs; write "
                    f"its number (known names: {', '.join(sorted(NAMED_PORTS))})",
                )
            value = NAMED_PORTS[value]
        end = port.get("endPort")
        try:
            first = int(value)
            last = int(end) if end is not None else first
        except (TypeError, ValueError):
            raise ImportProblem(f"{where} ports[{i}]", f"port {value!r} / endPort {end!r} is "
                                "not a number") from None  # fmt: skip
        out = union(out, {proto.lower(): [port_range(first, last, f"{where} ports[{i}]")]})
    return out


class _Sides:
    """What a zone's own policies let it exchange with a peer, one direction at a time,
    with what does not depend on the pair worked out once: the policies selecting
    each zone, and whether each rule reaches each peer."""

    def __init__(self, policies: list[_Policy]) -> None:
        self.policies = policies
        self._selecting = Selecting(policies)
        self._reaches: dict[tuple[int, str], bool] = {}

    def side(self, zone: DerivedZone, peer: DerivedZone, direction: str) -> Services:
        if zone.endpoint.get("kubernetes") is None:
            return ALL  # not a pod: Kubernetes does not restrict it
        selecting = self._selecting(zone, direction)
        if not selecting:
            return ALL
        allowed: Services = {}
        key = "from" if direction == "ingress" else "to"
        for policy in selecting:
            rules = policy.ingress if direction == "ingress" else policy.egress
            for i, rule in enumerate(rules):
                if self._reach(policy, rule, key, peer):
                    allowed = union(
                        allowed, _rule_services(rule, f"{policy.where} {direction}[{i}]")
                    )
        return allowed

    def _reach(self, policy: _Policy, rule: dict[str, Any], key: str, peer: DerivedZone) -> bool:
        found = self._reaches.get((id(rule), peer.name))
        if found is None:
            peers = rule.get(key)
            found = not peers or any(_peer_matches(p, policy, peer) for p in peers)
            self._reaches[(id(rule), peer.name)] = found
        return found


def import_k8s(paths: list[str], name: str = "imported-k8s") -> tuple[SegmentationModel, list[str]]:
    """NetworkPolicies in YAML/JSON files -> a native model, and warnings.

    :raises ImportProblem: a document that is not a NetworkPolicy, or a feature
        the model cannot express (with the file, the policy and the field).
    """
    policies = []
    for where, doc in read_documents(paths):
        if doc.get("kind") != "NetworkPolicy" or doc.get("apiVersion") != API:
            raise ImportProblem(
                where, f"{doc.get('apiVersion')}/{doc.get('kind')} is not a {API} NetworkPolicy"
            )
        policies.append(_Policy(where, doc))
    if not policies:
        raise ImportProblem(", ".join(paths), "no NetworkPolicy found")
    warnings: list[str] = []
    zones = _zones(policies, warnings)

    sides = _Sides(policies)

    def governed(a: DerivedZone, b: DerivedZone) -> bool:
        return a.endpoint.get("kubernetes") is not None or b.endpoint.get("kubernetes") is not None

    def allowed(a: DerivedZone, b: DerivedZone) -> Services:
        return intersect(sides.side(a, b, "egress"), sides.side(b, a, "ingress"))

    model = build_model(
        name,
        f"Imported from {len(policies)} Kubernetes NetworkPolicies",
        zones,
        allowed,
        governed,
        warnings,
    )
    return model, warnings


def _zones(policies: list[_Policy], warnings: list[str]) -> list[DerivedZone]:
    zones: dict[str, DerivedZone] = {}  # canonical selector -> zone
    taken: set[str] = set()
    nets: dict[str, ipaddress.IPv4Network | ipaddress.IPv6Network] = {}

    def pod_zone(
        namespace: str | None,
        ns_sel: dict[str, Any] | None,
        pod_sel: dict[str, Any] | None,
        where: str,
        why: str = "",
        name: str = "",
    ) -> None:
        """A zone for these selectors (``why``: a catch-all zone, and the reason)."""
        if (
            ns_sel is not None
            and set(ns_sel) == {"matchLabels"}
            and set(ns_sel["matchLabels"]) == {NAME_LABEL}
        ):
            namespace, ns_sel = ns_sel["matchLabels"][NAME_LABEL], None  # a namespace by name
        labels = selector_labels(pod_sel)
        ns_labels = selector_labels(ns_sel) if ns_sel is not None else {}
        if labels is None or ns_labels is None:
            warnings.append(f"{where}: a selector that can match nothing is left out")
            return
        key = repr((namespace, sorted((ns_sel or {}).items()), sorted((pod_sel or {}).items())))
        if key in zones:
            return
        label_text = ".".join(f"{k.split('/')[-1]}-{v}" for k, v in sorted(labels.items()))
        if namespace is not None:
            base = namespace + (f".{label_text}" if label_text else "")
            selector: dict[str, Any] = {"namespaces": [namespace]}
            rep_ns, rep_ns_labels = namespace, {NAME_LABEL: namespace}
        else:
            ns_text = ".".join(f"{k.split('/')[-1]}-{v}" for k, v in sorted(ns_labels.items()))
            base = f"ns.{ns_text or 'all'}" + (f".{label_text}" if label_text else "")
            selector = {"namespaceSelector": ns_sel}
            rep_ns = ns_labels.get(NAME_LABEL) or slug(f"ns-{ns_text or 'any'}")
            rep_ns_labels = {**ns_labels, NAME_LABEL: rep_ns}
        if pod_sel:
            selector["podSelector"] = pod_sel
        zone_name = unique(slug(name or base), taken)
        zones[key] = DerivedZone(
            zone_name,
            {
                "ip": None,
                "kubernetes": {
                    "namespace": rep_ns,
                    "labels": labels,
                    "namespace_labels": rep_ns_labels,
                },
            },
            kubernetes=[selector],
            **(catch_all(why) if why else {"description": f"pods selected in {where}"}),
        )

    for policy in policies:
        pod_zone(policy.namespace, None, policy.pod_selector, policy.where)
        pod_zone(policy.namespace, None, None, "", f"pods of namespace {policy.namespace} that "
                 "no policy selects: the namespace holds policies")  # fmt: skip
        for direction, key in (("ingress", "from"), ("egress", "to")):
            for rule in getattr(policy, direction):
                for peer in rule.get(key) or []:
                    if "ipBlock" in peer:
                        block = peer["ipBlock"]
                        for cidr in [block.get("cidr"), *(block.get("except") or [])]:
                            try:
                                net = ipaddress.ip_network(str(cidr), strict=False)
                            except ValueError:
                                raise ImportProblem(
                                    policy.where, f"ipBlock {cidr!r} is not a network"
                                ) from None
                            if zone_worthy(net):
                                nets.setdefault(str(net), net)
                    else:
                        ns_sel = peer.get("namespaceSelector")
                        pod_zone(
                            policy.namespace if ns_sel is None else None,
                            ns_sel,
                            peer.get("podSelector"),
                            policy.where,
                        )
    # every pod of the cluster is in some zone, as it is a member of its namespace
    for namespace in named_namespaces(zones.values()):
        pod_zone(namespace, None, None, "", f"pods of namespace {namespace} that no zone above "
                 "selects: policies name the namespace as a peer")  # fmt: skip
    pod_zone(None, {}, None, "", "pods of every other namespace: no policy names them",
             name="cluster")  # fmt: skip
    return add_address_zones(list(zones.values()), nets, taken, "ipBlock", warnings)


# --- export ----------------------------------------------------------------------


def export_k8s(
    model: CompiledModel, *, isolate_system: bool = False
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """The model as NetworkPolicies: {file name: [policies]} and warnings. Deterministic.

    Namespaces in :data:`SYSTEM_NAMESPACES` are isolated only with ``isolate_system``
    (then the DNS zone's own egress is opened to its upstreams and the API server).
    Every isolated pod keeps DNS: through the model's DNS zone, or to kube-dns when
    the model declares none.

    :raises ExportProblem: no zone of the model can be a NetworkPolicy target.
    """
    doc = model.model.document
    warnings: list[str] = []
    exclusive = exclusive_selectors(doc, warnings)
    peers = {z.name: _peers(z, doc, exclusive) for z in doc.zones}
    peers[INTERNET] = [{"ipBlock": {"cidr": "0.0.0.0/0", "except": internet_excepts(doc)}}]
    by_zone: dict[tuple[str, str], list[tuple[list[dict[str, Any]], Services]]] = {}
    for need in needs(doc, {"tcp", "udp"}, warnings):
        by_zone.setdefault((need.zone, need.direction), []).append(
            (peers[need.peer], need.service_set)
        )
    dns_zone = doc.defaults.dns.zone if doc.defaults.dns is not None else None
    if dns_zone is None and any(z.kubernetes for z in doc.zones):
        warnings.append("the model declares no DNS zone: every isolated pod may still reach "
                        "kube-dns (k8s-app=kube-dns in kube-system) on 53, or it could not "
                        "resolve names")  # fmt: skip
    files: dict[str, list[dict[str, Any]]] = {}
    namespaces: set[str] = set()
    observed: set[str] = set()  # namespaces of monitor zones: no default deny there
    for zone in doc.zones:
        targets = _targets(zone, zone_selectors(zone, exclusive), warnings)
        system = any(ns in SYSTEM_NAMESPACES for ns, _ in targets)
        kept = outside_system(zone.name, [ns for ns, _ in targets], isolate_system, warnings)
        targets = [t for t in targets if t[0] in kept]
        if zone.mode == "monitor" and targets:
            observed |= {ns for ns, _ in targets}
            warnings.append(
                f"zone {zone.name} is in monitor mode, and NetworkPolicy has no audit mode: "
                "the export leaves its pods unisolated (allow-all), and writes no default "
                f"deny in {', '.join(sorted({ns for ns, _ in targets}))}; switch it to "
                "mode: enforce to enforce it"
            )
            continue
        egress = by_zone.get((zone.name, "egress"), [])
        if dns_zone is None:
            egress = [*egress, ([KUBE_DNS], DNS)]
        elif zone.name == dns_zone and isolate_system and system:  # CoreDNS, say
            egress = [*egress, ([{"ipBlock": {"cidr": "0.0.0.0/0"}}], DNS_SERVER_EGRESS)]
            warnings.append(
                f"zone {zone.name}: the DNS zone is isolated, so its egress also opens 53 "
                "(upstream resolvers) and 443, 6443 (the API server) to any address"
            )
        for i, (namespace, pod_selector) in enumerate(targets):
            namespaces.add(namespace)
            spec: dict[str, Any] = {
                "podSelector": pod_selector,
                "policyTypes": ["Ingress", "Egress"],
                "ingress": _rules(by_zone.get((zone.name, "ingress"), []), "from"),
                "egress": _rules(egress, "to"),
            }
            suffix = f"-{i + 1}" if len(targets) > 1 else ""
            files.setdefault(f"{namespace}.yaml", []).append(
                _policy(f"segwatch-{zone.name}{suffix}", namespace, spec, zone)
            )
    if not files and observed:
        raise ExportProblem("k8s", "every zone it could isolate is in monitor mode, and "
                            "NetworkPolicy has no audit mode (--to calico stages it)")  # fmt: skip
    if not files:
        raise ExportProblem("k8s", "NetworkPolicies select pods by namespace, and no zone of "
                            "the model selects pods of a namespace the export isolates (address "
                            "zones are only peers; --to aws-sg writes them)")  # fmt: skip
    for namespace in sorted(namespaces - observed):
        files[f"{namespace}.yaml"].insert(
            0,
            _policy(
                "segwatch-default-deny",
                namespace,
                {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
                None,
            ),
        )
    return dict(sorted(files.items())), warnings


def _policy(name: str, namespace: str, spec: dict[str, Any], zone: Zone | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": slug(name, 253),
        "namespace": namespace,
        "labels": {"app.kubernetes.io/managed-by": "segwatch"},
    }
    if zone is not None:
        meta["annotations"] = {"segwatch/zone": zone.name}
    return {"apiVersion": API, "kind": "NetworkPolicy", "metadata": meta, "spec": spec}


def _targets(
    zone: Zone, selectors: list[PodSelector], warnings: list[str]
) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for sel in selectors:
        if not sel.namespaces:
            warnings.append(
                f"zone {zone.name}: a selector without namespaces cannot be a policy "
                "target; traffic into it is not enforced by the export"
            )
            continue
        if sel.namespace_selector is not None:
            warnings.append(
                f"zone {zone.name}: namespaceSelector narrows namespaces "
                f"{list(sel.namespaces)}, which policy targets cannot express; "
                "exported for those namespaces"
            )
        pod = _selector_data(sel.pod_selector) if sel.pod_selector else {}
        out += [(ns, pod) for ns in sel.namespaces]
    if zone.cidrs and not zone.kubernetes:
        warnings.append(
            f"zone {zone.name}: an address zone is only a peer in NetworkPolicies (ipBlock), "
            "and ipBlock does not match pods: if its addresses are pods, the default deny "
            "of their namespace isolates them without what the model allows them (DNS "
            "included); give the zone a kubernetes selector"
        )
        return []
    return out


def _selector_data(sel: LabelSelector) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if sel.match_labels:
        data["matchLabels"] = dict(sorted(sel.match_labels.items()))
    if sel.match_expressions:
        data["matchExpressions"] = [
            {
                "key": e.key,
                "operator": e.operator,
                **({"values": list(e.values)} if e.values else {}),
            }
            for e in sel.match_expressions
        ]
    return data


def _peers(
    zone: Zone, doc: ModelDocument, exclusive: dict[str, list[PodSelector]] | None = None
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for sel in zone_selectors(zone, exclusive):
        out += _selector_peers(sel)
    for cidr, inner in inner_networks(doc, zone.name).items():
        block: dict[str, Any] = {"cidr": cidr}
        if inner:
            block["except"] = inner
        out.append({"ipBlock": block})
    return out


def _selector_peers(sel: PodSelector) -> list[dict[str, Any]]:
    pod = {"podSelector": _selector_data(sel.pod_selector)} if sel.pod_selector else {}
    ns_base = _selector_data(sel.namespace_selector) if sel.namespace_selector else {}
    if not sel.namespaces:
        return [{"namespaceSelector": ns_base, **pod}]
    out = []
    for ns in sel.namespaces:
        labels = {**ns_base.get("matchLabels", {}), NAME_LABEL: ns}
        ns_sel = {**ns_base, "matchLabels": dict(sorted(labels.items()))}
        out.append({"namespaceSelector": ns_sel, **({"podSelector": {}} | pod)})
    return out


def _rules(needs: list[tuple[list[dict[str, Any]], Services]], key: str) -> list[dict[str, Any]]:
    """One rule per distinct service set, peers merged and sorted: deterministic output."""
    by_services: dict[str, tuple[Services, list[dict[str, Any]]]] = {}
    for peers, services in needs:
        marker = repr(sorted(services.items()))
        entry = by_services.setdefault(marker, (services, []))
        for peer in peers:
            if peer not in entry[1]:
                entry[1].append(peer)
    rules = []
    for _marker, (services, peers) in sorted(by_services.items()):
        rule: dict[str, Any] = {key: sorted(peers, key=repr)}
        ports = _ports(services)
        if ports is not None:
            rule["ports"] = ports
        rules.append(rule)
    return rules


def _ports(services: Services) -> list[dict[str, Any]] | None:
    if all(services.get(p) == FULL for p in ("tcp", "udp", "icmp", "other")):
        return None
    out = []
    for proto in ("tcp", "udp"):
        for lo, hi in merge(services.get(proto, [])):
            port: dict[str, Any] = {"protocol": proto.upper()}
            if (lo, hi) != (0, 65535):
                port["port"] = lo
                if hi > lo:
                    port["endPort"] = hi
            out.append(port)
    return out
