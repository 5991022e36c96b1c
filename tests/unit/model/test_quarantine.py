"""Containment: the quarantine policies of each target, read back with segwatch's own
importers (the target's semantics), must leave the workload DNS and the forensics zone
and nothing else, and must win over the policies already applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from typer.testing import CliRunner

from detector.model import CompiledModel, compile_model
from detector.model.formats import EXPORTERS, IMPORTERS
from detector.model.load import dump_yaml_all
from detector.model.quarantine import QuarantineProblem, Workload, quarantine, suggestion
from streams.cli import app

from .conftest import MODELS, example, flow

K8S_MODEL = example("kubernetes_dns.yaml")
FORENSICS = {"name": "forensics",
             "kubernetes": [{"namespaces": ["ir"], "podSelector": {"matchLabels": {"app": "collector"}}}]}  # fmt: skip
QUARANTINED = {"namespace": "shop", "labels": {"segwatch/quarantine": "web-7f9"},
               "namespace_labels": {"kubernetes.io/metadata.name": "shop"}}  # fmt: skip
STILL_LABELLED = {**QUARANTINED, "labels": {"app": "frontend", "segwatch/quarantine": "web-7f9"}}
FRONTEND = {"namespace": "shop", "labels": {"app": "frontend"},
            "namespace_labels": {"kubernetes.io/metadata.name": "shop"}}  # fmt: skip
CART = {**FRONTEND, "labels": {"app": "cart"}}
KUBE_DNS = {"namespace": "kube-system", "labels": {"k8s-app": "kube-dns"},
            "namespace_labels": {"kubernetes.io/metadata.name": "kube-system"}}  # fmt: skip
COLLECTOR = {"namespace": "ir", "labels": {"app": "collector"},
             "namespace_labels": {"kubernetes.io/metadata.name": "ir"}}  # fmt: skip


def with_forensics() -> CompiledModel:
    import yaml

    from detector.model import model_from_data

    data = yaml.safe_load(K8S_MODEL.model.to_yaml())
    data["zones"].append(FORENSICS)
    return compile_model(model_from_data(data))


def read_back(target: str, files: dict[str, Any], tmp: Path, *extra: dict[str, Any]) -> Any:
    paths = []
    for i, batch in enumerate([files, *extra]):
        for name, content in batch.items():
            if name.endswith(".yaml") or name == "quarantine.json":
                path = tmp / f"{i}-{name}"
                text = json.dumps(content) if name.endswith(".json") else dump_yaml_all(content)
                path.write_text(text)
                paths.append(str(path))
    return compile_model(IMPORTERS[target](paths, "back")[0])


def allowed(model: Any, src: Any, dst: Any, port: int, proto: str = "tcp") -> bool:
    return model.place(flow(src, dst, port, proto=proto, sport=None)).verdict == "allowed"


@pytest.mark.parametrize("target", ["k8s", "calico", "cilium"])
def test_a_quarantined_pod_keeps_dns_and_forensics_and_nothing_else(
    target: str, tmp_path: Path
) -> None:
    done = quarantine(with_forensics(), target, workload=Workload.parse("shop/web-7f9"),
                      forensics="forensics")  # fmt: skip
    assert {"apply.sh", "undo.sh"} <= set(done.files)
    back = read_back(target, done.files, tmp_path)
    assert allowed(back, QUARANTINED, KUBE_DNS, 53, "udp")
    assert allowed(back, QUARANTINED, KUBE_DNS, 53)
    assert not allowed(back, QUARANTINED, KUBE_DNS, 80)
    assert not allowed(back, QUARANTINED, CART, 8080)
    assert not allowed(back, QUARANTINED, "203.0.113.9", 443)
    assert not allowed(back, FRONTEND, QUARANTINED, 8080)
    assert allowed(back, COLLECTOR, QUARANTINED, 22)
    assert allowed(back, QUARANTINED, COLLECTOR, 9000)
    if target == "k8s":
        for policy in done.files["quarantine.yaml"]:
            kubernetes_validate.validate(policy, kubernetes_validate.latest_version(), strict=True)


def test_calico_quarantine_wins_over_the_policies_in_force(tmp_path: Path) -> None:
    """The pod keeps its labels on Calico: the order-0 Deny comes before the exported
    Allow of frontend -> backend."""
    exported, _ = EXPORTERS["calico"](K8S_MODEL)
    before = read_back("calico", exported, tmp_path)
    assert allowed(before, STILL_LABELLED, CART, 8080)
    done = quarantine(K8S_MODEL, "calico", workload=Workload.parse("shop/web-7f9"))
    after = read_back("calico", done.files, tmp_path, exported)
    assert not allowed(after, STILL_LABELLED, CART, 8080)
    assert allowed(after, FRONTEND, CART, 8080)  # only the quarantined pod is cut off
    assert "kubectl -n shop label pod web-7f9 segwatch/quarantine=web-7f9" in done.files["apply.sh"]


@pytest.mark.parametrize("target", ["k8s", "cilium"])
def test_additive_targets_take_the_pod_out_of_its_policies(target: str, tmp_path: Path) -> None:
    # Cilium lets the quarantined pod into isolated DNS pods; NetworkPolicy cannot add an
    # allow to pods without isolating them, so there kube-dns is left unisolated
    exported, _ = EXPORTERS[target](K8S_MODEL, isolate_system=target == "cilium")
    done = quarantine(K8S_MODEL, target, workload=Workload.parse("shop/web-7f9"))
    apply = done.files["apply.sh"]
    assert "> web-7f9.labels" in apply and "{{$k}}- " in apply  # saved, then removed
    assert "--overwrite $(cat web-7f9.labels)" in done.files["undo.sh"]
    after = read_back(target, done.files, tmp_path, exported)
    assert not allowed(after, QUARANTINED, CART, 8080)  # relabelled: no zone's policy
    assert allowed(after, QUARANTINED, KUBE_DNS, 53, "udp")
    assert allowed(after, FRONTEND, CART, 8080)
    labels = quarantine(K8S_MODEL, target, workload=Workload.parse("shop:app=frontend"))
    assert any("allow rules add up" in w for w in labels.warnings)


def test_a_host_is_cut_off_from_every_pod_on_calico_and_cilium(tmp_path: Path) -> None:
    calico = quarantine(K8S_MODEL, "calico", host="10.0.1.10").files["quarantine.yaml"]
    tier, policy = calico
    assert tier["kind"] == "Tier" and policy["spec"]["tier"] == tier["metadata"]["name"]
    assert policy["metadata"]["name"].startswith(tier["metadata"]["name"] + ".")
    assert policy["spec"]["selector"] == "all()"
    for direction in ("ingress", "egress"):  # what it does not cut goes on to the next tier
        assert policy["spec"][direction][-1] == {"action": "Pass"}
        assert policy["spec"][direction][-2]["action"] == "Deny"
    cilium = quarantine(K8S_MODEL, "cilium", host="10.0.1.10")
    back = read_back("cilium", cilium.files, tmp_path)
    assert not allowed(back, FRONTEND, "10.0.1.10", 22)
    assert not allowed(back, "10.0.1.10", FRONTEND, 8080)
    assert allowed(back, FRONTEND, "203.0.113.9", 443)  # no default deny for the rest


def test_aws_quarantine_replaces_the_groups_of_the_host(tmp_path: Path) -> None:
    model = example("three_tier_vpc.yaml")
    done = quarantine(model, "aws-sg", host="10.0.1.10")
    back = read_back("aws-sg", done.files, tmp_path)
    assert allowed(back, "10.0.1.10", "10.0.0.2", 53, "udp")  # the model's DNS zone
    assert not allowed(back, "10.0.1.10", "10.0.2.20", 8080)
    assert not allowed(back, "203.0.113.9", "10.0.1.10", 443)
    apply = done.files["apply.sh"]
    assert "groups-before.txt" in apply and "revoke-security-group-egress" in apply
    assert "$(cat groups-before.txt)" in done.files["undo.sh"]
    assert any("stateful" in w for w in done.warnings)


@pytest.mark.parametrize(("target", "kwargs", "problem"), [
    ("k8s", {"host": "10.0.1.10"}, "NetworkPolicy cannot select a host"),
    ("aws-sg", {"workload": Workload("shop", "web")}, "security groups attach"),
    ("calico", {"host": "not-an-ip"}, "is not an IP address"),
    ("calico", {}, "exactly one of --host and --workload"),
    ("calico", {"host": "10.0.1.10", "forensics": "nowhere"}, "not a zone of the model"),
    ("vmware", {"host": "10.0.1.10"}, "is not one of"),
])  # fmt: skip
def test_what_a_target_cannot_isolate_is_refused_with_why(
    target: str, kwargs: dict[str, Any], problem: str
) -> None:
    with pytest.raises(QuarantineProblem, match=problem):
        quarantine(K8S_MODEL, target, **kwargs)


@pytest.mark.parametrize(
    "text", ["shop", "shop/", "/web", "shop:app", "shop:=x", "a/b/c", "../x/web", "shop/$(id)",
             "UPPER/web", "shop:app=$(id)"]
)  # fmt: skip
def test_a_workload_is_ns_slash_pod_or_ns_colon_labels(text: str) -> None:
    with pytest.raises(QuarantineProblem, match="NAMESPACE/POD"):
        Workload.parse(text)
    assert Workload.parse("shop:app=web,tier=1").match_labels() == {"app": "web", "tier": "1"}


def test_suggestions_name_the_target_the_logs_come_from() -> None:
    hubble = suggestion("10.244.1.5", {"namespace": "shop", "pod": {"name": "web-1"}},
                        "segwatch.hubble")  # fmt: skip
    assert hubble["to"] == "cilium" and hubble["workload"] == "shop/web-1"
    assert "--workload shop/web-1 --to cilium" in hubble["command"]
    vpc = suggestion("10.0.1.10", None, "segwatch.vpcflow")
    assert vpc["command"].startswith(
        "segwatch model quarantine -m MODEL --host 10.0.1.10 --to aws-sg"
    )
    pod_without_name = suggestion("10.244.1.5", {"namespace": "shop"}, "segwatch.other")
    assert pod_without_name["to"] == "calico" and "--host 10.244.1.5" in pod_without_name["command"]


def test_quarantine_command(tmp_path: Path) -> None:
    runner = CliRunner(mix_stderr=False)
    out = tmp_path / "q"
    done = runner.invoke(app, ["model", "quarantine", "-m", str(MODELS / "kubernetes_dns.yaml"),
                               "--workload", "shop/web-7f9", "--to", "cilium", "-o", str(out)])  # fmt: skip
    assert done.exit_code == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["apply.sh", "quarantine.yaml", "undo.sh"]
    assert (out / "apply.sh").stat().st_mode & 0o111 and "undo:" in done.stderr
    refused = runner.invoke(app, ["model", "quarantine", "-m", str(MODELS / "kubernetes_dns.yaml"),
                                  "--host", "10.0.1.10", "--to", "k8s", "-o", str(tmp_path / "x")])  # fmt: skip
    assert refused.exit_code == 2 and "NetworkPolicy cannot select a host" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "x").exists()
