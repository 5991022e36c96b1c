"""Property: a flow gets the same allow/deny answer from a model and from
``import(export(model))``, for each format, over generated models and flows.

Generated models stay within what each format can express (README "Import
and export"): Kubernetes and Calico govern pods (address zones are peers
only), security groups govern address zones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.model import CompiledModel, compile_model, model_from_data
from detector.model.formats import EXPORTERS, IMPORTERS
from detector.model.load import dump_yaml_all

from .conftest import flow

PORTS = [22, 53, 80, 443, 5432, "8000-8100"]
PROBE_PORTS = [1, 22, 53, 80, 443, 5432, 7999, 8000, 8050, 8100, 8101]
PODS = [(ns, app) for ns in ("a", "b") for app in ("x", "y", "z")]
PUBLIC = "203.0.113.200"


@st.composite
def models(draw: Any, kind: str) -> dict[str, Any]:
    if kind == "pods":
        chosen = draw(st.lists(st.sampled_from(PODS), min_size=2, max_size=4, unique=True))
        zones = [
            {
                "name": f"{ns}-{app}",
                "kubernetes": [{"namespaces": [ns], "podSelector": {"matchLabels": {"app": app}}}],
            }
            for ns, app in chosen
        ]
        n_nets = draw(st.integers(0, 2))
        zones += [{"name": f"net{i}", "cidrs": [f"10.{i + 1}.0.0/16"]} for i in range(n_nets)]
    else:
        n = draw(st.integers(2, 4))
        zones = [{"name": f"z{i}", "cidrs": [f"10.{i + 1}.0.0/16"]} for i in range(n)]
    names = [z["name"] for z in zones]
    pods = [z["name"] for z in zones if "kubernetes" in z] or names
    endpoints = [*names, "internet"]
    flows = []
    for i in range(draw(st.integers(0, 6))):
        src = draw(st.sampled_from(endpoints))
        # every flow must touch what the format governs
        dst = draw(st.sampled_from(pods if src not in pods else endpoints))
        if src == dst == "internet":
            continue
        proto = draw(st.sampled_from(["tcp", "udp", "any"]))
        item: dict[str, Any] = {"id": f"f{i}", "from": src, "to": dst, "protocol": proto}
        if proto != "any":
            item["ports"] = draw(st.lists(st.sampled_from(PORTS), max_size=2, unique=True))
        flows.append(item)
    defaults: dict[str, Any] = {"intra_zone": draw(st.sampled_from(["allow", "deny"]))}
    if draw(st.booleans()):
        defaults["dns"] = {"zone": draw(st.sampled_from(pods))}
    return {
        "apiVersion": "segwatch/v1",
        "metadata": {"name": "gen"},
        "defaults": defaults,
        "zones": zones,
        "flows": flows,
    }


def endpoint_of(zone: dict[str, Any]) -> Any:
    if "kubernetes" in zone:
        sel = zone["kubernetes"][0]
        return {
            "namespace": sel["namespaces"][0],
            "labels": sel["podSelector"]["matchLabels"],
            "namespace_labels": {"kubernetes.io/metadata.name": sel["namespaces"][0]},
        }
    return zone["cidrs"][0].replace(".0.0/16", ".7.9")


def round_trip(fmt: str, model: CompiledModel, tmp: Path, **options: Any) -> CompiledModel:
    files, _ = EXPORTERS[fmt](model, **options)
    paths = []
    for name, content in files.items():
        if not name.endswith((".yaml", ".json")):
            continue  # a script (Cilium's audit mode), not policies
        path = tmp / name
        path.write_text(json.dumps(content) if name.endswith(".json") else dump_yaml_all(content))
        paths.append(str(path))
    imported, _ = IMPORTERS[fmt](paths, "rt")
    return compile_model(imported)


def check(fmt: str, data: dict[str, Any], tmp: Path) -> None:
    original = compile_model(model_from_data(data))
    again = round_trip(fmt, original, tmp)
    ends = [endpoint_of(z) for z in data["zones"]] + [PUBLIC]
    pods_only = fmt in ("k8s", "calico", "cilium")
    for src in ends:
        for dst in ends:
            if src == dst == PUBLIC:
                continue
            if pods_only and isinstance(src, str) and isinstance(dst, str):
                continue  # between two addresses: not the policies' business
            for proto in ("tcp", "udp"):
                for port in PROBE_PORTS:
                    event = flow(src, dst, port, proto=proto, sport=None)
                    want = original.place(event).verdict == "allowed"
                    got = again.place(event).verdict == "allowed"
                    assert want == got, (
                        f"{fmt}: {src} -> {dst} {proto}/{port}: model says "
                        f"{original.place(event)}, round trip says {again.place(event)}\n"
                        f"model: {json.dumps(data)}"
                    )


_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_SETTINGS
@given(data=models("pods"))
def test_kubernetes_round_trip_keeps_every_answer(data: dict[str, Any], tmp_path: Path) -> None:
    check("k8s", data, tmp_path)


@_SETTINGS
@given(data=models("pods"))
def test_calico_round_trip_keeps_every_answer(data: dict[str, Any], tmp_path: Path) -> None:
    check("calico", data, tmp_path)


@_SETTINGS
@given(data=models("pods"))
def test_cilium_round_trip_keeps_every_answer(data: dict[str, Any], tmp_path: Path) -> None:
    check("cilium", data, tmp_path)


@_SETTINGS
@given(data=models("nets"))
def test_security_group_round_trip_keeps_every_answer(data: dict[str, Any], tmp_path: Path) -> None:
    check("aws-sg", data, tmp_path)


def test_round_trips_of_the_examples_allow_and_deny_alike(tmp_path: Path) -> None:
    from .conftest import FRONTEND_LIKE, MODELS, example

    cases = [
        ("k8s", "kubernetes_dns.yaml"),
        ("calico", "kubernetes_dns.yaml"),
        ("k8s", "multi_tenant_saas.yaml"),
        ("calico", "multi_tenant_saas.yaml"),
        ("cilium", "kubernetes_dns.yaml"),
        ("cilium", "multi_tenant_saas.yaml"),
        ("aws-sg", "three_tier_vpc.yaml"),
        ("aws-sg", "healthcare_hipaa.yaml"),
    ]
    for fmt, name in cases:
        original = example(name)
        # kube-dns lives in kube-system, which the export isolates only when asked
        again = round_trip(
            fmt,
            original,
            tmp_path,
            **({"isolate_system": True} if fmt in ("k8s", "cilium") else {}),
        )
        answers = []
        for src, dst, port, proto in FRONTEND_LIKE[name]:
            event = flow(src, dst, port, proto=proto, sport=None)
            want = original.place(event).verdict == "allowed"
            assert want == (again.place(event).verdict == "allowed"), (fmt, name, src, dst, port)
            answers.append(want)
        assert True in answers and False in answers, (fmt, name)
    assert MODELS.is_dir()
