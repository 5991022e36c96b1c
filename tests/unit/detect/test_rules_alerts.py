"""Detection rules (every file valid, each fires), scoring with reasons, alert grouping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from detector.detect import DetectorSettings, Engine, load_rules
from detector.detect.alerts import risk
from detector.detect.base import Evidence
from detector.model import ModelError

from .conftest import MONDAY, RULES, event, example

ALL_RULES = load_rules(RULES)


def test_every_rule_file_is_valid_unique_and_named_after_its_id() -> None:
    files = sorted(p.stem for p in RULES.glob("*.yaml"))
    assert files == sorted(r.id.replace("-", "_") for r in ALL_RULES)
    assert len({r.id for r in ALL_RULES}) == len(ALL_RULES)
    for rule in ALL_RULES:
        assert rule.runbook.startswith("https://") and rule.description, rule.id


ACME = {"namespace": "tenant-acme", "labels": {}}
GLOBEX = {"namespace": "tenant-globex", "labels": {}}
ADMIN = {"namespace": "ops-admin", "labels": {"app": "admin-console"}}

# rule id -> (model, event that fires it, a near miss that does not)
FIRES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "nonprod-to-pci": (
        "retail_store.yaml",
        event("10.60.1.1", "10.50.20.5", 8080, MONDAY),
        event("10.50.10.5", "10.50.20.5", 8080, MONDAY),
    ),
    "internet-to-tier0": (
        "tiers.yaml",
        event("203.0.113.5", "10.0.0.10", 389, MONDAY),
        event("203.0.113.5", "10.9.0.5", 443, MONDAY),
    ),
    "tenant-crossing": (
        "multi_tenant_saas.yaml",
        event(ACME, GLOBEX, 8080, MONDAY),
        event(ACME, ACME, 8080, MONDAY),
    ),
    "admin-cross-tenant-audit": (
        "multi_tenant_saas.yaml",
        event(ADMIN, ACME, 22, MONDAY),
        event(ACME, ACME, 22, MONDAY),
    ),
    "violation-into-restricted": (
        "retail_store.yaml",
        event("10.50.10.5", "10.50.30.5", 5432, MONDAY),
        event("10.50.20.5", "10.50.30.5", 5432, MONDAY),
    ),
    "restricted-to-internet": (
        "retail_store.yaml",
        event("10.50.30.5", "198.51.100.7", 443, MONDAY),
        event("10.60.0.5", "198.51.100.7", 443, MONDAY),
    ),
}


def test_every_rule_has_a_firing_case() -> None:
    assert set(FIRES) == {r.id for r in ALL_RULES}


@pytest.mark.parametrize("rule_id", sorted(FIRES))
def test_rule_fires_and_near_miss_does_not(rule_id: str) -> None:
    name, hit, miss = FIRES[rule_id]
    model = example(name)
    eng = Engine(model, DetectorSettings(), ALL_RULES)
    _, alert = eng.process(hit, model.place(hit), "t:1")
    assert rule_id in hit["segmentation"]["detections"], rule_id
    assert (alert is not None and alert.rule_id == rule_id) or rule_id in hit["segmentation"][
        "detections"
    ]
    eng.process(miss, model.place(miss), "t:2")
    assert rule_id not in miss["segmentation"].get("detections", []), rule_id


def test_a_bad_rule_file_is_reported_with_file_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "bad_rule.yaml").write_text(
        "id: bad-rule\ntitle: x\nseverity: urgent\ndescription: d\nrunbook: https://x\n"
        "when:\n  - {field: segmentation.verdict, equals: violation, in: [a]}\n"
    )
    with pytest.raises(ModelError) as caught:
        load_rules(tmp_path)
    text = str(caught.value)
    assert "bad_rule.yaml:3: severity" in text
    assert "bad_rule.yaml:7: when[0]" in text and "exactly one operator" in text


def test_risk_combines_verdict_evidence_and_sensitivity_with_reasons() -> None:
    score, reasons = risk(
        "violation",
        [Evidence("new_path", 45, "new path a -> b tcp/22", "path/tcp/22")],
        "restricted",
        False,
        [],
    )
    assert score == round((1 - 0.45 * 0.55) * 100 * 1.15) == 87
    assert reasons == [
        "verdict violation: the network let through a flow the model forbids",
        "new path a -> b tcp/22",
    ]
    assert risk("allowed", [], "low", False, []) == (0, [])
    assert risk("violation", [], "restricted", True, [])[0] == round(55 * 1.15 * 0.7)


def test_alerts_group_by_finding_and_initiator_and_send_updates_at_most_every_interval() -> None:
    model = example("retail_store.yaml")
    eng = Engine(model, DetectorSettings(alert_update_seconds=120), ALL_RULES)
    sent = []
    for i in range(5):
        e = event("10.50.10.5", "10.50.30.5", 5432 + i, MONDAY + i * 60, sport=40000 + i)
        sent.append(eng.process(e, eng.place(e), f"f:{i}")[1])
    assert sent[0] is not None and sent[1] is None and sent[2] is sent[0]
    assert sent[3] is None and sent[4] is sent[0]  # the ports differ: one alert all the same
    (alert,) = eng.book.alerts.values()
    assert alert.count == 5 and alert.sample == [f"f:{i}" for i in range(5)]
    assert list(alert.services) == [f"tcp/{5432 + i}" for i in range(5)]
    assert list(alert.hosts) == ["10.50.30.5"]
    assert eng.flush() == []  # the last change was sent
    late = event("10.50.10.5", "10.50.30.7", 5432, MONDAY + 4 * 60 + 30)
    assert eng.process(late, eng.place(late), "f:5")[1] is None
    assert eng.flush() == [alert] and alert.count == 6 and eng.flush() == []
    other = event("10.50.10.6", "10.50.30.5", 5432, MONDAY + 300)  # another initiator
    eng.process(other, eng.place(other), "f:6")
    assert len(eng.book.alerts) == 2


def test_a_rule_file_with_suppress_is_told_what_replaced_it(tmp_path: Path) -> None:
    (tmp_path / "old_rule.yaml").write_text(
        "id: old-rule\ntitle: x\nseverity: high\ndescription: d\nrunbook: https://x\n"
        "suppress: 1h\nwhen:\n  - {field: segmentation.verdict, equals: violation}\n"
    )
    with pytest.raises(ModelError, match=r"suppress is no longer used.*remove it"):
        load_rules(tmp_path)


def test_alert_severity_keeps_critical_for_boundaries() -> None:
    from detector.detect.alerts import severity_of

    assert severity_of(100, True) == "critical" and severity_of(100, False) == "high"
    assert [severity_of(s, False) for s in (80, 65, 30)] == ["high", "medium", "low"]


def test_alert_document_is_ecs_shaped() -> None:
    model = example("retail_store.yaml")
    eng = Engine(model, DetectorSettings(), ALL_RULES)
    e = event("10.50.30.5", "198.51.100.7", 443, MONDAY)
    _, alert = eng.process(e, model.place(e), "f:1")
    assert alert is not None
    doc = alert.to_document()
    assert doc["event"]["kind"] == "alert" and doc["event"]["risk_score"] == alert.score >= 60
    assert doc["rule"] == {
        "id": "restricted-to-internet",
        "name": alert.rule_name,
        "reference": "https://runbooks.segwatch.dev/detections/restricted-to-internet",
    }
    assert doc["event"]["severity"] == 4  # critical
    assert doc["segwatch"]["alert"]["sample_event_ids"] == ["f:1"]
    assert doc["segwatch"]["alert"]["quarantine"] == {
        "host": "10.50.30.5", "to": "aws-sg",
        "command": "segwatch model quarantine -m MODEL --host 10.50.30.5 --to aws-sg "
                   "-o quarantine-10.50.30.5",
    }  # fmt: skip
    assert (
        e["segmentation"]["risk_score"] == alert.score and e["event"]["risk_score"] == alert.score
    )
