"""Property: a flow gets the same allow/deny answer from a model and from
``import(export(model))``, for each format, over generated models and flows, or the
export warned about a zone the difference is in (a target that cannot express it).

Generated models: pod zones by labels and namespace, a namespace-wide zone around
them, address zones, a nested address zone, monitor zones, DNS, intra-zone defaults,
Internet flows, ports, ranges and ICMP. An export that refuses (the target can
enforce none of the model) must say why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.model import CompiledModel, compile_model, model_from_data
from detector.model.formats import EXPORTERS, IMPORTERS, ExportProblem
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
        if draw(st.booleans()):  # a namespace-wide zone around the pod zones of "a"
            zones.append({"name": "a-all", "kubernetes": [{"namespaces": ["a"]}]})
        n_nets = draw(st.integers(0, 2))
        zones += [{"name": f"net{i}", "cidrs": [f"10.{i + 1}.0.0/16"]} for i in range(n_nets)]
    else:
        n = draw(st.integers(2, 4))
        zones = [{"name": f"z{i}", "cidrs": [f"10.{i + 1}.0.0/16"]} for i in range(n)]
    if draw(st.booleans()):  # nesting: a /24 inside the first address zone
        first = next((z for z in zones if "cidrs" in z), None)
        if first is not None:
            inner = first["cidrs"][0].replace(".0.0/16", ".5.0/24")
            zones.append({"name": "inner", "cidrs": [inner], "within": first["name"]})
    for zone in zones:
        if draw(st.integers(0, 4)) == 0:
            zone["mode"] = "monitor"
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
        proto = draw(st.sampled_from(["tcp", "udp", "any", "icmp"]))
        item: dict[str, Any] = {"id": f"f{i}", "from": src, "to": dst, "protocol": proto}
        if proto in ("tcp", "udp"):
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
        labels = sel["podSelector"]["matchLabels"] if "podSelector" in sel else {"app": "other"}
        return {
            "namespace": sel["namespaces"][0],
            "labels": labels,
            "namespace_labels": {"kubernetes.io/metadata.name": sel["namespaces"][0]},
        }
    return zone["cidrs"][0].replace(".0.0/16", ".7.9").replace(".5.0/24", ".5.9")


def round_trip(
    fmt: str, model: CompiledModel, tmp: Path, warnings: list[str] | None = None, **options: Any
) -> CompiledModel:
    files, said = EXPORTERS[fmt](model, **options)
    if warnings is not None:
        warnings += said
    paths = []
    for name, content in files.items():
        if not name.endswith((".yaml", ".json")):
            continue  # a script (Cilium's audit mode), not policies
        path = tmp / name
        path.write_text(json.dumps(content) if name.endswith(".json") else dump_yaml_all(content))
        paths.append(str(path))
    imported, _ = IMPORTERS[fmt](paths, "rt")
    return compile_model(imported)


def warned(warnings: list[str], *zones: str | None) -> bool:
    """Does a warning of the export name one of these zones (``zone NAME``)?"""
    return any(f"zone {z}:" in w or f"zone {z} " in w for w in warnings for z in zones if z)


def check(fmt: str, data: dict[str, Any], tmp: Path) -> None:
    """Every probe gets the model's answer from the round trip, or the export warned
    about the zone the difference is in."""
    original = compile_model(model_from_data(data))
    warnings: list[str] = []
    try:
        again = round_trip(fmt, original, tmp, warnings)
    except ExportProblem as exc:  # the target can enforce none of it, and says why
        assert "cannot export to" in str(exc)
        return
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
                    model_says = original.place(event)
                    want = model_says.verdict == "allowed"
                    got = again.place(event).verdict == "allowed"
                    if want == got:
                        continue
                    assert warned(warnings, model_says.source_zone, model_says.destination_zone), (
                        f"{fmt}: {src} -> {dst} {proto}/{port}: model says "
                        f"{model_says}, round trip says {again.place(event)}, and the export "
                        f"warned only: {warnings}\nmodel: {json.dumps(data)}"
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
