"""Cilium ``cilium.io/v2`` CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy <->
the native model (L3/L4).

Import semantics (Cilium's default enforcement mode, docs/model.md has the truth
table):

- A policy selects endpoints with ``endpointSelector``; a CiliumNetworkPolicy
  only those of its own namespace, a clusterwide one any pod. ``spec`` and
  ``specs`` (a list of rules) are both read.
- An endpoint selected by a policy with ``ingress`` or ``ingressDeny`` rules is
  in default deny for ingress (likewise egress), unless that policy says
  ``enableDefaultDeny: {ingress: false}``; it is enough that one policy asks.
  An endpoint in default deny for no policy allows everything that no deny rule
  forbids. Deny rules win over allow rules.
- A connection from A to B passes when A's egress and B's ingress both admit it.
- Peers: ``fromEndpoints``/``toEndpoints`` (label selectors; in a namespaced
  policy limited to its namespace unless the selector names
  ``io.kubernetes.pod.namespace``; namespace labels as
  ``io.cilium.k8s.namespace.labels.<key>``), ``fromCIDR``/``fromCIDRSet``
  (addresses outside the cluster, ``except`` honoured) and ``fromEntities``:
  ``world`` (every address outside the cluster: address zones and the
  Internet), ``cluster`` (every pod), ``all``, ``kube-apiserver`` (a zone of
  the addresses given as ``apiserver``). A rule with ports and no peer admits
  every peer on those ports; an empty rule ``{}`` admits nothing.
- ``toPorts``: numbers, ranges (``endPort``), the known named ports, ``port``
  ``"0"`` or none for every port; protocol TCP, UDP or ANY (read as TCP and
  UDP).
- Refused, with the file, policy and field: L7 ``rules`` and TLS settings,
  ``toFQDNs``, ``toServices``, ``toGroups``, ``fromRequires``/``toRequires``,
  node selectors and peers, ``icmps`` type matches, SCTP, ``cidrGroupRef``,
  selector keys of ``io.cilium.k8s.policy.*``. The node entities (``host``,
  ``remote-node``, ``health``, ``init``, ``ingress``, ``unmanaged``) match no
  zone of the model: rules naming them are left out with a warning.

Export writes one CiliumClusterwideNetworkPolicy per zone selector that selects
pods, allowing what the zone's flows need each way; a direction with nothing to
allow gets the empty rule, which keeps the default deny. Monitor zones go to
``monitor-zones.yaml`` with ``enable-audit-mode.sh``: Cilium's audit mode is set
per endpoint (or for the whole agent), not per policy, so the script turns it
on for the zone's pods before the policies are applied.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    representative_address,
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
from detector.model.formats.k8s import DNS, DNS_SERVER_EGRESS, NAME_LABEL, NAMED_PORTS
from detector.model.load import SegmentationModel
from detector.model.schema import INTERNET, LabelSelector, ModelDocument, PodSelector, Zone
from detector.model.services import (
    ALL,
    FULL,
    PROTOCOLS,
    Services,
    intersect,
    merge,
    subtract,
    union,
)

__all__ = ["APISERVER_TAG", "export_cilium", "import_cilium"]

API = "cilium.io/v2"
KINDS = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy")
NS_KEY = "io.kubernetes.pod.namespace"
NS_LABELS = "io.cilium.k8s.namespace.labels."
APISERVER_TAG = "cilium_entity"  # a zone tagged kube-apiserver exports as that entity
MODE_ANNOTATION = "segwatch/mode"
_NODE_ENTITIES = {"host", "remote-node", "health", "init", "ingress", "unmanaged"}
_ENTITIES = {
    "world",
    "world-ipv4",
    "world-ipv6",
    "cluster",
    "all",
    "kube-apiserver",
    *_NODE_ENTITIES,
}
_PEER_KEYS = {"Endpoints", "CIDR", "CIDRSet", "Entities"}
_REFUSED_PEERS = {
    "Requires": "requirements on the peer",
    "FQDNs": "FQDN selectors (names, not addresses)",
    "Services": "service selectors",
    "Groups": "cloud groups",
    "Nodes": "node selectors",
}
_RULE_KEYS = {"toPorts", "icmps", "authentication"}
_SPEC_KEYS = {
    "endpointSelector",
    "ingress",
    "egress",
    "ingressDeny",
    "egressDeny",
    "enableDefaultDeny",
    "description",
    "labels",
}

# --- import --------------------------------------------------------------------


def _key(key: str) -> str:
    """A selector key without its source prefix (``k8s:``, ``any:``)."""
    for prefix in ("k8s:", "any:"):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


@dataclass
class _Selector:
    """A Cilium endpoint selector, keys without prefixes, scoped to a namespace if the
    policy is namespaced and the selector does not name one."""

    selector: LabelSelector
    where: str

    @classmethod
    def parse(cls, data: Any, namespace: str | None, where: str) -> _Selector:
        if not isinstance(data, dict):
            raise ImportProblem(
                where, "a selector must be an object (matchLabels, matchExpressions)"
            )
        raw_labels, raw_exprs = data.get("matchLabels") or {}, data.get("matchExpressions") or []
        if (
            not isinstance(raw_labels, dict)
            or not isinstance(raw_exprs, list)
            or not all(isinstance(e, dict) for e in raw_exprs)
        ):
            raise ImportProblem(
                where, "matchLabels must be an object and matchExpressions a list of objects"
            )
        labels = {_key(str(k)): str(v) for k, v in raw_labels.items()}
        exprs = [{**e, "key": _key(str(e.get("key")))} for e in raw_exprs]
        for key in [*labels, *(e["key"] for e in exprs)]:
            if key.startswith("reserved:"):
                raise ImportProblem(
                    where,
                    f"selector key {key!r}: a reserved identity is an "
                    "entity here; write fromEntities/toEntities",
                )
            if key.startswith("io.cilium.k8s.policy."):
                raise ImportProblem(
                    where,
                    f"selector key {key!r} has no equivalent in the "
                    "segwatch model (flows carry pod labels)",
                )
        named = NS_KEY in labels or any(e["key"] == NS_KEY for e in exprs)
        if namespace is not None and not named:
            labels[NS_KEY] = namespace
        try:
            selector = LabelSelector.model_validate(
                {"matchLabels": labels, "matchExpressions": exprs}
            )
        except ValueError as exc:
            raise ImportProblem(where, f"not a label selector: {exc}") from None
        return cls(selector, where)

    def matches(self, zone: DerivedZone) -> bool:
        k8s = zone.endpoint.get("kubernetes")
        return k8s is not None and self.selector.matches(_identity(k8s))

    def to_zone_selector(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(the model's PodSelector data, a representative pod) or None (matches nothing)."""
        pod: dict[str, Any] = {"matchLabels": {}, "matchExpressions": []}
        ns: dict[str, Any] = {"matchLabels": {}, "matchExpressions": []}
        namespaces: list[str] | None = None
        for k, v in self.selector.match_labels.items():
            if k == NS_KEY:
                namespaces = [v]
            elif k.startswith(NS_LABELS):
                ns["matchLabels"][k[len(NS_LABELS) :]] = v
            else:
                pod["matchLabels"][k] = v
        for e in self.selector.match_expressions:
            data = {
                "key": e.key,
                "operator": e.operator,
                **({"values": list(e.values)} if e.values else {}),
            }
            if e.key == NS_KEY and e.operator == "In":
                namespaces = sorted(set(e.values) & set(namespaces or e.values))
            elif e.key == NS_KEY:
                ns["matchExpressions"].append({**data, "key": NAME_LABEL})
            elif e.key.startswith(NS_LABELS):
                ns["matchExpressions"].append({**data, "key": e.key[len(NS_LABELS) :]})
            else:
                pod["matchExpressions"].append(data)
        pod, ns = ({k: v for k, v in s.items() if v} for s in (pod, ns))
        labels, ns_labels = selector_labels(pod), selector_labels(ns)
        if labels is None or ns_labels is None or namespaces == []:
            return None
        entry: dict[str, Any] = {}
        if namespaces:
            entry["namespaces"] = namespaces
        if ns or not namespaces:
            entry["namespaceSelector"] = ns
        if pod:
            entry["podSelector"] = pod
        rep_ns = (namespaces[0] if namespaces else None) or ns_labels.get(NAME_LABEL) or "ns-any"
        rep = {
            "namespace": rep_ns,
            "labels": labels,
            "namespace_labels": {**ns_labels, NAME_LABEL: rep_ns},
        }
        return entry, rep


