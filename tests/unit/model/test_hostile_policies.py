"""Policies and models a careless or hostile author wrote: namespaces that would be
paths, documents of absurd shapes, an export that would write outside its folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from detector.model import ModelError, load_model
from streams.cli import app

ROOT = Path(__file__).resolve().parents[3]
POLICY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: db, namespace: {namespace}}}
spec:
  podSelector: {podselector}
  ingress:
    - from: [{{podSelector: {{matchLabels: {{app: api}}}}}}]
      ports: [{{port: 5432}}]
"""


def _import(tmp_path: Path, namespace: str = "shop", podselector: str = "{matchLabels: {app: db}}"
            ) -> Any:  # fmt: skip
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY.format(namespace=namespace, podselector=podselector))
    return CliRunner(mix_stderr=False).invoke(
        app, ["model", "import", "--from", "k8s", str(policy), "-o", str(tmp_path / "m.yaml")]
    )


@pytest.mark.parametrize("namespace", ['"../x"', '"/etc"', '"a/b"', '"UPPER"', '"-x"'])
def test_a_namespace_that_is_not_a_name_is_refused_with_its_policy(
    tmp_path: Path, namespace: str
) -> None:
    done = _import(tmp_path, namespace=namespace)
    assert done.exit_code == 2 and "is not a Kubernetes namespace name" in done.stderr
    assert "p.yaml: NetworkPolicy" in done.stderr and not (tmp_path / "m.yaml").exists()


@pytest.mark.parametrize("podselector", ["[1, 2]", '"app=db"', "{matchLabels: [app]}",
                                         "{matchExpressions: {key: app}}"])  # fmt: skip
def test_a_policy_of_an_absurd_shape_is_refused_in_one_line(
    tmp_path: Path, podselector: str
) -> None:
    done = _import(tmp_path, podselector=podselector)
    assert done.exit_code == 2, done.stderr
    assert "p.yaml" in done.stderr and "Traceback" not in done.stderr + done.stdout


def test_a_model_namespace_is_checked_where_it_is_written(tmp_path: Path) -> None:
    text = (ROOT / "detector" / "assets" / "models" / "kubernetes_dns.yaml").read_text()
    model = tmp_path / "m.yaml"
    model.write_text(text.replace("namespaces: [shop]", 'namespaces: ["../../tmp/x"]', 1))
    with pytest.raises(ModelError, match=r"m\.yaml:\d+: zones\[0\]\.kubernetes\[0\]\.namespaces"):
        load_model(model)


def test_an_export_never_writes_outside_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from detector.model import formats

    monkeypatch.setitem(formats.EXPORTERS, "k8s",
                        lambda model: ({"../escaped.yaml": [{}], "ok.yaml": [{}]}, []))  # fmt: skip
    out = tmp_path / "out"
    done = CliRunner(mix_stderr=False).invoke(app, [
        "model", "export", "-m", str(ROOT / "detector" / "assets" / "models" / "kubernetes_dns.yaml"),
        "--to", "k8s", "-o", str(out)])  # fmt: skip
    assert done.exit_code == 2 and "refusing to write '../escaped.yaml'" in done.stderr
    assert not (tmp_path / "escaped.yaml").exists() and not out.exists()


@pytest.mark.parametrize("ports, problem", [
    ("{port: 9000, endPort: 8000}", "port range 9000-8000 is not within 0-65535"),
    ("{port: -5}", "port -5 is not within"),
    ("{port: 70000}", "port 70000 is not within"),
    ("{port: [80]}", "is not a number"),
])  # fmt: skip
def test_a_port_range_no_platform_takes_is_refused_not_dropped(
    tmp_path: Path, ports: str, problem: str
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY.format(namespace="shop", podselector="{matchLabels: {app: db}}")
                      .replace("ports: [{port: 5432}]", f"ports: [{ports}]"))  # fmt: skip
    done = CliRunner(mix_stderr=False).invoke(
        app, ["model", "import", "--from", "k8s", str(policy), "-o", str(tmp_path / "m.yaml")]
    )
    assert done.exit_code == 2 and problem in done.stderr and "ingress[0] ports[0]" in done.stderr


def test_a_reversed_calico_range_is_refused(tmp_path: Path) -> None:
    policy = tmp_path / "c.yaml"
    policy.write_text("""apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  selector: app == 'db'
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: TCP
      source: {selector: app == 'api'}
      destination: {ports: ["9000:8000"]}
""")
    done = CliRunner(mix_stderr=False).invoke(
        app, ["model", "import", "--from", "calico", str(policy), "-o", str(tmp_path / "m.yaml")]
    )
    assert done.exit_code == 2 and "port range 9000-8000 is not within" in done.stderr


CILIUM = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: db, namespace: shop}}
spec:
  endpointSelector: {selector}
  ingress:
    - fromEndpoints: [{{matchLabels: {{app: api}}}}]
      toPorts: {to_ports}
"""


@pytest.mark.parametrize(("selector", "to_ports", "problem"), [
    ("[1, 2]", "[]", "endpointSelector: a selector must be an object"),
    ("{matchLabels: [app]}", "[]", "endpointSelector"),
    ("{}", '"80"', "toPorts"),
    ("{}", "[{ports: [80]}]", "toPorts[0].ports[0]: must be an object"),
    ("{}", "[{ports: [{port: '9000', endPort: 8000}]}]", "port range 9000-8000"),
    ("{}", "[{ports: [{port: '999999'}]}]", "is not within 0-65535"),
    ("{}", "[{ports: [{port: '80', endPort: x}]}]", "endPort 'x' is not a number"),
])  # fmt: skip
def test_a_cilium_policy_of_an_absurd_shape_is_refused_with_its_place(
    tmp_path: Path, selector: str, to_ports: str, problem: str
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(CILIUM.format(selector=selector, to_ports=to_ports))
    done = CliRunner(mix_stderr=False).invoke(
        app, ["model", "import", "--from", "cilium", str(policy), "-o", str(tmp_path / "m.yaml")]
    )
    assert done.exit_code == 2, done.stdout
    assert problem in done.stderr and "CiliumNetworkPolicy shop/db" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
