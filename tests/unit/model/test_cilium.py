"""Cilium import and export against hand-checked truth tables (docs/model.md "Cilium")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from detector.model import CompiledModel, compile_model, model_from_data
from detector.model.formats import ExportProblem, ImportProblem
from detector.model.formats.cilium import export_cilium, import_cilium
from detector.model.load import dump_yaml_all

from .conftest import compiled, flow
from .test_imports import pod


def cnp(name: str, spec: dict[str, Any], ns: str | None = None, **meta: Any) -> dict[str, Any]:
    kind = "CiliumNetworkPolicy" if ns else "CiliumClusterwideNetworkPolicy"
    metadata = {"name": name, **({"namespace": ns} if ns else {}), **meta}
    return {"apiVersion": "cilium.io/v2", "kind": kind, "metadata": metadata, "spec": spec}


def imported(docs: list[dict[str, Any]], tmp_path: Path, **options: Any) -> CompiledModel:
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    model, _ = import_cilium([str(path)], "t", **options)
    return compile_model(model)


def ports(*numbers: str, proto: str = "TCP") -> list[dict[str, Any]]:
    return [{"ports": [{"port": n, "protocol": proto} for n in numbers]}]


POLICIES = [
    cnp("db", {"endpointSelector": {"matchLabels": {"app": "db"}},
               "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "api"}}],
                            "toPorts": ports("5432")}]}, "shop"),
    cnp("api", {"endpointSelector": {"matchLabels": {"app": "api"}}, "egress": [
        {"toEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "payments",
                                          "app": "gw"}}], "toPorts": ports("443")},
        {"toEndpoints": [{"matchLabels": {"app": "db"}}], "toPorts": ports("5432")},
        {"toEntities": ["world"], "toPorts": ports("443")},
        {"toCIDRSet": [{"cidr": "10.50.0.0/16", "except": ["10.50.1.0/24"]}],
         "toPorts": ports("22")},
        {"toEntities": ["kube-apiserver"], "toPorts": ports("6443")},
        {"toPorts": ports("53", proto="ANY")},
    ]}, "shop"),
    cnp("ops", {"endpointSelector": {"matchLabels": {"io.cilium.k8s.namespace.labels.team": "ops"}},
                "ingress": [{"fromEntities": ["cluster"], "toPorts": ports("9090")}],
                "ingressDeny": [{"fromEndpoints": [{"matchLabels": {"app": "bad"}}]}]}),
    cnp("vault", {"endpointSelector": {}, "ingress": [{}]}, "vault"),
    cnp("lab", {"endpointSelector": {"matchLabels": {"app": "x"}},
                "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "y"}}]}],
                "enableDefaultDeny": {"ingress": False}}, "lab"),
    cnp("site", {"endpointSelector": {"matchLabels": {"app": "site"}},
                 "ingress": [{"toPorts": [{"ports": [{"port": "8000", "endPort": 8100,
                                                      "protocol": "TCP"}]}]}]}, "web"),
]  # fmt: skip

API, DB, WEB = pod("shop", app="api"), pod("shop", app="db"), pod("shop", app="web")
GW, OTHER_API = pod("payments", app="gw"), pod("elsewhere", app="api")
OPS, BAD = pod("ops", app="prom"), pod("elsewhere", app="bad")
VAULT, SITE = pod("vault", app="secrets"), pod("web", app="site")
LAB_X, LAB_Z = pod("lab", app="x"), pod("lab", app="z")

TRUTH = [
    # a namespaced policy's peers are pods of its own namespace
    (API, DB, 5432, "tcp", True),
    (OTHER_API, DB, 5432, "tcp", False),
    (WEB, DB, 5432, "tcp", False),
    (API, DB, 5433, "tcp", False),
    # ... unless the selector names the namespace (with its k8s: prefix)
    (API, GW, 443, "tcp", True),
    (API, GW, 80, "tcp", False),
    # world: any address outside the cluster; CIDRSet with except
    (API, "8.8.8.8", 443, "tcp", True),
    (API, "8.8.8.8", 80, "tcp", False),
    (API, "10.50.2.5", 22, "tcp", True),
    (API, "10.50.1.5", 22, "tcp", False),
    # kube-apiserver: the addresses given on import
    (API, "10.0.0.1", 6443, "tcp", True),
    # ports without a peer: every peer; ANY is TCP and UDP
    (API, WEB, 53, "udp", True),
    (API, WEB, 53, "tcp", True),
    (API, WEB, 80, "tcp", False),
    # a clusterwide policy by namespace labels; cluster entity; deny wins
    (WEB, OPS, 9090, "tcp", True),
    (BAD, OPS, 9090, "tcp", False),
    ("8.8.8.8", OPS, 9090, "tcp", False),
    # the empty rule: default deny, nothing allowed; egress stays open
    (WEB, VAULT, 443, "tcp", False),
    (VAULT, WEB, 443, "tcp", True),
    # enableDefaultDeny false: the rules add, nothing is denied
    (LAB_Z, LAB_X, 22, "tcp", True),
    # ranges, from anyone (the Internet too)
    ("198.51.100.9", SITE, 8050, "tcp", True),
    ("198.51.100.9", SITE, 8101, "tcp", False),
    # pods no policy selects are not isolated
    (WEB, LAB_Z, 22, "tcp", True),
]


@pytest.mark.parametrize(("src", "dst", "port", "proto", "want"), TRUTH)
def test_cilium_truth_table(
    src: Any, dst: Any, port: int, proto: str, want: bool, tmp_path: Path
) -> None:
    model = imported(POLICIES, tmp_path, apiserver=["10.0.0.1/32"])
    placement = model.place(flow(src, dst, port, proto=proto, sport=None))
    assert (placement.verdict == "allowed") == want, placement


def test_cilium_places_every_pod_of_the_cluster(tmp_path: Path) -> None:
    model = imported(POLICIES, tmp_path, apiserver=["10.0.0.1/32"])
    for who in (WEB, LAB_Z, pod("nobody-mentions-me", app="q")):
        placement = model.place(flow(API, who, 80, sport=None))
        assert placement.destination_zone is not None, who
        assert placement.verdict != "unmanaged"
    assert model.place(flow(API, pod("nobody-mentions-me"), 80)).destination_zone == "cluster"


def test_kube_apiserver_without_its_addresses_is_left_out_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump_all(POLICIES))
    model, warnings = import_cilium([str(path)])
    assert any("kube-apiserver" in w and "--apiserver" in w for w in warnings)
    assert "kube-apiserver" not in {z.name for z in model.document.zones}


@pytest.mark.parametrize(
    ("rule", "where", "why"),
    [
        ({"toPorts": [{"ports": [{"port": "80"}], "rules": {"http": [{"method": "GET"}]}}]},
         "egress[0].toPorts[0].rules", "L7"),
        ({"toFQDNs": [{"matchName": "example.com"}]}, "egress[0].toFQDNs", "FQDN"),
        ({"icmps": [{"fields": [{"type": 8}]}]}, "egress[0].icmps", "ICMP type"),
        ({"toRequires": [{"matchLabels": {"a": "b"}}]}, "egress[0].toRequires", "requirements"),
        ({"toPorts": ports("9", proto="SCTP")}, "egress[0].toPorts[0].ports[0]", "SCTP"),
        ({"toEndpoints": [{"matchLabels": {"reserved:host": ""}}]}, "toEndpoints[0]", "entity"),
        ({"toPorts": ports("grpc-web")}, "ports[0]", "named port"),
    ],
)  # fmt: skip
def test_cilium_refuses_what_it_cannot_express_with_where(
    rule: dict[str, Any], where: str, why: str, tmp_path: Path
) -> None:
    doc = cnp("p", {"endpointSelector": {}, "egress": [rule]}, "shop")
    with pytest.raises(ImportProblem) as info:
        imported([doc], tmp_path)
    assert "CiliumNetworkPolicy shop/p" in str(info.value)
    assert where in str(info.value) and why in str(info.value)


def test_cilium_refuses_host_policies_and_other_kinds(tmp_path: Path) -> None:
    with pytest.raises(ImportProblem, match="nodeSelector"):
        imported([cnp("h", {"nodeSelector": {}, "ingress": [{}]})], tmp_path)
    with pytest.raises(ImportProblem, match=r"is not a cilium\.io/v2"):
        imported([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}], tmp_path)


MODEL = """\
apiVersion: segwatch/v1
metadata: {name: shop}
defaults: {dns: {zone: dns}}
zones:
  - {name: web, kubernetes: [{namespaces: [shop], podSelector: {matchLabels: {app: web}}}]}
  - {name: db, kubernetes: [{namespaces: [shop], podSelector: {matchLabels: {app: db}}}]}
  - {name: batch, mode: monitor,
     kubernetes: [{namespaces: [jobs], podSelector: {matchLabels: {app: batch}}}]}
  - {name: dns, kubernetes: [{namespaces: [kube-system],
                              podSelector: {matchLabels: {k8s-app: kube-dns}}}]}
  - {name: office, cidrs: [10.30.0.0/16]}