def _identity(k8s: dict[str, Any]) -> dict[str, str]:
    """The labels Cilium sees on a pod: its own, its namespace, its namespace's labels."""
    ns_labels = {NS_LABELS + k: v for k, v in k8s["namespace_labels"].items()}
    return {**k8s["labels"], **ns_labels, NS_KEY: k8s["namespace"]}


@dataclass
class _Rule:
    where: str
    endpoints: list[_Selector] = field(default_factory=list)
    nets: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, list[Any]]] = field(
        default_factory=list
    )  # (cidr, except)
    entities: set[str] = field(default_factory=set)
    any_peer: bool = False  # ports without a peer: every peer
    services: Services = field(default_factory=dict)

    def reaches(self, peer: DerivedZone) -> bool:
        if self.any_peer:
            return True
        k8s, ip = peer.endpoint.get("kubernetes"), peer.endpoint.get("ip")
        apiserver = peer.tags.get(APISERVER_TAG) == "kube-apiserver"
        if "all" in self.entities:
            return True
        if apiserver:
            return "kube-apiserver" in self.entities
        if k8s is not None:
            return "cluster" in self.entities or any(s.matches(peer) for s in self.endpoints)
        if ip is None:
            return False
        address = ipaddress.ip_address(ip)
        world = f"world-ipv{address.version}"
        if "world" in self.entities or world in self.entities:
            return True
        return any(
            address in net and not any(address in e for e in excepts if e.version == net.version)
            for net, excepts in self.nets
            if net.version == address.version
        )


