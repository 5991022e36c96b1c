"""Incidents: one per attacker and campaign, pivot chains, steps, severity, paging."""

from __future__ import annotations

import json
from typing import Any

from detector.analyze import Analysis
from detector.detect import DetectorSettings, Engine
from detector.events import parse_stamp
from detector.incidents import IncidentBook, IncidentSettings

from .detect.conftest import MONDAY, event, example, stamp

RETAIL = example("retail_store.yaml")


def alert(fp: str, src: str, src_zone: str, dst_zone: str, hosts: list[str], at: float, *,
          count: int = 3, denied: int = 0, severity: str = "high", score: int = 80,
          sensitivity: str = "high", crosses: tuple[str, ...] = (), until: float | None = None,
          rule: str = "verdict.violation") -> dict[str, Any]:  # fmt: skip
    """An alert document as the alert book writes it."""
    last = until if until is not None else at
    return {
        "event": {"risk_score": score},
        "rule": {"id": rule, "name": rule},
        "message": f"{rule} {src} -> {dst_zone}",
        "segwatch": {"alert": {
            "fingerprint": fp, "severity": severity, "count": count, "denied": denied,
            "first_seen": stamp(at), "last_seen": stamp(last), "last_activity": stamp(last),
            "headline": f"{rule} of {hosts[0]}", "hosts": len(hosts), "services": ["tcp/22"],
            "quarantine": {"host": src, "to": "aws-sg"},
        }},
        "segmentation": {"source_zone": src_zone, "destination_zone": dst_zone,
                         "destination_sensitivity": sensitivity, "crosses": list(crosses)},
        "source": {"ip": src},
        "destination": {"ip": hosts},
    }  # fmt: skip


def test_a_200_port_scan_is_one_incident_with_one_step() -> None:
    run = Analysis(RETAIL, Engine(RETAIL, DetectorSettings(learning_seconds=0)))
    for i in range(200):  # 40 s, 9 in 10 refused
        e = event("10.50.10.1", "10.50.2.1", 1 + i, MONDAY + i * 0.2, denied=i % 10 != 0)
        run.process(e, f"s:{i}")
    run.finish()
    (doc,) = run.incident_documents()
    incident = doc["segwatch"]["incident"]
    assert incident["attacker"] == "10.50.10.1" and incident["path"] == ["dmz", "pos"]
    (step,) = incident["steps"]
    assert step["finding"] == "scan.vertical"
    assert step["description"] == (
        "vertical scan of 10.50.2.1 by 10.50.10.1: 200 ports in 40 s, 180 rejected"
    )
    assert (step["verdict"], step["to_hosts"]) == ("reached", ["10.50.2.1"])
    assert incident["severity"] == "critical"  # it got into a restricted zone
    assert [p.action for p in run.pages] == ["trigger"]  # its updates are due later
    assert incident["most_sensitive_zone"] == "pos"
    assert incident["quarantine"]["command"].startswith(
        "segwatch model quarantine -m MODEL --host 10.50.10.1 --to "
    )  # the attacker's, for a person to apply


def test_a_pivot_chain_is_one_incident_with_its_path_and_time_to_the_restricted_zone() -> None:
    book = IncidentBook()
    t = MONDAY + 10_000
    pages = book.observe(alert("a1", "10.50.1.4", "hvac-vendor", "store-lan", ["10.50.3.9"], t,
                               sensitivity="medium", severity="medium", score=64))  # fmt: skip
    pages += book.observe(alert("b1", "10.50.3.9", "store-lan", "pos", ["10.50.2.1", "10.50.2.2"],
                                t + 1800, sensitivity="restricted", severity="high"))  # fmt: skip
    assert len(book.open) == 1
    (doc,) = book.documents()
    incident = doc["segwatch"]["incident"]
    assert incident["path"] == ["hvac-vendor", "store-lan", "pos"]
    assert [s["from_ip"] for s in incident["steps"]] == ["10.50.1.4", "10.50.3.9"]
    assert incident["hosts"] == ["10.50.1.4", "10.50.3.9"]
    assert incident["time_to_most_sensitive_s"] == 1800 and incident["severity"] == "critical"
    assert incident["quarantine"]["host"] == "10.50.1.4"  # the attacker, not the pivot
    assert [(p.action, p.why, p.page) for p in pages] == [
        ("trigger", "opened", True), ("update", "escalated to critical", True)]  # fmt: skip


def test_a_host_reached_only_by_refused_connections_or_long_ago_is_no_pivot() -> None:
    book = IncidentBook(IncidentSettings(gap_seconds=3600))
    t = MONDAY + 10_000
    pages = book.observe(alert("a1", "10.50.1.4", "hvac-vendor", "store-lan", ["10.50.3.9"], t,
                               count=5, denied=5))  # fmt: skip
    pages += book.observe(alert("b1", "10.50.3.9", "store-lan", "pos", ["10.50.2.1"], t + 60))
    pages += book.observe(alert("c1", "10.50.1.5", "hvac-vendor", "store-lan", ["10.50.3.7"],
                                t + 120))  # fmt: skip
    pages += book.observe(alert("d1", "10.50.3.7", "store-lan", "pos", ["10.50.2.1"],
                                t + 3 * 3600))  # fmt: skip
    opened = [
        p.incident["segwatch"]["incident"]["attacker"] for p in pages if p.action == "trigger"
    ]
    assert opened == ["10.50.1.4", "10.50.3.9", "10.50.1.5", "10.50.3.7"]


