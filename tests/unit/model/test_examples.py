"""Every example model in detector/assets/models: valid, lint-clean, and saying what it claims."""

from __future__ import annotations

from typing import Any

import pytest

from detector.model.lint import lint

from .conftest import MODELS, example, flow

ALL = sorted(p.name for p in MODELS.glob("*.yaml"))


def test_the_design_scenarios_are_all_there() -> None:
    assert set(ALL) >= {
        "three_tier_vpc.yaml", "healthcare_hipaa.yaml", "financial_pci.yaml",
        "multi_tenant_saas.yaml", "tiers.yaml", "kubernetes_dns.yaml",
    }  # fmt: skip


@pytest.mark.parametrize("name", ALL)
def test_example_is_lint_clean(name: str) -> None:
    bad = [f for f in lint(example(name)) if f.severity != "info"]
    assert not bad, f"{name}: " + "; ".join(map(str, bad))


ACME = {"namespace": "tenant-acme", "labels": {"app": "web"}}
GLOBEX = {"namespace": "tenant-globex", "labels": {}}
ADMIN = {"namespace": "ops-admin", "labels": {"app": "support-shell"}}
ADMIN_OTHER = {"namespace": "ops-admin", "labels": {"app": "grafana"}}
KUBE_DNS = {"namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}}
FRONTEND = {"namespace": "shop", "labels": {"app": "frontend"}, "ip": "10.244.1.5"}
CART = {"namespace": "shop", "labels": {"app": "cart"}, "ip": "10.244.2.7"}

# (model, description, event, verdict, zones)
CLAIMS: list[tuple[str, str, dict[str, Any], str]] = [
    ("three_tier_vpc.yaml", "Internet -> DMZ 443", flow("203.0.113.9", "10.0.1.10", 443), "allowed"),
    ("three_tier_vpc.yaml", "DMZ -> App 8080", flow("10.0.1.10", "10.0.2.20", 8080), "allowed"),
    ("three_tier_vpc.yaml", "App's reply to DMZ", flow("10.0.2.20", "10.0.1.10", 40000, sport=8080), "allowed"),
    ("three_tier_vpc.yaml", "App -> DB 5432", flow("10.0.2.20", "10.0.3.30", 5432), "allowed"),
    ("three_tier_vpc.yaml", "DMZ -> DB skips a tier", flow("10.0.1.10", "10.0.3.30", 5432), "violation"),
    ("three_tier_vpc.yaml", "Internet -> App, denied", flow("203.0.113.9", "10.0.2.20", 8080, denied=True), "blocked_attempt"),
    ("three_tier_vpc.yaml", "DB -> Internet", flow("10.0.3.30", "198.51.100.1", 443), "violation"),
    ("three_tier_vpc.yaml", "App -> DB denied by a broken SG", flow("10.0.2.20", "10.0.3.30", 5432, denied=True), "over_restrictive"),
    ("three_tier_vpc.yaml", "unknown private host", flow("10.99.0.1", "10.0.3.30", 5432), "unmanaged"),
    ("three_tier_vpc.yaml", "App -> DNS 53/udp", flow("10.0.2.20", "10.0.0.2", 53, proto="udp"), "allowed"),
    ("healthcare_hipaa.yaml", "PHI -> Internet", flow("10.20.4.5", "203.0.113.80", 443), "violation"),
    ("healthcare_hipaa.yaml", "public web -> PHI", flow("10.20.1.5", "10.20.4.5", 5432), "violation"),
    ("healthcare_hipaa.yaml", "public web -> PHI, blocked", flow("10.20.1.5", "10.20.4.5", 5432, denied=True), "blocked_attempt"),
    ("healthcare_hipaa.yaml", "doctor -> EHR", flow("10.30.7.7", "10.20.3.3", 443), "allowed"),
    ("healthcare_hipaa.yaml", "doctor -> PHI directly", flow("10.30.7.7", "10.20.4.5", 5432), "violation"),
    ("healthcare_hipaa.yaml", "EHR -> PHI", flow("10.20.3.3", "10.20.4.5", 9200), "allowed"),
    ("financial_pci.yaml", "app servers -> CDE", flow("10.40.3.3", "10.40.2.2", 5432), "violation"),
    ("financial_pci.yaml", "app servers -> gateway by token", flow("10.40.3.3", "10.40.1.1", 8443), "allowed"),
    ("financial_pci.yaml", "gateway -> CDE", flow("10.40.1.1", "10.40.2.2", 5432), "allowed"),
    ("financial_pci.yaml", "CDE -> Internet", flow("10.40.2.2", "203.0.113.50", 443), "violation"),
    ("financial_pci.yaml", "gateway -> processor", flow("10.40.1.1", "198.51.100.5", 443), "allowed"),
    ("multi_tenant_saas.yaml", "tenant acme -> tenant globex", flow(ACME, GLOBEX, 8080), "violation"),
    ("multi_tenant_saas.yaml", "tenant globex -> acme, blocked", flow(GLOBEX, ACME, 8080, denied=True), "blocked_attempt"),
    ("multi_tenant_saas.yaml", "admin console -> tenant", flow(ADMIN, ACME, 22), "allowed"),
    ("multi_tenant_saas.yaml", "other pod in the admin namespace", flow(ADMIN_OTHER, ACME, 22), "unmanaged"),
    ("multi_tenant_saas.yaml", "tenant -> kube-dns", flow(ACME, KUBE_DNS, 53, proto="udp"), "allowed"),
    ("multi_tenant_saas.yaml", "ingress (by address) -> tenant", flow("10.60.0.5", ACME, 8080), "allowed"),
    ("tiers.yaml", "Tier 0 -> Tier 1", flow("10.0.0.10", "10.1.4.4", 445), "allowed"),
    ("tiers.yaml", "Tier 1 -> Tier 0", flow("10.1.4.4", "10.0.0.10", 389), "allowed"),
    ("tiers.yaml", "Tier 2 -> Tier 1", flow("10.2.3.3", "10.1.4.4", 3389), "allowed"),
    ("tiers.yaml", "Tier 1 -> Tier 2 (one way)", flow("10.1.4.4", "10.2.3.3", 3389), "violation"),
    ("tiers.yaml", "Tier 1 -> Tier 2, blocked", flow("10.1.4.4", "10.2.3.3", 3389, denied=True), "blocked_attempt"),
    ("tiers.yaml", "Tier 0 -> Tier 2", flow("10.0.0.10", "10.2.3.3", 445), "violation"),
    ("tiers.yaml", "Tier 2 -> Tier 0", flow("10.2.3.3", "10.0.0.10", 88), "violation"),
    ("tiers.yaml", "Internet -> Tier 1 directly", flow("203.0.113.7", "10.1.4.4", 8443), "violation"),
    ("tiers.yaml", "Internet -> API gateway", flow("203.0.113.7", "10.9.0.5", 443), "allowed"),
    ("tiers.yaml", "API gateway -> Tier 1", flow("10.9.0.5", "10.1.4.4", 8443), "allowed"),
    ("tiers.yaml", "Tier 2 -> resolvers (nested in Tier 1)", flow("10.2.3.3", "10.1.0.53", 53, proto="udp"), "allowed"),
    ("kubernetes_dns.yaml", "frontend -> kube-dns 53/udp", flow(FRONTEND, KUBE_DNS, 53, proto="udp"), "allowed"),
    ("kubernetes_dns.yaml", "cart -> kube-dns 53/tcp", flow(CART, KUBE_DNS, 53), "allowed"),
    ("kubernetes_dns.yaml", "frontend -> kube-dns 80", flow(FRONTEND, KUBE_DNS, 80), "violation"),
    ("kubernetes_dns.yaml", "frontend -> cart", flow(FRONTEND, CART, 8080), "allowed"),
    ("kubernetes_dns.yaml", "cart -> frontend", flow(CART, FRONTEND, 8080), "violation"),
    ("kubernetes_dns.yaml", "unlabelled pod falls back to the pod CIDR", flow({"namespace": "misc", "ip": "10.244.3.3"}, CART, 8080), "violation"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "claim", "event", "verdict"), CLAIMS, ids=[c[1] for c in CLAIMS])
def test_example_model_says_what_it_claims(
    name: str, claim: str, event: dict[str, Any], verdict: str
) -> None:
    placement = example(name).place(event)
    assert placement.verdict == verdict, f"{name}: {claim}: {placement}"
