"""What the Kubernetes export writes beyond the model's flows, so that applying it does
not break the cluster: system namespaces left alone unless asked, DNS kept working."""

from __future__ import annotations

from typing import Any

from detector.model import compile_model, model_from_data
from detector.model.formats.k8s import KUBE_DNS, export_k8s

from .conftest import example


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