def test_one_attacker_is_one_incident_per_campaign() -> None:
    book = IncidentBook(IncidentSettings(gap_seconds=3600, resolve_seconds=3600))
    t = MONDAY + 10_000
    for i, zone in enumerate(["app", "db", "pos"]):
        book.observe(alert(f"x{i}", "10.50.3.3", "store-lan", zone, [f"10.50.{i}.1"], t + i * 600))
    assert len(book.open) == 1 and len(next(iter(book.open.values())).steps) == 3
    resolved = book.tick(t + 1200 + 3600)
    assert [(p.action, p.why) for p in resolved] == [("resolve", "resolved after 1 h quiet")]
    assert resolved[0].incident["segwatch"]["incident"]["state"] == "resolved"
    later = book.observe(alert("x9", "10.50.3.3", "store-lan", "app", ["10.50.20.1"], t + 20_000))
    assert [p.action for p in later] == ["trigger"] and len(book.open) == 1


def test_audit_records_are_their_own_incidents_and_never_a_foothold() -> None:
    book = IncidentBook()
    t = MONDAY + 10_000
    book.observe(alert("au", "10.240.3.1", "admin", "tenant-acme", ["10.240.0.1"], t,
                       severity="info", score=0))  # fmt: skip
    book.observe(alert("tc", "10.240.0.1", "tenant-acme", "tenant-globex", ["10.240.1.2"], t + 60,
                       crosses=("tenant",)))  # fmt: skip
    severities = sorted(i.severity for i in book.open.values())
    assert severities == ["critical", "info"]


def test_severity_is_critical_only_across_a_boundary_that_was_crossed() -> None:
    t = MONDAY + 10_000
    for kwargs, expected in [
        ({"sensitivity": "restricted", "denied": 3}, "high"),  # refused: the control held
        ({"sensitivity": "restricted"}, "critical"),
        ({"crosses": ("environment",), "sensitivity": "medium"}, "critical"),
        ({"severity": "critical", "score": 95}, "high"),  # no boundary: high at most
        ({"severity": "medium", "score": 65}, "medium"),
    ]:
        book = IncidentBook()
        book.observe(alert("f", "10.50.3.3", "store-lan", "pos", ["10.50.2.1"], t, **kwargs))
        assert next(iter(book.open.values())).severity == expected, kwargs


def test_updates_at_most_every_interval_and_the_alerts_own_updates_stay_in_its_step() -> None:
    book = IncidentBook(IncidentSettings(update_seconds=900))
    t = MONDAY + 10_000
    actions = []
    for minute in range(0, 60, 5):  # the same alert, updated every 5 minutes
        doc = alert("f", "10.50.3.3", "store-lan", "app", ["10.50.20.1"], t, count=1 + minute,
                    until=t + minute * 60)  # fmt: skip
        actions += [(p.action, p.time - t) for p in book.observe(doc)]
    assert actions == [("trigger", 0), ("update", 900), ("update", 1800), ("update", 2700)]
    (incident,) = book.open.values()
    (step,) = incident.steps.values()
    assert step.to_dict()["count"] == 56
    assert [p.action for p in book.tick(t + 3300 + 900)] == ["update"]  # the last change


def test_activity_after_resolution_opens_nothing() -> None:
    book = IncidentBook()
    t = MONDAY + 10_000
    book.observe(alert("f", "10.50.3.3", "store-lan", "app", ["10.50.20.1"], t, count=4))
    book.tick(t + 4000)
    assert not book.open
    assert book.observe(alert("f", "10.50.3.3", "store-lan", "app", ["10.50.20.1"], t, count=4,
                              until=t + 5000)) == []  # fmt: skip
    assert not book.open


def test_the_incident_book_survives_a_restart_through_json() -> None:
    book = IncidentBook()
    t = MONDAY + 10_000
    book.observe(alert("a1", "10.50.1.4", "hvac-vendor", "store-lan", ["10.50.3.9"], t))
    fresh = IncidentBook()
    fresh.load(json.loads(json.dumps(book.state())))
    nxt = alert("b1", "10.50.3.9", "store-lan", "pos", ["10.50.2.1"], t + 60,
                sensitivity="restricted")  # fmt: skip
    assert [p.action for p in fresh.observe(nxt)] == [p.action for p in book.observe(nxt)]
    assert fresh.documents() == book.documents()
    assert parse_stamp(book.documents()[0]["segwatch"]["incident"]["first_seen"]) == t