flows:
  - {id: web-db, from: web, to: db, protocol: tcp, ports: [5432]}
  - {id: office-web, from: office, to: web, protocol: tcp, ports: ["8000-8100"]}
  - {id: batch-db, from: batch, to: db, protocol: tcp, ports: [5432]}
  - {id: web-out, from: web, to: internet, protocol: tcp, ports: [443]}
"""


def by_zone(files: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["annotations"]["segwatch/zone"]: p for name, docs in files.items()
            if name.endswith(".yaml") for p in docs}  # fmt: skip


def test_export_writes_a_clusterwide_policy_per_zone_that_keeps_default_deny() -> None:
    files, warnings = export_cilium(compiled(MODEL))
    policies = by_zone(files)
    db = policies["db"]["spec"]
    assert db["endpointSelector"] == {
        "matchLabels": {"app": "db", "io.kubernetes.pod.namespace": "shop"}
    }
    own = {"matchLabels": {"app": "db", "io.kubernetes.pod.namespace": "shop"}}
    assert db["egress"] == [
        {"toEndpoints": [own]},  # intra-zone allow (the default)
        {"toEndpoints": [{"matchLabels": {"io.kubernetes.pod.namespace": "kube-system",
                                          "k8s-app": "kube-dns"}}],
         "toPorts": [{"ports": [{"port": "53", "protocol": "TCP"},
                                {"port": "53", "protocol": "UDP"}]}]},
    ]  # fmt: skip
    office = [r for r in policies["web"]["spec"]["ingress"] if "fromCIDRSet" in r]
    assert office == [{"fromCIDRSet": [{"cidr": "10.30.0.0/16"}], "toPorts": [
        {"ports": [{"port": "8000", "endPort": 8100, "protocol": "TCP"}]}]}]  # fmt: skip
    assert "dns" not in policies  # kube-system is left alone unless asked
    assert any("zone dns: not isolated in kube-system" in w for w in warnings)
    assert any("zone office: an address zone is only a peer" in w for w in warnings)


def test_a_direction_with_nothing_to_allow_gets_the_empty_rule() -> None:
    text = MODEL.replace("defaults: {dns: {zone: dns}}", "defaults: {intra_zone: deny}")
    spec = by_zone(export_cilium(compiled(text))[0])["db"]["spec"]
    assert spec["egress"][-1]["toEndpoints"][0]["matchLabels"]["k8s-app"] == "kube-dns"
    text = text.replace("  - {id: web-db, from: web, to: db, protocol: tcp, ports: [5432]}\n", "")
    text = text.replace(
        "  - {id: batch-db, from: batch, to: db, protocol: tcp, ports: [5432]}\n", ""
    )
    spec = by_zone(export_cilium(compiled(text))[0])["db"]["spec"]
    assert spec["ingress"] == [{}]  # default deny, nothing allowed


def test_isolate_system_isolates_the_dns_zone_and_keeps_its_upstreams() -> None:
    files, warnings = export_cilium(compiled(MODEL), isolate_system=True)
    assert any("the DNS zone is isolated" in w for w in warnings)
    dns = by_zone(files)["dns"]["spec"]
    upstream = [r for r in dns["egress"] if "toEntities" in r]
    assert upstream[0]["toEntities"] == ["kube-apiserver", "world"]
    assert {p["port"] for p in upstream[0]["toPorts"][0]["ports"]} == {"53", "443", "6443"}


def test_monitor_zones_go_to_audit_mode_and_come_back_as_monitor(tmp_path: Path) -> None:
    files, warnings = export_cilium(compiled(MODEL))
    assert [p["metadata"]["name"] for p in files["monitor-zones.yaml"]] == ["segwatch-batch"]
    assert "audit jobs app=batch\n" in files["enable-audit-mode.sh"]
    assert "PolicyAuditMode=Enabled" in files["enable-audit-mode.sh"]
    assert any("enable-audit-mode.sh" in w for w in warnings)
    paths = []
    for name in ("cilium-network-policies.yaml", "monitor-zones.yaml"):
        (tmp_path / name).write_text(dump_yaml_all(files[name]))
        paths.append(str(tmp_path / name))
    model, _ = import_cilium(paths)
    modes = {z.name: z.mode for z in model.document.zones}
    assert modes["jobs.app-batch"] == "monitor"
    assert modes["shop.app-db"] == "enforce"


def test_a_model_without_pod_zones_cannot_be_exported() -> None:
    text = """\
apiVersion: segwatch/v1
metadata: {name: vpc}
zones: [{name: a, cidrs: [10.1.0.0/16]}, {name: b, cidrs: [10.2.0.0/16]}]
flows: [{id: ab, from: a, to: b, protocol: tcp, ports: [22]}]
"""
    with pytest.raises(ExportProblem, match="cilium"):
        export_cilium(compile_model(model_from_data(yaml.safe_load(text))))
