"""What the Kubernetes export writes beyond the model's flows, so that applying it does
not break the cluster: system namespaces left alone unless asked, DNS kept working."""

from __future__ import annotations

from typing import Any

from detector.model import compile_model, model_from_data
from detector.model.formats import IMPORTERS, ExportProblem
from detector.model.formats.calico import export_calico
from detector.model.formats.k8s import KUBE_DNS, export_k8s
from detector.model.load import dump_yaml_all

from .conftest import example, flow


def _policies(files: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for docs in files.values() for p in docs}


def test_system_namespaces_are_isolated_only_when_asked() -> None:
    model = example("kubernetes_dns.yaml")
    files, warnings = export_k8s(model)
    assert "kube-system.yaml" not in files
    assert any(w.startswith("zone kube-dns: not isolated in kube-system") for w in warnings)
    files, warnings = export_k8s(model, isolate_system=True)
    dns = _policies({"k": files["kube-system.yaml"]})["segwatch-kube-dns"]
    upstream = [r for r in dns["spec"]["egress"] if r["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}]]
    ports = {(p["protocol"], p["port"]) for r in upstream for p in r["ports"]}
    assert ports == {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 6443)}
    assert any("the DNS zone is isolated" in w for w in warnings)


def test_without_a_dns_zone_every_isolated_pod_still_reaches_kube_dns() -> None:
    data = {
        "apiVersion": "segwatch/v1",
        "metadata": {"name": "no-dns"},
        "zones": [
            {
                "name": name,
                "kubernetes": [
                    {"namespaces": ["shop"], "podSelector": {"matchLabels": {"app": name}}}
                ],
            }
            for name in ("web", "db")
        ],
        "flows": [{"from": "web", "to": "db", "ports": [5432]}],
    }
    files, warnings = export_k8s(compile_model(model_from_data(data)))
    for name in ("segwatch-web", "segwatch-db"):
        egress = _policies(files)[name]["spec"]["egress"]
        to_dns = [r for r in egress if r["to"] == [KUBE_DNS]]
        assert to_dns and {p["port"] for p in to_dns[0]["ports"]} == {53}, name
    assert any("declares no DNS zone" in w for w in warnings)


def _monitor_model() -> Any:
    data = {
        "apiVersion": "segwatch/v1",
        "metadata": {"name": "rollout"},
        "defaults": {"dns": {"zone": "dns"}},
        "zones": [
            {"name": name, "mode": mode,
             "kubernetes": [{"namespaces": [ns], "podSelector": {"matchLabels": {"app": name}}}]}
            for name, mode, ns in (("web", "enforce", "shop"), ("db", "monitor", "data"),
                                   ("dns", "enforce", "infra"))
        ],
        "flows": [{"id": "web-db", "owner": "x", "from": "web", "to": "db", "ports": [5432]}],
    }  # fmt: skip
    return compile_model(model_from_data(data))


def test_a_monitor_zone_is_staged_in_calico_and_comes_back_monitored(tmp_path: Any) -> None:
    model = _monitor_model()
    files, _ = export_calico(model)
    (policies,) = files.values()
    kinds = {p["metadata"]["annotations"]["segwatch/zone"]: p["kind"] for p in policies}
    assert kinds == {"web": "GlobalNetworkPolicy", "db": "StagedGlobalNetworkPolicy",
                     "dns": "GlobalNetworkPolicy"}  # fmt: skip
    assert all(
        p["spec"].get("stagedAction") == "Set" for p in policies if p["kind"].startswith("S")
    )
    path = tmp_path / "p.yaml"
    path.write_text(dump_yaml_all(policies))
    back, _ = IMPORTERS["calico"]([str(path)], "rt")
    modes = {z.name: z.mode for z in back.document.zones}
    assert modes["data.app-db"] == "monitor" and modes["shop.app-web"] == "enforce"
    again = compile_model(back)
    web, db = ({"namespace": ns, "labels": {"app": a}, "namespace_labels": {}}
               for ns, a in (("shop", "web"), ("data", "db")))  # fmt: skip
    for port, verdict in ((5432, "allowed"), (22, "violation")):
        assert model.place(flow(web, db, port, sport=None)).verdict == verdict
        assert again.place(flow(web, db, port, sport=None)).verdict == verdict


def test_kubernetes_has_no_audit_mode_so_a_monitor_zone_is_left_open_with_a_warning() -> None:
    files, warnings = export_k8s(_monitor_model())
    assert "data.yaml" not in files  # neither the zone's policy nor a default deny
    assert "segwatch-default-deny" in _policies({"k": files["shop.yaml"]})
    assert any("zone db is in monitor mode" in w and "no audit mode" in w for w in warnings)


def _nested(inner_labels: dict[str, str]) -> Any:
    return compile_model(model_from_data({
        "apiVersion": "segwatch/v1", "metadata": {"name": "n"},
        "zones": [
            {"name": "shop", "kubernetes": [{"namespaces": ["shop"]}]},
            {"name": "db", "kubernetes": [{"namespaces": ["shop"],
                                           "podSelector": {"matchLabels": inner_labels}}]},
            {"name": "office", "cidrs": ["10.30.0.0/16"]},
        ],
        "flows": [{"id": "shop-out", "from": "shop", "to": "internet", "protocol": "tcp",
                   "ports": [443]}],
    }))  # fmt: skip


def test_a_zone_around_a_more_specific_one_leaves_its_pods_out(tmp_path: Any) -> None:
    """The model puts db's pods in db, not shop: shop's policy and peers must not
    select them (a policy applies to every pod its selector matches)."""
    files, warnings = export_k8s(_nested({"app": "db"}))
    shop = _policies(files)["segwatch-shop"]["spec"]
    assert shop["podSelector"] == {
        "matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]
    }
    assert not any("also matches the pods" in w for w in warnings)
    calico = export_calico(_nested({"app": "db"}))[0]["global-network-policies.yaml"]
    selector = next(p for p in calico if p["metadata"]["name"] == "segwatch-shop")
    assert "app not in {'db'}" in selector["spec"]["selector"]
    path = tmp_path / "k8s.yaml"
    path.write_text(dump_yaml_all([p for docs in files.values() for p in docs]))
    again = compile_model(IMPORTERS["k8s"]([str(path)], "rt")[0])
    db_pod = {"namespace": "shop", "labels": {"app": "db"},
              "namespace_labels": {"kubernetes.io/metadata.name": "shop"}}  # fmt: skip
    web_pod = {**db_pod, "labels": {"app": "web"}}
    assert again.place(flow(web_pod, "203.0.113.9", 443, sport=None)).verdict == "allowed"
    assert again.place(flow(db_pod, "203.0.113.9", 443, sport=None)).verdict != "allowed"


def test_an_overlap_no_selector_can_leave_out_is_warned_with_zones_and_flows() -> None:
    _, warnings = export_k8s(_nested({"app": "db", "tier": "data"}))
    assert any(w.startswith("zone shop: its selector also matches the pods of zone db")
               and "(shop-out)" in w for w in warnings)  # fmt: skip
    assert any(w.startswith("zone office: an address zone is only a peer") for w in warnings)


def test_kubernetes_exports_of_every_example_are_valid_objects() -> None:
    """What `model export --to k8s` writes passes the Kubernetes OpenAPI schema."""
    import kubernetes_validate

    from .conftest import MODELS

    version = kubernetes_validate.latest_version()
    checked = 0
    for path in sorted(MODELS.glob("*.yaml")):
        try:
            files, _ = export_k8s(example(path.name), isolate_system=True)
        except ExportProblem:  # a CIDR-only model: refused with the reason
            continue
        for docs in files.values():
            for policy in docs:
                kubernetes_validate.validate(policy, version, strict=True)
                checked += 1
    assert checked > 5
