"""Calico ``projectcalico.org/v3`` NetworkPolicy and GlobalNetworkPolicy <-> the native model.

Supported subset (anything else is refused with the file, policy and field):

- policies in the default tier; ``order`` (lower first, none = last, ties by
  name); ``selector`` and, for global policies, ``namespaceSelector``;
  ``types`` (default Ingress, plus Egress when there are egress rules);
- rules with ``action`` Allow, Deny, Log (go on to the next rule) and Pass
  (skip the remaining policies: the endpoint's profile decides, which for
  Kubernetes pods allows); ``protocol`` (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite
  or a number; ``notProtocol`` is refused); ``source``/``destination`` with
  ``selector``, ``namespaceSelector``, ``nets``, ``notNets`` and destination
  ``ports`` (numbers, ``"a:b"`` ranges, the named ports of the Kubernetes
  importer).
- Refused: ``notSelector``, ``notPorts``, source ``ports``, ``serviceAccounts``,
  ``services``, ``http``, ``icmp``/``notICMP`` type matches, other tiers.

Semantics: an endpoint selected by no policy of a direction is allowed by its
profile; otherwise the first Allow/Deny/Pass decides and the end of the
policies denies. A connection passes when the source's egress and the
destination's ingress both allow it. Selectors see the pod's labels plus
``projectcalico.org/namespace``; namespace selectors see the namespace's
labels plus ``projectcalico.org/name``.

Export writes one GlobalNetworkPolicy per zone selector (order 100), with an
Allow rule per peer and protocol and a final Deny each way.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from itertools import pairwise
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
    slug,
    unique,
    zone_worthy,
)
from detector.model.formats._export import (
    ExportProblem,
    exclusive_selectors,
    inner_networks,
    internet_excepts,
    needs,
    zone_selectors,
)
from detector.model.formats._io import read_documents
from detector.model.formats.calico_selector import (
    Expr,
    SelectorError,
    conjunct_labels,
    parse_selector,
    to_label_selector,
)
from detector.model.formats.k8s import NAME_LABEL, NAMED_PORTS
from detector.model.load import SegmentationModel
from detector.model.schema import INTERNET, LabelSelector, ModelDocument, PodSelector, Zone
from detector.model.services import FULL, PROTOCOLS, Services, intersect, merge

__all__ = ["export_calico", "import_calico"]

API = "projectcalico.org/v3"
NS_LABEL = "projectcalico.org/namespace"
NS_NAME_LABEL = "projectcalico.org/name"
_KINDS = (
    "NetworkPolicy",
    "GlobalNetworkPolicy",
    "StagedNetworkPolicy",
    "StagedGlobalNetworkPolicy",
)
_PROTOCOLS = {
    "tcp": "tcp",
    "udp": "udp",
    "icmp": "icmp",
    "icmpv6": "icmp",
    "sctp": "other",
    "udplite": "other",
    "6": "tcp",
    "17": "udp",
    "1": "icmp",
    "58": "icmp",
}
_RULE_KEYS = {"action", "protocol", "source", "destination", "ipVersion", "metadata"}
_ENTITY_KEYS = {"selector", "namespaceSelector", "nets", "notNets", "ports"}


@dataclass
class _Entity:
    selector: Expr | None
    namespace_selector: Expr | None
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    not_nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    ports: list[tuple[int, int]] | None  # destination only

    def matches(self, zone: DerivedZone, policy_namespace: str | None) -> bool:
        endpoint = zone.endpoint
        k8s = endpoint.get("kubernetes")
        ip = endpoint.get("ip")
        if self.nets and (ip is None or not _in(ip, self.nets)):
            return False
        if self.not_nets and ip is not None and _in(ip, self.not_nets):
            return False
        if self.selector is None and self.namespace_selector is None:
            return True
        if k8s is None:
            return False
        if (
            self.namespace_selector is None
            and policy_namespace is not None
            and k8s["namespace"] != policy_namespace
        ):
            return False
        if self.namespace_selector is not None and not self.namespace_selector.matches(
            {**k8s["namespace_labels"], NS_NAME_LABEL: k8s["namespace"]}
        ):
            return False
        labels = {**k8s["labels"], NS_LABEL: k8s["namespace"]}
        return self.selector is None or self.selector.matches(labels)


def _pinned_namespaces(conj: list[Expr], key: str = NS_LABEL) -> list[str]:
    """Namespaces a conjunction pins with ``key == / in``: an endpoint selector with
    ``projectcalico.org/namespace``, a namespace selector with ``projectcalico.org/name``."""
    for atom in conj:
        if atom.args and atom.args[0] == key:
            if atom.op == "eq":
                return [atom.args[1]]
            if atom.op == "in":
                return sorted(atom.args[1])
    return []


def _in(ip: str, nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    address = ipaddress.ip_address(ip)
    return any(address in n for n in nets if n.version == address.version)


@dataclass
class _Rule:
    action: str
    protocol: str | None  # a services key, None: any
    source: _Entity
    destination: _Entity


class _Policy:
    def __init__(self, where: str, doc: dict[str, Any]) -> None:
        meta = doc.get("metadata") or {}
        spec = doc.get("spec") or {}
        kind = doc.get("kind")
        self.namespace = (
            namespace_of(meta, f"{where}: {kind} {meta.get('name')}")
            if kind in ("NetworkPolicy", "StagedNetworkPolicy")
            else None
        )
        name = str(meta.get("name"))
        self.name = name
        self.staged = str(kind).startswith("Staged")  # observe only: its zones are in monitor mode
        self.where = f"{where}: {kind} {self.namespace + '/' if self.namespace else ''}{name}"
        tier = spec.get("tier") or "default"
        if tier != "default":
            raise ImportProblem(self.where, f"tier {tier!r}: only the default tier is supported")
        order = spec.get("order")
        self.order = float(order) if order is not None else float("inf")
        self.selector = self._selector(spec.get("selector"), "selector")
        self.namespace_selector = (
            self._selector(spec["namespaceSelector"], "namespaceSelector")
            if spec.get("namespaceSelector")
            else None
        )
        types = spec.get("types")
        if types is None:
            types = ["Ingress", *(["Egress"] if spec.get("egress") else [])]
        self.types = set(types)
        self.ingress = [
            self._rule(r, f"ingress[{i}]") for i, r in enumerate(spec.get("ingress") or [])
        ]
        self.egress = [
            self._rule(r, f"egress[{i}]") for i, r in enumerate(spec.get("egress") or [])
        ]
        for key in ("doNotTrack", "preDNAT", "applyOnForward"):
            if spec.get(key):
                raise ImportProblem(
                    f"{self.where} spec.{key}", "host-endpoint policies are not supported"
                )

    def _selector(self, text: Any, field: str) -> Expr:
        try:
            return parse_selector(str(text or ""))
        except SelectorError as exc:
            raise ImportProblem(f"{self.where} {field}", str(exc)) from None

    def _rule(self, rule: dict[str, Any], where: str) -> _Rule:
        unknown = set(rule) - _RULE_KEYS
        if unknown:
            raise ImportProblem(
                f"{self.where} {where}", f"{', '.join(sorted(unknown))} not supported"
            )
        action = str(rule.get("action", ""))
        if action not in ("Allow", "Deny", "Log", "Pass"):
            raise ImportProblem(
                f"{self.where} {where}.action", f"{action!r} is not Allow, Deny, Log or Pass"
            )
        proto = rule.get("protocol")
        protocol = None
        if proto is not None:
            protocol = _PROTOCOLS.get(str(proto).lower(), "other")
        source = self._entity(rule.get("source") or {}, f"{where}.source", ports_ok=False)
        destination = self._entity(
            rule.get("destination") or {}, f"{where}.destination", ports_ok=True
        )
        if destination.ports is not None and protocol not in ("tcp", "udp"):
            raise ImportProblem(f"{self.where} {where}", "ports need protocol TCP or UDP")
        return _Rule(action, protocol, source, destination)

    def _entity(self, data: dict[str, Any], where: str, ports_ok: bool) -> _Entity:
        unknown = set(data) - _ENTITY_KEYS
        if unknown or ("ports" in data and not ports_ok):
            bad = sorted(unknown) or ["ports (the connection's source port)"]
            raise ImportProblem(f"{self.where} {where}", f"{', '.join(bad)} not supported")
        nets, not_nets = (
            [self._net(n, f"{where}.{key}") for n in data.get(key) or []]
            for key in ("nets", "notNets")
        )
        ports = None
        if "ports" in data:
            ports = merge(self._port(p, f"{where}.ports") for p in data["ports"])
        return _Entity(
            self._selector(data["selector"], f"{where}.selector") if "selector" in data else None,
            self._selector(data["namespaceSelector"], f"{where}.namespaceSelector")
            if "namespaceSelector" in data
            else None,
            nets,
            not_nets,
            ports,
        )

    def _net(self, text: Any, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        try:
            return ipaddress.ip_network(str(text), strict=False)
        except ValueError:
            raise ImportProblem(f"{self.where} {where}", f"{text!r} is not a network") from None

    def _port(self, value: Any, where: str) -> tuple[int, int]:
        text = str(value)
        if ":" in text:
            lo, hi = text.split(":", 1)
            if lo.isdigit() and hi.isdigit() and len(lo) <= 5 and len(hi) <= 5:
                return port_range(int(lo), int(hi), f"{self.where} {where}")
        elif text.isdigit() and len(text) <= 5:
            return port_range(int(text), int(text), f"{self.where} {where}")
        elif text in NAMED_PORTS:
            return NAMED_PORTS[text], NAMED_PORTS[text]
        raise ImportProblem(
            f"{self.where} {where}", f"port {text!r} is not a number, a range 'a:b' or a known name"
        )

    def selects(self, zone: DerivedZone) -> bool:
        k8s = zone.endpoint.get("kubernetes")
        if k8s is None:
            return False
        if self.namespace is not None and k8s["namespace"] != self.namespace:
            return False
        if self.namespace_selector is not None and not self.namespace_selector.matches(
            {**k8s["namespace_labels"], NS_NAME_LABEL: k8s["namespace"]}
        ):
            return False
        return self.selector.matches({**k8s["labels"], NS_LABEL: k8s["namespace"]})


class _Sides:
    """What a zone's policies let it exchange with a peer, one direction at a time; what
    does not depend on the pair (the policies selecting each zone, the port ranges
    where any rule changes its mind) is worked out once."""

    def __init__(self, policies: list[_Policy]) -> None:
        self.policies = policies
        cuts = {0, 65536}
        for policy in policies:
            for rule in policy.ingress + policy.egress:
                for lo, hi in rule.destination.ports or []:
                    cuts |= {lo, hi + 1}
        self.edges = sorted(c for c in cuts if 0 <= c <= 65536)
        self._selecting = Selecting(policies)

    def decide(self, zone: DerivedZone, peer: DerivedZone, direction: str, protocol: str,
               port: int | None) -> bool:  # fmt: skip
        selecting = self._selecting(zone, direction)
        if not selecting:
            return True  # the profile allows
        for policy in selecting:
            for rule in policy.ingress if direction == "ingress" else policy.egress:
                if rule.protocol is not None and rule.protocol != protocol:
                    continue
                mine, theirs = (
                    (rule.destination, rule.source)
                    if direction == "ingress"
                    else (rule.source, rule.destination)
                )
                if not (
                    mine.matches(zone, policy.namespace) and theirs.matches(peer, policy.namespace)
                ):
                    continue
                ports = rule.destination.ports
                if ports is not None and (
                    port is None or not any(lo <= port <= hi for lo, hi in ports)
                ):
                    continue
                if rule.action == "Log":
                    continue
                return rule.action in ("Allow", "Pass")
        return False

    def side(self, zone: DerivedZone, peer: DerivedZone, direction: str) -> Services:
        """Exactly what ``zone`` admits with ``peer`` in one direction, per protocol and port."""
        out: Services = {}
        for protocol in PROTOCOLS:
            if protocol not in ("tcp", "udp"):
                if self.decide(zone, peer, direction, protocol, None):
                    out[protocol] = list(FULL)
                continue
            allowed = [
                (lo, hi - 1)
                for lo, hi in pairwise(self.edges)
                if self.decide(zone, peer, direction, protocol, lo)
            ]
            if allowed:
                out[protocol] = merge(allowed)
        return out


def import_calico(
    paths: list[str], name: str = "imported-calico"
) -> tuple[SegmentationModel, list[str]]:
    """Calico policies in YAML/JSON files -> a native model, and warnings.

    :raises ImportProblem: a document outside the supported subset, with where.
    """
    policies = []
    for where, doc in read_documents(paths):
        kind = doc.get("kind")
        if doc.get("apiVersion") != API or kind not in _KINDS:
            raise ImportProblem(
                where,
                f"{doc.get('apiVersion')}/{kind} is not a {API} "
                "(Staged)NetworkPolicy or (Staged)GlobalNetworkPolicy",
            )
        if (doc.get("spec") or {}).get("stagedAction", "Set") == "Delete":
            continue  # previews deleting a policy: nothing to enforce
        policies.append(_Policy(where, doc))
    if not policies:
        raise ImportProblem(", ".join(paths), "no Calico policy found")
    policies.sort(key=lambda p: (p.order, p.name))
    warnings: list[str] = []
    zones = _zones(policies, warnings)
    sides = _Sides(policies)

    def governed(a: DerivedZone, b: DerivedZone) -> bool:
        return a.endpoint.get("kubernetes") is not None or b.endpoint.get("kubernetes") is not None

    def allowed(a: DerivedZone, b: DerivedZone) -> Services:
        return intersect(sides.side(a, b, "egress"), sides.side(b, a, "ingress"))

    model = build_model(
        name, f"Imported from {len(policies)} Calico policies", zones, allowed, governed, warnings
    )
    return model, warnings


def _zones(policies: list[_Policy], warnings: list[str]) -> list[DerivedZone]:
    zones: dict[str, DerivedZone] = {}
    taken: set[str] = set()
    nets: dict[str, ipaddress.IPv4Network | ipaddress.IPv6Network] = {}

    def pod_zone(
        selector: Expr,
        namespace: str | None,
        ns_selector: Expr | None,
        where: str,
        why: str = "",
        name: str = "",
        mode: str = "enforce",
    ) -> None:
        """A zone for these selectors (``why``: a catch-all zone, and the reason; ``mode``
        monitor: made for a staged policy)."""
        if ns_selector is not None and ns_selector.op == "all":
            ns_selector = None  # every namespace: no constraint
        selectors: list[dict[str, Any]] = []
        rep: dict[str, Any] | None = None
        ns_conjuncts = ns_selector.dnf() if ns_selector is not None else [[]]
        for conj in selector.dnf():
            pinned = _pinned_namespaces(conj)
            namespaces = [namespace] if namespace else pinned
            labels = conjunct_labels(conj)
            if labels is None:
                continue
            for ns_conj in ns_conjuncts:
                ns_labels = conjunct_labels(ns_conj)
                if ns_labels is None:
                    continue
                names = namespaces
                by_name = _pinned_namespaces(ns_conj, NS_NAME_LABEL)
                if by_name:  # a namespace selector by name: those namespaces
                    names = sorted(set(by_name) & set(names)) if names else by_name
                    if not names:
                        continue  # pinned to two different namespaces: matches nothing
                    ns_conj = [a for a in ns_conj if not a.args or a.args[0] != NS_NAME_LABEL]
                entry: dict[str, Any] = {}
                if names:
                    entry["namespaces"] = sorted(names)
                if ns_conj or not names:
                    entry["namespaceSelector"] = to_label_selector(
                        ns_conj, frozenset({NS_NAME_LABEL})
                    )
                pod = to_label_selector(conj, frozenset({NS_LABEL}))
                if pod:
                    entry["podSelector"] = pod
                selectors.append(entry)
                if rep is None:
                    rep_ns = (
                        (sorted(names)[0] if names else None)
                        or ns_labels.get(NS_NAME_LABEL)
                        or "ns-any"
                    )
                    rep = {
                        "ip": None,
                        "kubernetes": {
                            "namespace": rep_ns,
                            "labels": {k: v for k, v in labels.items() if k != NS_LABEL},
                            "namespace_labels": {**ns_labels, NAME_LABEL: rep_ns},
                        },
                    }
        if rep is None:
            warnings.append(f"{where}: a selector that can match nothing is left out")
            return
        key = repr(selectors)
        if key in zones:
            return
        k8s = rep["kubernetes"]
        text = ".".join(f"{k.split('/')[-1]}-{v}" for k, v in sorted(k8s["labels"].items()))
        first = selectors[0].get("namespaces")
        base = (first[0] if first and len(first) == 1 else "global") + (f".{text}" if text else "")
        zones[key] = DerivedZone(
            unique(slug(name or base), taken),
            rep,
            kubernetes=selectors,
            mode=mode,
            **(catch_all(why) if why else {"description": f"endpoints selected in {where}"}),
        )

    for policy in policies:
        pod_zone(policy.selector, policy.namespace, policy.namespace_selector, policy.where,
                 mode="monitor" if policy.staged else "enforce")  # fmt: skip
        if policy.namespace is not None:
            why = f"endpoints of namespace {policy.namespace} that no policy selects"
            pod_zone(Expr("all"), policy.namespace, None, "", f"{why}: it holds policies")
        for rule in policy.ingress + policy.egress:
            for entity in (rule.source, rule.destination):
                for net in entity.nets + entity.not_nets:
                    if zone_worthy(net):
                        nets.setdefault(str(net), net)
                if entity.selector is not None or entity.namespace_selector is not None:
                    pod_zone(
                        entity.selector or Expr("all"),
                        policy.namespace if entity.namespace_selector is None else None,
                        entity.namespace_selector,
                        policy.where,
                    )
    # every pod of the cluster is in some zone, as it is a member of its namespace
    for namespace in named_namespaces(zones.values()):
        pod_zone(Expr("all"), namespace, None, "", f"endpoints of namespace {namespace} that no "
                 "zone above selects: policies name the namespace as a peer")  # fmt: skip
    pod_zone(Expr("all"), None, None, "", "endpoints of every other namespace: no policy names "
             "them", name="cluster")  # fmt: skip
    return add_address_zones(list(zones.values()), nets, taken, "nets", warnings)


# --- export ----------------------------------------------------------------------


def export_calico(model: CompiledModel) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """The model as GlobalNetworkPolicies: {file name: [policies]} and warnings."""
    doc = model.model.document
    warnings: list[str] = []
    exclusive = exclusive_selectors(doc, warnings)
    entities = {z.name: _entities(z, doc, exclusive) for z in doc.zones}
    entities[INTERNET] = [{"nets": ["0.0.0.0/0"], "notNets": internet_excepts(doc)}]
    by_zone: dict[tuple[str, str], list[tuple[str, dict[str, Any], Services]]] = {}
    for need in needs(doc, {"tcp", "udp", "icmp"}, warnings):
        for entity in entities[need.peer]:
            by_zone.setdefault((need.zone, need.direction), []).append(
                (need.rule, entity, need.service_set)
            )
    policies = []
    for zone in doc.zones:
        if not zone.kubernetes:
            continue  # an address zone: only a peer
        selectors = zone_selectors(zone, exclusive)
        for i, sel in enumerate(selectors):
            spec: dict[str, Any] = {"order": 100, "selector": _selector_text(sel)}
            if sel.namespace_selector is not None:
                spec["namespaceSelector"] = _label_selector_text(sel.namespace_selector)
            spec["types"] = ["Ingress", "Egress"]
            staged = zone.mode == "monitor"  # observe before enforcing: Calico's staged form
            if staged:
                spec["stagedAction"] = "Set"
            spec["ingress"] = _rules(by_zone.get((zone.name, "ingress"), []), "source")
            spec["egress"] = _rules(by_zone.get((zone.name, "egress"), []), "destination")
            suffix = f"-{i + 1}" if len(selectors) > 1 else ""
            policies.append(
                {
                    "apiVersion": API,
                    "kind": "StagedGlobalNetworkPolicy" if staged else "GlobalNetworkPolicy",
                    "metadata": {
                        "name": slug(f"segwatch-{zone.name}{suffix}", 253),
                        "annotations": {"segwatch/zone": zone.name},
                    },
                    "spec": spec,
                }
            )
    for zone in doc.zones:
        if zone.cidrs and not zone.kubernetes:
            warnings.append(
                f"zone {zone.name}: an address zone is only a peer in Calico "
                "policies; traffic into it is not enforced by the export"
            )
    if not policies:
        raise ExportProblem("calico", "Calico policies here select workloads, and no zone of "
                            "the model has a kubernetes selector (address zones are only peers; "
                            "--to aws-sg writes them)")  # fmt: skip
    return {"global-network-policies.yaml": policies}, warnings


def _selector_text(sel: PodSelector) -> str:
    parts = []
    if sel.namespaces:
        parts.append(f"{NS_LABEL} in {{{', '.join(repr(n) for n in sorted(sel.namespaces))}}}")
    if sel.pod_selector is not None:
        text = _label_selector_text(sel.pod_selector)
        if text != "all()":
            parts.append(text)
    return " && ".join(parts) or "all()"


def _label_selector_text(sel: LabelSelector) -> str:
    parts = [f"{k} == {v!r}" for k, v in sorted(sel.match_labels.items())]
    for e in sel.match_expressions:
        values = ", ".join(repr(v) for v in e.values)
        parts.append(
            {
                "In": f"{e.key} in {{{values}}}",
                "NotIn": f"{e.key} not in {{{values}}}",
                "Exists": f"has({e.key})",
                "DoesNotExist": f"!has({e.key})",
            }[e.operator]
        )
    return " && ".join(parts) or "all()"


def _entities(
    zone: Zone, doc: ModelDocument, exclusive: dict[str, list[PodSelector]] | None = None
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for sel in zone_selectors(zone, exclusive):
        entity: dict[str, Any] = {"selector": _selector_text(sel)}
        if sel.namespace_selector is not None:
            entity["namespaceSelector"] = _label_selector_text(sel.namespace_selector)
        else:
            entity["namespaceSelector"] = "all()"  # the selector names the namespaces
        out.append(entity)
    for cidr, inner in inner_networks(doc, zone.name).items():
        entity = {"nets": [cidr]}
        if inner:
            entity["notNets"] = inner
        out.append(entity)
    return out


def _rules(
    entries: list[tuple[str, dict[str, Any], Services]], peer_key: str
) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for _rule_id, entity, services in entries:
        everything = all(services.get(p) == FULL for p in PROTOCOLS)
        choices: list[str | None] = [None] if everything else ["tcp", "udp", "icmp", "icmpv6"]
        for protocol in choices:
            if protocol is not None and not services.get(protocol.replace("v6", "")):
                continue
            rule: dict[str, Any] = {"action": "Allow"}
            if protocol is not None:
                rule["protocol"] = {"tcp": "TCP", "udp": "UDP", "icmp": "ICMP", "icmpv6": "ICMPv6"}[
                    protocol
                ]
            rule[peer_key] = dict(entity)
            ports = services.get(protocol or "") or FULL
            if protocol in ("tcp", "udp") and ports != FULL:
                rule["destination"] = {
                    **rule.get("destination", {}),
                    "ports": [lo if lo == hi else f"{lo}:{hi}" for lo, hi in ports],
                }
            if rule not in rules:
                rules.append(rule)
    rules.append({"action": "Deny"})
    return rules
