"""The model commands and ``segwatch analyze``, run as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from streams.cli import app

from .conftest import MODELS

runner = CliRunner(mix_stderr=False)
THREE_TIER = str(MODELS / "three_tier_vpc.yaml")


def _vpc(src: str, dst: str, sport: int, dport: int, action: str = "ACCEPT") -> str:
    return f"2 123456789012 eni-0a1b2c3d {src} {dst} {sport} {dport} 6 10 840 1764064800 1764064860 {action} OK"


def _flows(tmp_path: Path) -> Path:
    lines = [
        _vpc("203.0.113.9", "10.0.1.10", 51000, 443),
        _vpc("10.0.1.10", "10.0.2.20", 40100, 8080),
        _vpc("10.0.1.10", "10.0.3.30", 40200, 5432),  # skips a tier: violation
        _vpc("10.0.1.10", "10.0.3.30", 40201, 5432),
        _vpc("203.0.113.9", "10.0.3.30", 40202, 5432, "REJECT"),
        _vpc("10.77.0.1", "10.0.2.20", 40203, 8080),
    ]
    path = tmp_path / "flows.log"
    path.write_text("\n".join(lines) + "\nnot a flow record\n")
    return path


def test_analyze_writes_enriched_events_and_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    result = runner.invoke(app, ["analyze", "--model", THREE_TIER, str(_flows(tmp_path)),
                                 "--events", str(out), "--keep-going", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["segmentation"]["verdict"] for e in events] == [
        "allowed", "allowed", "violation", "violation", "blocked_attempt", "unmanaged",
    ]  # fmt: skip
    assert events[2]["segmentation"]["source_zone"] == "dmz"
    assert events[1]["segmentation"]["rule_id"] == "dmz-to-app"
    summary = json.loads(result.stdout)
    assert summary["verdicts"] == {
        "allowed": 2,
        "violation": 2,
        "blocked_attempt": 1,
        "unmanaged": 1,
    }
    assert summary["top_violations"][0]["count"] == 2
    assert [r["rule_id"] for r in summary["unused_rules"]] == ["app-to-db"]
    assert "vpc-dns" in summary["zones_never_seen"] and "dmz" not in summary["zones_never_seen"]
    assert "flows.log:7: " in result.stderr  # the bad record, with its line


def test_blast_radius_compares_declared_and_observed_reach(tmp_path: Path) -> None:
    flows = _flows(tmp_path)  # dmz -> app, dmz -> db (a violation that got through)
    with flows.open("a") as out:  # db opened ssh on a DMZ host: nothing declares it
        out.write(_vpc("10.0.3.30", "10.0.1.10", 40300, 22) + "\n")
    result = runner.invoke(app, ["model", "blast-radius", "-m", THREE_TIER, "--from", "db",
                                 "--events", str(flows), "--json", "--family", "vpcflow"])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    observed = {o["zone"]: o for o in data["observed"]}
    assert set(observed) == {"dmz", "app"} and not observed["dmz"]["declared"]
    assert [h["destination"] for h in observed["app"]["hops"]] == ["dmz", "app"]
    assert data["declared_not_observed"] == ["vpc-dns"]
    table = runner.invoke(app, ["model", "blast-radius", "-m", THREE_TIER, "--from", "db",
                                "--events", str(flows)])  # fmt: skip
    assert "though the model allows no path" in table.stdout


def test_analyze_says_what_enforcing_a_monitor_zone_would_block(tmp_path: Path) -> None:
    model = tmp_path / "model.yaml"
    text = (MODELS / "three_tier_vpc.yaml").read_text()
    model.write_text(text.replace("  - name: db\n", "  - name: db\n    mode: monitor\n", 1))
    result = runner.invoke(app, ["analyze", "--model", str(model), str(_flows(tmp_path)),
                                 "--keep-going", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    blocked = json.loads(result.stdout)["enforcing_would_block"]
    assert blocked == [{"source_zone": "dmz", "destination_zone": "db", "service": "tcp/5432",
                        "count": 2}]  # fmt: skip
    enforced = runner.invoke(app, ["analyze", "--model", THREE_TIER, str(_flows(tmp_path)),
                                   "--keep-going", "--json"])  # fmt: skip
    assert json.loads(enforced.stdout)["enforcing_would_block"] == []


def test_analyze_counts_replies_with_their_connection_and_writes_incidents(tmp_path: Path) -> None:
    lines = [_vpc("10.0.1.10", "10.0.3.30", 40200 + i, 5432) for i in range(3)]
    lines += [_vpc("10.0.3.30", "10.0.1.10", 5432, 40200 + i) for i in range(3)]  # the answers
    flows = tmp_path / "probe.log"
    flows.write_text("\n".join(lines) + "\n")
    incidents = tmp_path / "incidents.jsonl"
    result = runner.invoke(app, ["analyze", "-m", THREE_TIER, str(flows), "--json",
                                 "--learning", "0s", "--incidents", str(incidents)])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["connections"], summary["replies"]) == (3, 3)
    assert summary["verdicts"] == {"violation": 3}
    assert [(p["source_zone"], p["destination_zone"]) for p in summary["zone_pairs"]] == [
        ("dmz", "db")]  # fmt: skip
    (incident,) = [json.loads(line) for line in incidents.read_text().splitlines()]
    assert incident["segwatch"]["incident"]["path"] == ["dmz", "db"]
    assert incident["segwatch"]["incident"]["attacker"] == "10.0.1.10"
    assert summary["incidents"][0]["id"] == incident["segwatch"]["incident"]["id"]
    table = runner.invoke(app, ["analyze", "-m", THREE_TIER, str(flows), "--learning", "0s"])
    assert table.stdout.index("Incidents") < table.stdout.index("Top alerts")
    assert "3 reply records" in table.stdout


def test_analyze_table_summary_and_stop_on_bad_record(tmp_path: Path) -> None:
    flows = _flows(tmp_path)
    result = runner.invoke(app, ["analyze", "-m", THREE_TIER, str(flows), "-k"])
    assert result.exit_code == 0
    assert "Top violations" in result.stdout and "least-privilege" in result.stdout
    stopped = runner.invoke(app, ["analyze", "-m", THREE_TIER, str(flows)])
    assert stopped.exit_code == 1


def test_a_bad_model_is_refused_with_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: segwatch/v1\nmetadata: {name: x}\nzones:\n  - {name: a, cidrs: [10.0.300.0/24]}\n"
    )
    for args in (["model", "validate", str(bad)], ["analyze", "-m", str(bad), "-"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert (
            f"{bad}:4: zones[0].cidrs[0]: '10.0.300.0/24' is not a valid network" in result.stderr
        )


def test_validate_and_lint_the_examples() -> None:
    result = runner.invoke(app, ["model", "validate", *map(str, sorted(MODELS.glob("*.yaml")))])
    assert result.exit_code == 0 and result.stdout.count(": ok, model") >= 6
    lint = runner.invoke(app, ["model", "lint", THREE_TIER, "--json"])
    assert lint.exit_code == 0
    assert {f["id"] for f in json.loads(lint.stdout)} <= {"SW005", "SW013"}


def test_lint_exits_non_zero_on_errors(tmp_path: Path) -> None:
    text = (MODELS / "three_tier_vpc.yaml").read_text().replace("action: deny", "action: allow")
    model = tmp_path / "m.yaml"
    model.write_text(text)
    result = runner.invoke(app, ["model", "lint", str(model)])
    assert result.exit_code == 1
    assert "SW001" in result.stdout and "fix: set defaults.action: deny" in result.stdout


def test_blast_radius_json() -> None:
    result = runner.invoke(
        app, ["model", "blast-radius", "-m", THREE_TIER, "--from", "10.0.1.10", "--json"]
    )
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["start"] == "dmz" and data["reached"][0]["zone"] == "db"
    unknown = runner.invoke(app, ["model", "blast-radius", "-m", THREE_TIER, "--from", "nowhere"])
    assert unknown.exit_code == 2 and "not a zone" in unknown.stderr


def test_diff_with_observed_traffic(tmp_path: Path) -> None:
    new = tmp_path / "new.yaml"
    new.write_text(
        (MODELS / "three_tier_vpc.yaml").read_text().replace("ports: [8080]", "ports: [8443]")
    )
    result = runner.invoke(
        app, ["model", "diff", THREE_TIER, str(new), "--events", str(_flows(tmp_path))]
    )
    assert result.exit_code == 1
    assert "+ allow dmz -> app tcp/8443" in result.stdout
    assert "- deny  dmz -> app tcp/8080" in result.stdout
    assert "dmz -> app tcp/8080: allowed -> violation" in result.stdout
    same = runner.invoke(app, ["model", "diff", THREE_TIER, THREE_TIER])
    assert same.exit_code == 0


def test_diff_names_what_enforcing_a_monitor_zone_would_block(tmp_path: Path) -> None:
    monitored = tmp_path / "monitored.yaml"
    monitored.write_text(
        (MODELS / "three_tier_vpc.yaml").read_text().replace("  - name: db\n",
                                                             "  - name: db\n    mode: monitor\n")
    )  # fmt: skip
    flows = str(_flows(tmp_path))
    result = runner.invoke(app, ["model", "diff", str(monitored), THREE_TIER, "--events", flows])
    assert result.exit_code == 1
    assert "zone mode: db monitor -> enforce" in result.stdout
    assert "now enforced (monitor -> enforce), these observed flows are blocked: 2" in result.stdout
    assert "dmz -> db tcp/5432" in result.stdout
    data = json.loads(runner.invoke(app, ["model", "diff", str(monitored), str(monitored),
                                          "--events", flows, "--json"]).stdout)  # fmt: skip
    assert data["observed"]["enforcing_would_block"] == [
        {"source_zone": "dmz", "destination_zone": "db", "service": "tcp/5432", "count": 2}
    ]


def test_graph_in_every_format(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    from PIL import Image

    svg, png, page = tmp_path / "m.svg", tmp_path / "m.png", tmp_path / "m.html"
    for out in (svg, png, page):
        result = runner.invoke(
            app, ["model", "graph", "-m", THREE_TIER, "-o", str(out), "--from", "dmz"]
        )
        assert result.exit_code == 0, result.output
    root = ET.fromstring(svg.read_text())
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"internet", "dmz", "app", "db", "vpc-dns"} <= texts
    highlighted = [
        r for r in root.iter("{http://www.w3.org/2000/svg}rect") if r.get("stroke-width") == "3"
    ]
    assert len(highlighted) == 4  # dmz itself and app, db, vpc-dns it reaches
    assert "<svg" in page.read_text() and "Allowed flows" in page.read_text()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 600
    bad = runner.invoke(app, ["model", "graph", "-m", THREE_TIER, "-o", str(tmp_path / "m.pdf")])
    assert bad.exit_code == 2 and "must end in .svg, .png or .html" in bad.stderr


def test_import_and_export_commands(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    exported = runner.invoke(
        app,
        [
            "model",
            "export",
            "--to",
            "k8s",
            "-m",
            str(MODELS / "kubernetes_dns.yaml"),
            "-o",
            str(out),
        ],
    )
    assert exported.exit_code == 0, exported.output
    assert [f.name for f in out.glob("*.yaml")] == ["shop.yaml"]  # kube-system left alone
    assert "zone kube-dns: not isolated in kube-system" in exported.stderr
    out = tmp_path / "k8s-all"
    exported = runner.invoke(
        app,
        ["model", "export", "--to", "k8s", "--isolate-system", "-m",
         str(MODELS / "kubernetes_dns.yaml"), "-o", str(out)],
    )  # fmt: skip
    assert exported.exit_code == 0, exported.output
    files = sorted(out.glob("*.yaml"))
    assert [f.name for f in files] == ["kube-system.yaml", "shop.yaml"]
    model = tmp_path / "imported.yaml"
    imported = runner.invoke(
        app, ["model", "import", "--from", "k8s", *map(str, files), "-o", str(model)]
    )
    assert imported.exit_code == 0, imported.output
    assert "catch-all zone cluster: pods of every other namespace" in imported.stderr
    assert runner.invoke(app, ["model", "lint", str(model)]).exit_code == 0
    again = runner.invoke(
        app,
        [
            "model",
            "export",
            "--to",
            "k8s",
            "--isolate-system",
            "-m",
            str(MODELS / "kubernetes_dns.yaml"),
            "-o",
            str(tmp_path / "again"),
        ],
    )
    assert again.exit_code == 0
    assert [f.read_text() for f in files] == [
        f.read_text() for f in sorted((tmp_path / "again").glob("*.yaml"))
    ]
    sg = runner.invoke(
        app, ["model", "export", "--to", "aws-sg", "-m", THREE_TIER, "-o", str(tmp_path / "sg")]
    )
    assert (
        sg.exit_code == 0
        and json.loads((tmp_path / "sg" / "security-groups.json").read_text())["SecurityGroups"]
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec:\n  selector: app contains 'x'\n"
    )
    refused = runner.invoke(
        app, ["model", "import", "--from", "calico", str(broken), "-o", str(model)]
    )
    assert refused.exit_code == 2 and "GlobalNetworkPolicy p selector" in refused.stderr


def test_an_export_that_would_write_nothing_is_an_error(tmp_path: Path) -> None:
    """A CIDR-only model cannot be NetworkPolicies or Calico policies: say why, exit 2."""
    for target in ("k8s", "calico", "cilium"):
        out = tmp_path / target
        result = runner.invoke(app, ["model", "export", "--to", target, "-m", THREE_TIER,
                                     "-o", str(out)])  # fmt: skip
        assert result.exit_code == 2, result.output
        assert f"cannot export to {target}" in result.stderr and "aws-sg" in result.stderr
        assert not out.exists()
    refused = runner.invoke(app, ["model", "export", "--to", "calico", "--isolate-system",
                                  "-m", THREE_TIER, "-o", str(tmp_path / "x")])  # fmt: skip
    assert refused.exit_code != 0 and "--isolate-system is for --to k8s or cilium" in refused.stderr


def test_cilium_export_and_import_commands(tmp_path: Path) -> None:
    """--to cilium writes the policies (and, for monitor zones, the audit-mode script);
    --from cilium --apiserver reads them back with the API server's zone."""
    source = tmp_path / "m.yaml"
    source.write_text(
        (MODELS / "kubernetes_dns.yaml")
        .read_text()
        .replace("  - name: backend\n", "  - name: backend\n    mode: monitor\n", 1)
    )
    out = tmp_path / "cilium"
    exported = runner.invoke(app, ["model", "export", "--to", "cilium", "-m", str(source),
                                   "-o", str(out)])  # fmt: skip
    assert exported.exit_code == 0, exported.output
    assert sorted(f.name for f in out.iterdir()) == [
        "cilium-network-policies.yaml", "enable-audit-mode.sh", "monitor-zones.yaml"]  # fmt: skip
    assert (out / "enable-audit-mode.sh").stat().st_mode & 0o111
    api = tmp_path / "api.yaml"
    api.write_text(yaml.safe_dump({
        "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "to-api", "namespace": "ops"},
        "spec": {"endpointSelector": {}, "egress": [{"toEntities": ["kube-apiserver"]}]},
    }))  # fmt: skip
    model = tmp_path / "back.yaml"
    imported = runner.invoke(app, ["model", "import", "--from", "cilium", str(api),
                                   "--apiserver", "10.0.0.1/32", "-o", str(model)])  # fmt: skip
    assert imported.exit_code == 0, imported.output
    zones = {z["name"]: z for z in yaml.safe_load(model.read_text())["zones"]}
    assert zones["kube-apiserver"]["cidrs"] == ["10.0.0.1/32"]
    bad = runner.invoke(app, ["model", "import", "--from", "cilium", str(api),
                              "--apiserver", "not-an-ip", "-o", str(model)])  # fmt: skip
    assert bad.exit_code == 2 and "--apiserver 'not-an-ip'" in bad.stderr
    wrong = runner.invoke(app, ["model", "import", "--from", "k8s", str(api),
                                "--apiserver", "10.0.0.1", "-o", str(model)])  # fmt: skip
    assert wrong.exit_code == 2 and "--apiserver is for --from cilium" in wrong.stderr
