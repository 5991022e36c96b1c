"""The simulator and evaluation: every scenario is caught with the expected reason,
and a week of benign traffic raises (almost) no alerts after the learning period."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from detector.analyze import Analysis
from detector.detect import DetectorSettings, Engine, load_rules
from detector.evaluate import Evaluation, evaluate
from detector.parsers import ParseOptions, make_parser
from detector.simulate import SCENARIOS, SimulationError, Simulator
from streams.cli import app

from .conftest import MODELS, MONDAY, RULES, example

DAY = 86_400


def run(name: str, family: str, attacks: list[str], days: float, rate: float) -> Evaluation:
    model = example(name)
    records: list[str] = []
    labels: dict[str, Any] = {}
    for line, (record, label) in enumerate(
        Simulator(model, family, seed=7).run(MONDAY, days * DAY, rate, attacks), 1
    ):
        records.append(record)
        if label is not None:
            labels.setdefault(label.scenario, label).lines.append(line)
    parser = make_parser(family, ParseOptions(reference_time=MONDAY + 30 * DAY, syslog_year=2026))
    analysis = Analysis(model, Engine(model, DetectorSettings(), load_rules(RULES)))

    def events() -> Any:
        for line, record in enumerate(records, 1):
            for result in parser.parse(record):
                assert isinstance(result, dict), result
                yield f"sim:{line}", result

    return evaluate(analysis, events(), [lb.to_dict() for lb in labels.values()])


CASES = [
    (
        "retail_store.yaml",
        "vpcflow",
        ["vendor-pivot", "port-scan", "offhours-exfil", "dev-to-prod", "slow-sweep"],
    ),
    ("retail_store.yaml", "iptables", ["port-scan", "slow-sweep"]),
    ("multi_tenant_saas.yaml", "calico", ["tenant-crossing"]),
]


@pytest.mark.parametrize(
    ("name", "family", "attacks"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES]
)
def test_every_scenario_is_detected_with_its_reason(
    name: str, family: str, attacks: list[str]
) -> None:
    result = run(name, family, attacks, days=4.5, rate=0.3)
    assert {s.scenario for s in result.scenarios} == set(attacks)
    for s in result.scenarios:
        assert s.detected, f"{s.scenario} not detected"
        assert s.expected_reason_found, f"{s.scenario}: no reason with {s.expect!r} in {s.reasons}"
        assert s.time_to_detect is not None and s.time_to_detect < 3600, s


def test_the_scenarios_are_all_covered() -> None:
    assert {a for _, _, attacks in CASES for a in attacks} == set(SCENARIOS)


BENIGN = [
    (p.name, "calico" if p.name in ("multi_tenant_saas.yaml", "kubernetes_dns.yaml") else "vpcflow")
    for p in sorted(MODELS.glob("*.yaml"))
]


@pytest.mark.parametrize(("name", "family"), BENIGN, ids=[b[0] for b in BENIGN])
def test_a_benign_week_raises_at_most_one_alert_per_100k_flows(name: str, family: str) -> None:
    result = run(name, family, [], days=7, rate=0.45)
    assert result.benign_flows_after_learning >= 100_000, result.benign_flows_after_learning
    assert result.benign_rate_per_100k <= 1.0, result.benign_alert_samples


@pytest.mark.parametrize(
    ("name", "family", "attack", "message"),
    [
        (
            "three_tier_vpc.yaml",
            "vpcflow",
            "tenant-crossing",
            "needs two zones with different tenant tags",
        ),
        ("retail_store.yaml", "iptables", "offhours-exfil", "iptables LOG lines do not have"),
        ("three_tier_vpc.yaml", "vpcflow", "dev-to-prod", "environment: development"),
        ("three_tier_vpc.yaml", "vpcflow", "no-such-attack", "no scenario 'no-such-attack'"),
        (
            "multi_tenant_saas.yaml",
            "vpcflow",
            "port-scan",
            "can only be simulated with --family calico",
        ),
    ],
)
def test_scenarios_that_do_not_fit_are_refused(
    name: str, family: str, attack: str, message: str
) -> None:
    with pytest.raises(SimulationError, match=message):
        list(Simulator(example(name), family).run(MONDAY, DAY, 0.1, [attack]))


def test_the_simulator_is_deterministic_and_writes_parseable_records() -> None:
    model = example("three_tier_vpc.yaml")
    for family in ("vpcflow", "calico", "iptables"):
        a = [r for r, _ in Simulator(model, family, seed=3).run(MONDAY, 3600, 1.0, ["port-scan"])]
        b = [r for r, _ in Simulator(model, family, seed=3).run(MONDAY, 3600, 1.0, ["port-scan"])]
        assert a == b and len(a) > 100
        parser = make_parser(
            "auto", ParseOptions(reference_time=MONDAY + 30 * DAY, syslog_year=2026)
        )
        assert all(isinstance(res, dict) for r in a for res in parser.parse(r)), family


def test_simulate_and_evaluate_commands(tmp_path: Path) -> None:
    runner = CliRunner(mix_stderr=False)
    out = tmp_path / "week.log"
    model = str(MODELS / "retail_store.yaml")
    made = runner.invoke(
        app,
        [
            "simulate",
            "-m",
            model,
            "-o",
            str(out),
            "--duration",
            "3d",
            "--rate",
            "0.2",
            "--attack",
            "dev-to-prod",
        ],
    )
    assert made.exit_code == 0, made.output
    labels = json.loads((tmp_path / "week.log.labels.json").read_text())
    assert labels[0]["scenario"] == "dev-to-prod" and labels[0]["lines"]
    result = runner.invoke(app, ["evaluate", "-m", model, str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["scenarios"][0]["detected"] and data["scenarios"][0]["expected_reason_found"]
    refused = runner.invoke(
        app,
        [
            "simulate",
            "-m",
            str(MODELS / "three_tier_vpc.yaml"),
            "-o",
            str(out),
            "--attack",
            "tenant-crossing",
        ],
    )
    assert refused.exit_code == 2 and "tenant" in refused.stderr
