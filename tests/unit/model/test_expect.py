"""Segmentation tests as code (`segwatch model test`): every check can pass and fail,
against the declared model and against observed traffic; the example models' own test
files pass; bad files are refused with their line."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from detector.model import compile_model, model_from_data
from detector.model.expect import TestsProblem, check_all, load_tests, observed_edges
from streams.cli import app

from .conftest import MODELS, flow

TESTS = MODELS / "tests"
runner = CliRunner(mix_stderr=False)

# web -> app -> db, and a rule the tests below catch: web may also open ssh on db
MODEL = compile_model(model_from_data({
    "apiVersion": "segwatch/v1",
    "metadata": {"name": "t"},
    "zones": [
        {"name": "web", "cidrs": ["10.0.1.0/24"], "tags": {"environment": "production"}},
        {"name": "app", "cidrs": ["10.0.2.0/24"], "tags": {"environment": "production"}},
        {"name": "db", "cidrs": ["10.0.3.0/24"], "tags": {"sensitivity": "restricted"}},
        {"name": "dev", "cidrs": ["10.0.9.0/24"], "tags": {"environment": "development"}},
    ],
    "flows": [
        {"id": "internet-to-web", "from": "internet", "to": "web", "ports": [443]},
        {"id": "web-to-app", "from": "web", "to": "app", "ports": [8080]},
        {"id": "app-to-db", "from": "app", "to": "db", "ports": [5432]},
        {"id": "web-ssh-db", "from": "web", "to": "db", "ports": [22]},
    ],
}))  # fmt: skip


def _write(tmp_path: Path, tests: list[dict[str, Any]]) -> Path:
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "segwatch/v1", "kind": "SegmentationTests",
                                    "tests": tests}, sort_keys=False))  # fmt: skip
    return path


def _failures(tmp_path: Path, test: dict[str, Any], observed: Any = None) -> list[str]:
    [outcome, *rest] = check_all(MODEL, load_tests(_write(tmp_path, [test])), observed)
    return (rest[0] if observed is not None else outcome).failures


@pytest.mark.parametrize(
    ("test", "fails_with"),
    [
        ({"from": "internet", "deny": "db"}, None),
        ({"from": "web", "deny": "db"}, "web -(tcp/22 web-ssh-db)-> db"),
        ({"from": "web", "reaches_only": ["app"]}, "web -(tcp/22 web-ssh-db)-> db"),
        ({"from": "web", "reaches_only": ["app", "db"]}, None),
        ({"from": "internet", "no_path_to": "db"},
         "internet -(tcp/443 internet-to-web)-> web  web -(tcp/22 web-ssh-db)-> db"),
        ({"from": "dev", "no_path_to": {"environment": "production"}}, None),
        ({"from": "internet", "to": "db", "only_through": ["app"]}, "(not through app)"),
        ({"from": "internet", "to": "db", "only_through": ["web"]}, None),
        ({"from": "10.0.1.7", "at_most": ["app"]}, "web -(tcp/22 web-ssh-db)-> db"),
        ({"from": "internet", "at_most": ["web", "app", "db"]}, None),
        ({"from": "web", "allow": {"to": "app", "port": 8080}}, None),
        ({"from": "web", "allow": {"to": "app", "port": 8081}}, "no rule allows web -> app tcp/8081"),
        ({"from": "app", "allow": {"to": "db", "protocol": "udp", "port": 5432}}, "udp/5432"),
    ],
)  # fmt: skip
def test_each_check_against_the_declared_model(
    test: dict[str, Any], fails_with: str | None, tmp_path: Path
) -> None:
    failures = _failures(tmp_path, {"name": "t", **test})
    if fails_with is None:
        assert failures == []
    else:
        assert any(fails_with in f for f in failures), failures


def _events() -> list[dict[str, Any]]:
    return [
        flow("203.0.113.9", "10.0.1.5", 443),
        flow("10.0.1.5", "10.0.2.5", 8080),
        flow("10.0.9.5", "10.0.3.5", 5432),  # dev opened the database: not declared
        flow("10.0.9.5", "10.0.2.5", 8080, denied=True),  # refused: no reach
    ]


def test_observed_reach_is_what_connections_got_through() -> None:
    graph, seen = observed_edges(MODEL, _events())
    assert {(h.source, h.destination) for hops in graph.values() for h in hops} == {
        ("internet", "web"), ("web", "app"), ("dev", "db")}  # fmt: skip
    assert seen["db"] == 1 and seen["dev"] == 2


def test_an_expectation_the_model_keeps_can_break_in_the_traffic(tmp_path: Path) -> None:
    graph, _ = observed_edges(MODEL, _events())
    test = {"name": "dev stays out of production data", "from": "dev", "deny": "db"}
    assert _failures(tmp_path, test) == []
    assert _failures(tmp_path, test, graph) == ["dev -(tcp/5432 observed 1x)-> db"]
    refused = {"name": "t", "from": "dev", "reaches_only": ["db"]}  # the denied try is no reach
    assert _failures(tmp_path, refused, graph) == []


@pytest.mark.parametrize(
    ("tests", "message"),
    [
        ([{"name": "t", "from": "web"}], ":4: tests[0]: Value error, give exactly one of"),
        ([{"name": "t", "from": "web", "deny": "db", "at_most": ["x"]}], "give exactly one"),
        ([{"name": "t", "from": "web", "to": "db", "deny": "db"}], "`to` goes with only_through"),
        ([{"name": "t", "from": "web", "allow": {"to": "db", "port": 70000}}],
         "tests[0].allow.port: Input should be less than or equal to 65535"),
        ([{"name": "t", "from": "web", "deny": "nowhere"}], ":4: deny: 'nowhere' is not a zone"),
        ([{"name": "t", "from": {"tier": 7}, "deny": "db"}], "no zone has the tags {'tier': 7}"),
    ],
)  # fmt: skip
def test_bad_tests_are_refused_with_file_and_line(
    tests: list[dict[str, Any]], message: str, tmp_path: Path
) -> None:
    path = _write(tmp_path, tests)
    with pytest.raises(TestsProblem) as caught:
        check_all(MODEL, load_tests(path), origin=str(path))
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_a_file_that_is_not_a_tests_file(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text((MODELS / "three_tier_vpc.yaml").read_text())
    with pytest.raises(TestsProblem, match="not a SegmentationTests file"):
        load_tests(path)


def test_every_example_model_ships_passing_tests() -> None:
    models = sorted(p.name for p in MODELS.glob("*.yaml"))
    assert sorted(p.name for p in TESTS.glob("*.yaml")) == models
    for name in models:
        result = runner.invoke(app, ["model", "test", str(TESTS / name), "-m", str(MODELS / name)])
        assert result.exit_code == 0, (name, result.output)
        assert "FAIL" not in result.output and "PASS" in result.output


def test_the_command_exits_1_on_a_failure_and_writes_junit(tmp_path: Path) -> None:
    model = tmp_path / "model.yaml"
    model.write_text(MODEL.model.to_yaml())
    tests = _write(tmp_path, [{"name": "no ssh into the database", "from": "web", "deny": "db"},
                              {"name": "web serves", "from": "internet", "reaches_only": ["web"]}])  # fmt: skip
    junit = tmp_path / "results.xml"
    result = runner.invoke(app, ["model", "test", str(tests), "-m", str(model),
                                 "--junit", str(junit)])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "FAIL  declared  no ssh into the database" in result.output
    assert "web -(tcp/22 web-ssh-db)-> db" in result.output
    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    assert suite.find("testcase/failure") is not None
    missing = runner.invoke(app, ["model", "test", str(tmp_path / "none.yaml"), "-m", str(model)])
    assert missing.exit_code == 2 and "cannot read" in missing.stderr