class _Policy:
    def __init__(
        self,
        where: str,
        doc: dict[str, Any],
        spec: dict[str, Any],
        i: int | None,
        warnings: list[str],
    ) -> None:
        meta = doc.get("metadata") or {}
        kind = doc.get("kind")
        name = meta.get("name")
        self.namespace = namespace_of(meta, f"{where}: {kind} {name}") if kind == KINDS[0] else None
        self.where = f"{where}: {kind} {self.namespace + '/' if self.namespace else ''}{name}" + (
            f" specs[{i}]" if i is not None else ""
        )
        self.monitor = (meta.get("annotations") or {}).get(MODE_ANNOTATION) == "monitor"
        self.warnings = warnings
        if not isinstance(spec, dict):
            raise ImportProblem(self.where, "spec must be an object")
        if "nodeSelector" in spec:
            raise ImportProblem(
                f"{self.where} nodeSelector",
                "host policies (nodeSelector) "
                "are not supported: the model's zones are pods and addresses",
            )
        unknown = set(spec) - _SPEC_KEYS
        if unknown:
            raise ImportProblem(self.where, f"{', '.join(sorted(unknown))} not supported")
        if "endpointSelector" not in spec:
            raise ImportProblem(self.where, "endpointSelector is required")
        self.selector = _Selector.parse(
            spec["endpointSelector"], self.namespace, f"{self.where} endpointSelector"
        )
        self.rules: dict[str, list[_Rule]] = {}
        for section in ("ingress", "egress", "ingressDeny", "egressDeny"):
            rules = spec.get(section) or []
            if not isinstance(rules, list):
                raise ImportProblem(f"{self.where} {section}", "must be a list of rules")
            self.rules[section] = [
                self._rule(r, section, f"{self.where} {section}[{j}]") for j, r in enumerate(rules)
            ]
        default_deny = spec.get("enableDefaultDeny") or {}
        self.types = {
            kind
            for kind, section in (("Ingress", "ingress"), ("Egress", "egress"))
            if (spec.get(section) or spec.get(f"{section}Deny"))
            and default_deny.get(section, True) is not False
        }
        self.deny_types = {
            k
            for k, s in (("Ingress", "ingress"), ("Egress", "egress"))
            if spec.get(s) or spec.get(f"{s}Deny")
        }

    def selects(self, zone: DerivedZone) -> bool:
        return self.selector.matches(zone)

    def _rule(self, data: Any, section: str, where: str) -> _Rule:
        if not isinstance(data, dict):
            raise ImportProblem(where, "a rule must be an object")
        side = "from" if section.startswith("ingress") else "to"
        for suffix, what in _REFUSED_PEERS.items():
            if f"{side}{suffix}" in data:
                raise ImportProblem(
                    f"{where}.{side}{suffix}",
                    f"{what} are not supported: write the peers as endpoints, CIDRs or entities",
                )
        allowed_keys = {f"{side}{k}" for k in _PEER_KEYS} | _RULE_KEYS
        unknown = set(data) - allowed_keys
        if unknown:
            raise ImportProblem(where, f"{', '.join(sorted(unknown))} not supported")
        if data.get("icmps"):
            raise ImportProblem(
                f"{where}.icmps",
                "ICMP type matches have no equivalent in the "
                "segwatch model (a rule without toPorts allows all ICMP)",
            )
        if data.get("authentication"):
            raise ImportProblem(f"{where}.authentication", "mutual authentication is not supported")
        rule = _Rule(where)
        scope = self.namespace
        for j, sel in enumerate(data.get(f"{side}Endpoints") or []):
            rule.endpoints.append(_Selector.parse(sel, scope, f"{where}.{side}Endpoints[{j}]"))
        for j, cidr in enumerate(data.get(f"{side}CIDR") or []):
            rule.nets.append((self._net(cidr, f"{where}.{side}CIDR[{j}]"), []))
        for j, item in enumerate(data.get(f"{side}CIDRSet") or []):
            at = f"{where}.{side}CIDRSet[{j}]"
            if not isinstance(item, dict) or "cidr" not in item:
                raise ImportProblem(
                    at,
                    "needs cidr (cidrGroupRef and cidrGroupSelector are "
                    "not supported: write the networks)",
                )
            rule.nets.append(
                (
                    self._net(item["cidr"], at),
                    [self._net(e, f"{at}.except") for e in item.get("except") or []],
                )
            )
        for j, entity in enumerate(data.get(f"{side}Entities") or []):
            if entity not in _ENTITIES:
                raise ImportProblem(
                    f"{where}.{side}Entities[{j}]",
                    f"{entity!r} is not a Cilium entity ({', '.join(sorted(_ENTITIES))})",
                )
            if entity in _NODE_ENTITIES:
                self.warnings.append(
                    f"{where}.{side}Entities[{j}]: entity {entity} (the "
                    "nodes) matches no zone of the model; left out"
                )
                continue
            rule.entities.add(entity)
        peers = any(data.get(f"{side}{k}") for k in _PEER_KEYS)
        rule.services = self._services(data.get("toPorts"), f"{where}.toPorts")
        rule.any_peer = not peers and "toPorts" in data and bool(data["toPorts"])
        if not peers and not rule.any_peer:
            rule.services = {}  # the empty rule: admits nothing
        return rule

    def _net(self, text: Any, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        try:
            return ipaddress.ip_network(str(text), strict=False)
        except ValueError:
            raise ImportProblem(where, f"{text!r} is not a network") from None

    def _services(self, to_ports: Any, where: str) -> Services:
        if not to_ports:
            return {p: list(v) for p, v in ALL.items()}
        if not isinstance(to_ports, list):
            raise ImportProblem(where, "must be a list of {ports: [...]} objects")
        out: Services = {}
        for j, item in enumerate(to_ports):
            at = f"{where}[{j}]"
            if not isinstance(item, dict):
                raise ImportProblem(at, "must be an object with ports")
            for key in ("rules", "terminatingTLS", "originatingTLS", "serverNames", "listener"):
                if item.get(key):
                    raise ImportProblem(
                        f"{at}.{key}",
                        "L7 rules are not supported: the model decides on addresses and ports",
                    )
            ports = item.get("ports") or [{}]
            if not isinstance(ports, list):
                raise ImportProblem(f"{at}.ports", "must be a list of {port, protocol} objects")
            for k, port in enumerate(ports):
                out = union(out, self._port(port, f"{at}.ports[{k}]"))
        return out

    def _port(self, port: Any, where: str) -> Services:
        if not isinstance(port, dict):
            raise ImportProblem(where, "must be an object (port, protocol)")
        proto = str(port.get("protocol") or "ANY").upper()
        if proto not in ("TCP", "UDP", "ANY"):
            raise ImportProblem(where, f"protocol {proto} has no equivalent in the segwatch model")
        value = str(port.get("port") or "0")
        if not value.isdigit():
            if value not in NAMED_PORTS:
                raise ImportProblem(
                    where,
                    f"named port {value!r} cannot be resolved without "
                    f"the pods' specs; write its number (known names: "
                    f"{', '.join(sorted(NAMED_PORTS))})",
                )
            value = str(NAMED_PORTS[value])
        if len(value) > 5:
            raise ImportProblem(where, f"port {value} is not within 0-65535")
        first = int(value)
        end = port.get("endPort")
        try:
            last = int(end) if end is not None else first
        except (TypeError, ValueError):
            raise ImportProblem(where, f"endPort {end!r} is not a number") from None
        ranges = list(FULL) if first == 0 else [port_range(first, last, where)]
        protocols = ["tcp", "udp"] if proto == "ANY" else [proto.lower()]
        return {p: list(ranges) for p in protocols}


class _Sides:
    """What a zone's policies let it exchange with a peer, one direction at a time."""

    def __init__(self, policies: list[_Policy]) -> None:
        self._selecting = Selecting(policies)
        self._deny_selecting = Selecting([_DenyView(p) for p in policies])

    def side(self, zone: DerivedZone, peer: DerivedZone, direction: str) -> Services:
        if zone.endpoint.get("kubernetes") is None:
            return ALL  # not a pod: Cilium does not restrict it
        enforcing = self._selecting(zone, direction)
        selecting = [v.policy for v in self._deny_selecting(zone, direction)]
        allowed: Services = {} if enforcing else {p: list(v) for p, v in ALL.items()}
        denied: Services = {}
        for policy in selecting:
            for rule in policy.rules[direction]:
                if rule.reaches(peer):
                    allowed = union(allowed, rule.services)
            for rule in policy.rules[f"{direction}Deny"]:
                if rule.reaches(peer):
                    denied = union(denied, rule.services)
        return subtract(allowed, denied)


class _DenyView:
    """A policy seen by the directions it has rules in (deny rules apply even where
    the policy turns the default deny off)."""

    def __init__(self, policy: _Policy) -> None:
        self.policy = policy
        self.types = policy.deny_types
        self.selects = policy.selects


def import_cilium(
    paths: list[str], name: str = "imported-cilium", *, apiserver: Sequence[str] = ()
) -> tuple[SegmentationModel, list[str]]:
    """Cilium policies in YAML/JSON files -> a native model, and warnings.

    :param apiserver: the API server's addresses (CIDRs), for rules naming the
        ``kube-apiserver`` entity (without them those rules are left out, warned).
    :raises ImportProblem: a document outside the supported subset, with where.
    """
    warnings: list[str] = []
    policies: list[_Policy] = []
    for where, doc in read_documents(paths):
        if doc.get("apiVersion") != API or doc.get("kind") not in KINDS:
            raise ImportProblem(
                where,
                f"{doc.get('apiVersion')}/{doc.get('kind')} is not a "
                f"{API} CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy",
            )
        if "spec" in doc:
            policies.append(_Policy(where, doc, doc["spec"], None, warnings))
        for i, spec in enumerate(doc.get("specs") or []):
            policies.append(_Policy(where, doc, spec, i, warnings))
    if not policies:
        raise ImportProblem(", ".join(paths), "no Cilium policy found")
    zones = _zones(policies, list(apiserver), warnings)
    sides = _Sides(policies)

    def governed(a: DerivedZone, b: DerivedZone) -> bool:
        return a.endpoint.get("kubernetes") is not None or b.endpoint.get("kubernetes") is not None

    def allowed(a: DerivedZone, b: DerivedZone) -> Services:
        return intersect(sides.side(a, b, "egress"), sides.side(b, a, "ingress"))

    model = build_model(
        name, f"Imported from {len(policies)} Cilium policies", zones, allowed, governed, warnings
    )
    return model, warnings


def _zones(policies: list[_Policy], apiserver: list[str], warnings: list[str]) -> list[DerivedZone]:
    zones: dict[str, DerivedZone] = {}
    taken: set[str] = set()
    nets: dict[str, ipaddress.IPv4Network | ipaddress.IPv6Network] = {}

    def pod_zone(selector: _Selector, why: str = "", name: str = "", mode: str = "enforce") -> None:
        found = selector.to_zone_selector()
        if found is None:
            warnings.append(f"{selector.where}: a selector that can match nothing is left out")
            return
        entry, rep = found
        key = repr(sorted(entry.items()))
        if key in zones:
            if mode == "monitor":
                zones[key].mode = mode
            return
        text = ".".join(f"{k.split('/')[-1]}-{v}" for k, v in sorted(rep["labels"].items()))
        namespaces = entry.get("namespaces") or []
        ns_labels = (entry.get("namespaceSelector") or {}).get("matchLabels") or {}
        ns_text = ".".join(f"{k.split('/')[-1]}-{v}" for k, v in sorted(ns_labels.items()))
        where = namespaces[0] if len(namespaces) == 1 else f"ns.{ns_text}" if ns_text else "cluster"
        base = where + (f".{text}" if text else "")
        zones[key] = DerivedZone(
            unique(slug(name or base), taken),
            {"ip": None, "kubernetes": rep},
            kubernetes=[entry],
            mode=mode,
            **(
                catch_all(why)
                if why
                else {"description": f"endpoints selected in {selector.where.rsplit(' ', 1)[0]}"}
            ),
        )

    def namespace_zone(namespace: str, why: str) -> None:
        pod_zone(_Selector(LabelSelector(matchLabels={NS_KEY: namespace}), ""), why)

    uses_apiserver = False
    for policy in policies:
        pod_zone(policy.selector, mode="monitor" if policy.monitor else "enforce")
        if policy.namespace is not None:
            namespace_zone(
                policy.namespace,
                f"endpoints of namespace {policy.namespace} that no "
                "policy selects: it holds policies",
            )
        for rules in policy.rules.values():
            for rule in rules:
                for sel in rule.endpoints:
                    pod_zone(sel)
                for net, excepts in rule.nets:
                    for n in [net, *excepts]:
                        if zone_worthy(n):
                            nets.setdefault(str(n), n)
                uses_apiserver |= "kube-apiserver" in rule.entities
    for namespace in named_namespaces(zones.values()):
        namespace_zone(
            namespace,
            f"endpoints of namespace {namespace} that no zone above "
            "selects: policies name the namespace as a peer",
        )
    pod_zone(
        _Selector(LabelSelector(), ""),
        "endpoints of every other namespace: no policy names them",
        name="cluster",
    )
    out = add_address_zones(list(zones.values()), nets, taken, "CIDR", warnings)
    if uses_apiserver and not apiserver:
        warnings.append(
            "entity kube-apiserver: the policies do not say the API server's "
            "addresses; rules naming it are left out (--apiserver CIDR makes "
            "its zone)"
        )
    elif uses_apiserver:
        cidrs = [ipaddress.ip_network(c, strict=False) for c in apiserver]
        rep = representative_address(cidrs[0], [])
        out.append(
            DerivedZone(
                unique("kube-apiserver", taken),
                {"ip": rep},
                cidrs=cidrs,
                description="the kube-apiserver entity",
                tags={APISERVER_TAG: "kube-apiserver"},
            )
        )
    return out


# --- export ----------------------------------------------------------------------

KUBE_DNS = {"matchLabels": {NS_KEY: "kube-system", "k8s-app": "kube-dns"}}


def export_cilium(
    model: CompiledModel, *, isolate_system: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """The model as CiliumClusterwideNetworkPolicies: {file name: policies (or, for the
    audit-mode script, text)} and warnings. Deterministic.

    :raises ExportProblem: no zone of the model selects pods.
    """
    doc = model.model.document
    warnings: list[str] = []
    exclusive = exclusive_selectors(doc, warnings)
    peers = {z.name: _peers(z, doc, exclusive) for z in doc.zones}
    peers[INTERNET] = [{"CIDRSet": [{"cidr": "0.0.0.0/0", "except": internet_excepts(doc)}]}]
    by_zone: dict[tuple[str, str], list[tuple[dict[str, Any], Services]]] = {}
    for need in needs(doc, {"tcp", "udp"}, warnings):
        for peer in peers[need.peer]:
            by_zone.setdefault((need.zone, need.direction), []).append((peer, need.service_set))
    dns_zone = doc.defaults.dns.zone if doc.defaults.dns is not None else None
    no_dns = dns_zone is None and any(z.kubernetes for z in doc.zones)
    if no_dns:
        warnings.append(
            "the model declares no DNS zone: every isolated pod may still reach "
            "kube-dns (k8s-app=kube-dns in kube-system) on 53, or it could not "
            "resolve names"
        )
    enforced: list[dict[str, Any]] = []
    monitored: list[dict[str, Any]] = []
    audit: list[str] = []
    for zone in doc.zones:
        if not zone.kubernetes:
            if zone.tags.extra.get(APISERVER_TAG) != "kube-apiserver":
                warnings.append(
                    f"zone {zone.name}: an address zone is only a peer in Cilium "
                    "policies; traffic into it is not enforced by the export"
                )
            continue
        selectors = []
        for sel in zone_selectors(zone, exclusive):
            kept = outside_system(zone.name, list(sel.namespaces), isolate_system, warnings)
            if sel.namespaces and not kept:
                continue
            selectors.append(_endpoint_selector(sel, kept, isolate_system))
        egress = by_zone.get((zone.name, "egress"), [])
        if no_dns:
            egress = [*egress, ({"Endpoints": [KUBE_DNS]}, DNS)]
        system = any(ns in SYSTEM_NAMESPACES for sel in zone.kubernetes for ns in sel.namespaces)
        if zone.name == dns_zone and isolate_system and system:  # CoreDNS, say
            egress = [*egress, ({"Entities": ["kube-apiserver", "world"]}, DNS_SERVER_EGRESS)]
            warnings.append(
                f"zone {zone.name}: the DNS zone is isolated, so its egress also opens 53 "
                "(upstream resolvers) and 443, 6443 (the API server) to world and kube-apiserver"
            )
        for i, selector in enumerate(selectors):
            suffix = f"-{i + 1}" if len(selectors) > 1 else ""
            meta: dict[str, Any] = {
                "name": slug(f"segwatch-{zone.name}{suffix}", 253),
                "labels": {"app.kubernetes.io/managed-by": "segwatch"},
                "annotations": {"segwatch/zone": zone.name},
            }
            if zone.mode == "monitor":
                meta["annotations"][MODE_ANNOTATION] = "monitor"
            policy = {
                "apiVersion": API,
                "kind": KINDS[1],
                "metadata": meta,
                "spec": {
                    "endpointSelector": selector,
                    "ingress": _rules(by_zone.get((zone.name, "ingress"), []), "from"),
                    "egress": _rules(egress, "to"),
                },
            }
            (monitored if zone.mode == "monitor" else enforced).append(policy)
            if zone.mode == "monitor":
                audit.append(_audit_lines(zone.name, selector, warnings))
    if not enforced and not monitored:
        raise ExportProblem(
            "cilium",
            "Cilium policies here select pods, and no zone of the "
            "model selects pods the export isolates (address zones are only "
            "peers; --to aws-sg writes them)",
        )
    files: dict[str, Any] = {}
    if enforced:
        files["cilium-network-policies.yaml"] = enforced
    if monitored:
        warnings.append(
            f"{len(monitored)} policies of monitor zones are in monitor-zones.yaml: run "
            "enable-audit-mode.sh first (Cilium's policy audit mode is per endpoint), so "
            "that Hubble shows what they would drop (verdict AUDIT) and nothing is dropped"
        )
        files["monitor-zones.yaml"] = monitored
        files["enable-audit-mode.sh"] = _AUDIT_SCRIPT + "".join(audit)
    return files, warnings


def _endpoint_selector(
    sel: PodSelector, namespaces: list[str], isolate_system: bool
) -> dict[str, Any]:
    labels: dict[str, str] = {}
    exprs: list[dict[str, Any]] = []
    if len(namespaces) == 1:
        labels[NS_KEY] = namespaces[0]
    elif namespaces:
        exprs.append({"key": NS_KEY, "operator": "In", "values": sorted(namespaces)})
    elif not isolate_system:
        exprs.append({"key": NS_KEY, "operator": "NotIn", "values": sorted(SYSTEM_NAMESPACES)})
    if sel.namespace_selector is not None:
        for k, v in sel.namespace_selector.match_labels.items():
            labels[NS_KEY if k == NAME_LABEL else NS_LABELS + k] = v
        for e in sel.namespace_selector.match_expressions:
            exprs.append(_expr(NS_KEY if e.key == NAME_LABEL else NS_LABELS + e.key, e))
    if sel.pod_selector is not None:
        labels.update(sel.pod_selector.match_labels)
        exprs += [_expr(e.key, e) for e in sel.pod_selector.match_expressions]
    out: dict[str, Any] = {}
    if labels:
        out["matchLabels"] = dict(sorted(labels.items()))
    if exprs:
        out["matchExpressions"] = exprs
    return out


def _expr(key: str, e: Any) -> dict[str, Any]:
    return {"key": key, "operator": e.operator, **({"values": list(e.values)} if e.values else {})}


def _peers(
    zone: Zone, doc: ModelDocument, exclusive: dict[str, list[PodSelector]] | None = None
) -> list[dict[str, Any]]:
    """The peer fields (without from/to) that name a zone's members."""
    if zone.tags.extra.get(APISERVER_TAG) == "kube-apiserver":
        return [{"Entities": ["kube-apiserver"]}]
    out: list[dict[str, Any]] = []
    for sel in zone_selectors(zone, exclusive):
        out.append({"Endpoints": [_endpoint_selector(sel, list(sel.namespaces), True)]})
    for cidr, inner in inner_networks(doc, zone.name).items():
        out.append({"CIDRSet": [{"cidr": cidr, **({"except": inner} if inner else {})}]})
    return out


def _rules(entries: list[tuple[dict[str, Any], Services]], side: str) -> list[dict[str, Any]]:
    """One rule per peer field kind and service set, peers merged: deterministic. The
    empty rule when there is nothing to allow: it keeps the direction in default deny."""
    by_key: dict[tuple[str, str], tuple[Services, list[Any]]] = {}
    for peer, services in entries:
        ((kind, values),) = peer.items()
        entry = by_key.setdefault((kind, repr(sorted(services.items()))), (services, []))
        entry[1].extend(v for v in values if v not in entry[1])
    rules = []
    for (kind, _marker), (services, values) in sorted(by_key.items()):
        rule: dict[str, Any] = {f"{side}{kind}": sorted(values, key=repr)}
        ports = _to_ports(services)
        if ports is not None:
            rule["toPorts"] = [{"ports": ports}]
        rules.append(rule)
    return rules or [{}]


def _to_ports(services: Services) -> list[dict[str, Any]] | None:
    if all(services.get(p) == FULL for p in PROTOCOLS):
        return None
    out = []
    for proto in ("tcp", "udp"):
        for lo, hi in merge(services.get(proto, [])):
            port: dict[str, Any] = {
                "port": "0" if (lo, hi) == (0, 65535) else str(lo),
                "protocol": proto.upper(),
            }
            if hi > lo and (lo, hi) != (0, 65535):
                port["endPort"] = hi
            out.append(port)
    return out


_AUDIT_SCRIPT = """\
#!/bin/sh
# Cilium policy audit mode for the pods of segwatch's monitor zones. Run it before
# applying monitor-zones.yaml: the policies then drop nothing and Hubble shows what
# they would drop (verdict AUDIT). Audit mode is per endpoint: a restarted pod is a
# new endpoint, so run it again after a rollout (or set policy-audit-mode for the
# whole agent). To enforce, set the zone to mode: enforce and export again, or run
# this script with PolicyAuditMode=Disabled as its first argument.
set -eu
MODE="${1:-PolicyAuditMode=Enabled}"
audit() {  # namespace, label selector
  kubectl get pods -n "$1" -l "$2" \\
    -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName}{"\\n"}{end}' |
  while read -r pod node; do
    id=$(kubectl get ciliumendpoint -n "$1" "$pod" -o jsonpath='{.status.id}')
    agent=$(kubectl -n kube-system get pods -l k8s-app=cilium \\
      --field-selector "spec.nodeName=$node" -o name)
    kubectl -n kube-system exec "$agent" -- cilium-dbg endpoint config "$id" "$MODE"
  done
}
"""


def _audit_lines(zone: str, selector: dict[str, Any], warnings: list[str]) -> str:
    """The script's calls for one monitor zone's selector: one per namespace."""
    labels = dict(selector.get("matchLabels") or {})
    exprs = list(selector.get("matchExpressions") or [])
    namespaces = [labels.pop(NS_KEY)] if NS_KEY in labels else []
    for e in list(exprs):
        if e["key"] == NS_KEY and e["operator"] == "In":
            namespaces = list(e["values"])
            exprs.remove(e)
    if not namespaces or any(
        k.startswith(NS_LABELS) for k in [*labels, *(e["key"] for e in exprs)]
    ):
        warnings.append(
            f"zone {zone}: its pods are chosen by namespace labels, which kubectl "
            "cannot select by: turn audit mode on for them by hand (the script "
            "skips them)"
        )
        return f"# zone {zone}: by hand (namespace labels)\n"
    parts = [f"{k}={v}" for k, v in sorted(labels.items())]
    for e in exprs:
        values = ",".join(e.get("values") or [])
        parts.append(
            {
                "In": f"{e['key']} in ({values})",
                "NotIn": f"{e['key']} notin ({values})",
                "Exists": e["key"],
                "DoesNotExist": f"!{e['key']}",
            }[e["operator"]]
        )
    text = ",".join(parts)
    return f"# zone {zone}\n" + "".join(
        f"audit {shlex.quote(ns)} {shlex.quote(text)}\n" for ns in sorted(namespaces)
    )
