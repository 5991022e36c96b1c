"""Recommendations from observed traffic: rule use, unused rules, over-wide rules
narrowed to their use, forbidden traffic that looks like a service proposed."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from detector.events import parse_stamp
from detector.model import compile_model
from detector.model.diff import diff_models
from detector.model.recommend import recommend
from streams.cli import app

from .conftest import HEAD, compiled, flow

MODEL = (
    HEAD
    + """\
defaults: {action: deny}
zones:
  - {name: web, cidrs: [10.1.0.0/16]}
  - {name: app, cidrs: [10.2.0.0/16]}
  - {name: db, cidrs: [10.3.0.0/16]}
  - {name: ops, cidrs: [10.4.0.0/16]}
  - {name: batch, cidrs: [10.5.0.0/16]}
flows:
  - {id: web-app, from: web, to: app, protocol: tcp, ports: ["8000-8100"], owner: team-web}
  - {id: ops-all, from: ops, to: [web, app], protocol: any, owner: team-ops}
  - {id: app-db, from: app, to: db, protocol: tcp, ports: [5432], owner: team-data}
"""
)


def at(hour: int, minute: int = 0, day: int = 23) -> str:
    return f"2026-11-{day}T{hour:02d}:{minute:02d}:00.000Z"


def traffic() -> list[dict]:
    events = [flow("10.1.0.5", "10.2.0.5", 8080, at=at(9, i)) for i in range(30)]
    events += [flow("10.4.0.9", "10.1.0.5", 22, at=at(10, i)) for i in range(5)]
    events += [flow("10.4.0.9", "10.2.0.5", 161, at=at(10, i), proto="udp") for i in range(5)]
    # a batch job the model forgot: repeated, stable, in business hours
    events += [flow("10.5.0.7", "10.3.0.5", 5432, at=at(9 + i % 4, i)) for i in range(12)]
    # a sweep: many ports, a few connections each
    events += [flow("10.1.0.66", "10.3.0.5", 1000 + i, at=at(11, i % 60)) for i in range(40)]
    # repeated, but at night on a Sunday
    events += [flow("10.5.0.8", "10.3.0.5", 6379, at=at(2 + i % 4, i, day=22)) for i in range(12)]
    return events


def test_recommend_counts_use_and_proposes_the_narrower_model() -> None:
    model = compiled(MODEL)
    found = recommend(model, traffic())
    use = {u.rule: u for u in found.usage}
    assert use["web-app"].connections == 30 and dict(use["web-app"].services) == {"tcp/8080": 30}
    assert found.unused == ["app-db"]
    assert {n["rule"]: n["proposed"] for n in found.narrowed} == {
        "web-app": ["tcp/8080"], "ops-all": ["tcp/22", "udp/161"]}  # fmt: skip
    (batch,) = found.proposed
    assert (batch["from"], batch["to"], batch["protocol"], batch["ports"]) == (
        "batch",
        "db",
        "tcp",
        [5432],
    )
    assert batch["sources"] == ["10.5.0.7"] and batch["business_hours_share"] == 1.0
    assert "owner" not in batch  # for review: lint SW017 says so
    new = compile_model(found.model)
    change = diff_models(model, new)
    assert ("batch", "db", "tcp/5432") in change.allowed
    assert ("app", "db", "tcp/5432") in change.denied
    assert ("web", "app", "tcp/8000-8079,8081-8100") in change.denied
    # the proposal lets through every connection the old model allowed in the traffic
    for event in traffic():
        if model.place(event).verdict == "allowed":
            assert new.place(event).verdict == "allowed", event


def vpc_line(event: dict, i: int) -> str:
    start = int(parse_stamp(event["@timestamp"]))
    proto = event["network"]["iana_number"]
    src, dst = event["source"]["ip"], event["destination"]["ip"]
    return (
        f"2 123456789012 eni-0a1b2c3d {src} {dst} {40000 + i} "
        f"{event['destination']['port']} {proto} 1 60 {start} {start + 1} ACCEPT OK"
    )


def test_recommend_command_writes_the_proposal_and_its_diff(tmp_path: Path) -> None:
    model = tmp_path / "m.yaml"
    model.write_text(MODEL)
    events = tmp_path / "flows.log"  # the same traffic as VPC flow log records
    events.write_text("\n".join(vpc_line(e, i) for i, e in enumerate(traffic())) + "\n")
    out = tmp_path / "proposed.yaml"
    runner = CliRunner(mix_stderr=False)
    done = runner.invoke(app, ["model", "recommend", "-m", str(model), "--events", str(events),
                               "-f", "vpcflow", "-o", str(out)])  # fmt: skip
    assert done.exit_code == 0, done.stderr
    assert "never used (removed from the proposal" in done.stdout and "app-db" in done.stdout
    assert "narrower: web-app: allowed tcp/8000-8100, used tcp/8080 -> tcp/8080" in done.stdout
    assert "proposed (forbidden, looks like a service" in done.stdout
    assert "+ allow batch -> db tcp/5432" in done.stdout
    flows = {f["id"] for f in yaml.safe_load(out.read_text())["flows"]}
    assert {"web-app", "ops-all-tcp", "ops-all-udp"} <= flows and "app-db" not in flows
    assert runner.invoke(app, ["model", "validate", str(out)]).exit_code == 0
    data = json.loads(runner.invoke(app, ["model", "recommend", "-m", str(model), "--events",
                                          str(events), "-f", "vpcflow", "--json"]).stdout)  # fmt: skip
    assert data["unused_rules"] == ["app-db"] and data["diff"]["newly_allowed"]
