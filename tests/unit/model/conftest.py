"""Helpers for model tests: events built the way the parsers build them."""

from __future__ import annotations

from typing import Any

from detector.assets import MODELS
from detector.model import CompiledModel, compile_model, load_model, model_from_text

_PROTO = {"tcp": "6", "udp": "17", "icmp": "1"}


def endpoint(where: str | dict[str, Any], port: int | None) -> dict[str, Any]:
    """An address, or a Kubernetes workload given as {"namespace", "labels", "ip"}."""
    if isinstance(where, str):
        out: dict[str, Any] = {"ip": where}
    else:
        out = {"ip": where.get("ip", "10.244.9.9"), "kubernetes": {
            "namespace": where["namespace"], "labels": where.get("labels", {}),
            "namespace_labels": where.get("namespace_labels", {}),
        }}  # fmt: skip
    if port is not None:
        out["port"] = port
    return out


def flow(
    src: str | dict[str, Any],
    dst: str | dict[str, Any],
    dport: int | None = None,
    *,
    sport: int | None = 40000,
    proto: str = "tcp",
    denied: bool = False,
    at: str = "2026-11-25T10:00:00.000Z",
) -> dict[str, Any]:
    """A flow event as a parser would give it."""
    if proto == "icmp":
        sport = dport = None
    return {
        "@timestamp": at,
        "event": {"kind": "event", "type": ["connection", "denied" if denied else "allowed"],
                  "outcome": "failure" if denied else "success"},
        "source": endpoint(src, sport),
        "destination": endpoint(dst, dport),
        "network": {"iana_number": _PROTO[proto], "transport": proto},
    }  # fmt: skip


def example(name: str) -> CompiledModel:
    return compile_model(load_model(MODELS / name))


def compiled(text: str) -> CompiledModel:
    return compile_model(model_from_text(text, "test.yaml"))


HEAD = "apiVersion: segwatch/v1\nmetadata: {name: t}\n"


_SHOP = {"namespace": "shop", "namespace_labels": {"kubernetes.io/metadata.name": "shop"}}
_DNS = {
    "namespace": "kube-system",
    "labels": {"k8s-app": "kube-dns"},
    "namespace_labels": {"kubernetes.io/metadata.name": "kube-system"},
}
_ACME = {
    "namespace": "tenant-acme",
    "labels": {},
    "namespace_labels": {"kubernetes.io/metadata.name": "tenant-acme"},
}
_GLOBEX = {
    "namespace": "globex",
    "labels": {},
    "namespace_labels": {"tenant": "globex", "kubernetes.io/metadata.name": "globex"},
}
_ADMIN = {
    "namespace": "ops-admin",
    "labels": {"app": "admin-console"},
    "namespace_labels": {"kubernetes.io/metadata.name": "ops-admin"},
}
# (source, destination, port, protocol) probes per example model
FRONTEND_LIKE: dict[str, list[tuple[Any, Any, int, str]]] = {
    "kubernetes_dns.yaml": [
        (
            {**_SHOP, "labels": {"app": "frontend"}},
            {**_SHOP, "labels": {"app": "cart"}},
            8080,
            "tcp",
        ),
        (
            {**_SHOP, "labels": {"app": "cart"}},
            {**_SHOP, "labels": {"app": "frontend"}},
            8080,
            "tcp",
        ),
        ({**_SHOP, "labels": {"app": "frontend"}}, _DNS, 53, "udp"),
        ({**_SHOP, "labels": {"app": "frontend"}}, _DNS, 80, "tcp"),
        ("10.244.5.5", {**_SHOP, "labels": {"app": "cart"}}, 8080, "tcp"),
    ],
    "multi_tenant_saas.yaml": [
        (_ACME, _GLOBEX, 8080, "tcp"),
        (_ADMIN, _ACME, 22, "tcp"),
        (_ADMIN, _ACME, 23, "tcp"),
        ("10.60.0.5", _ACME, 8080, "tcp"),
        (_ACME, _DNS, 53, "udp"),
    ],
    "three_tier_vpc.yaml": [
        ("203.0.113.9", "10.0.1.10", 443, "tcp"),
        ("203.0.113.9", "10.0.2.10", 8080, "tcp"),
        ("10.0.1.10", "10.0.2.20", 8080, "tcp"),
        ("10.0.1.10", "10.0.3.30", 5432, "tcp"),
        ("10.0.2.20", "10.0.3.30", 5432, "tcp"),
        ("10.0.3.30", "203.0.113.9", 443, "tcp"),
    ],
    "healthcare_hipaa.yaml": [
        ("10.20.4.5", "203.0.113.80", 443, "tcp"),
        ("10.30.7.7", "10.20.3.3", 443, "tcp"),
        ("10.20.3.3", "10.20.4.5", 9200, "tcp"),
        ("10.20.1.5", "10.20.4.5", 5432, "tcp"),
    ],
}
