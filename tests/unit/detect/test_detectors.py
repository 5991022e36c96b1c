"""Each detector on its own: what it finds, what it lets pass, its state."""

from __future__ import annotations

import json

from detector.detect import DetectorSettings
from detector.detect.detectors import (
    NewPathDetector,
    OddPortDetector,
    OffHoursDetector,
    VolumeDetector,
)
from detector.detect.scans import ScanDetector

from .conftest import MONDAY, ctx, event, example

RETAIL = example("retail_store.yaml")
APP, DB, DMZ, POS = "10.50.20.5", "10.50.30.5", "10.50.10.5", "10.50.2.5"
DAY = 86_400


def learn(detector, events) -> None:
    for e in events:
        assert detector.observe(ctx(RETAIL, e)) == []


def test_odd_port_never_seen_after_learning_with_numbers() -> None:
    d = OddPortDetector(
        DetectorSettings(learning_seconds=DAY, rare_port_min_flows=100, rare_port_threshold=0.01)
    )
    learn(d, [event(APP, DB, 5432, MONDAY + i * 60) for i in range(600)])
    (found,) = d.observe(ctx(RETAIL, event(APP, DB, 4444, MONDAY + DAY + 5)))
    assert found.key == "port/4444" and found.score == 50
    assert found.reason == "port 4444 never seen for zone db in 24 h (600 flows)"
    assert d.observe(ctx(RETAIL, event(APP, DB, 5432, MONDAY + DAY + 6))) == []
    assert d.observe(ctx(RETAIL, event(APP, DB, 443, MONDAY + DAY + 7))) == []  # well known
    rare = d.observe(ctx(RETAIL, event(APP, DB, 4444, MONDAY + DAY + 8)))
    assert rare and rare[0].reason.startswith(
        "port 4444 rare for zone db: 1 of 603 flows in 24 h (0.166%)"
    )


def test_odd_port_is_silent_while_learning_and_for_replies_and_denials() -> None:
    d = OddPortDetector(DetectorSettings(learning_seconds=DAY, rare_port_min_flows=10))
    learn(d, [event(APP, DB, 5432, MONDAY + i) for i in range(50)])
    assert d.observe(ctx(RETAIL, event(APP, DB, 4444, MONDAY + 100))) == []  # still learning
    assert d.observe(ctx(RETAIL, event(DB, APP, 45000, MONDAY + DAY + 1, sport=5432))) == []
    assert d.observe(ctx(RETAIL, event(APP, DB, 4445, MONDAY + DAY + 2, denied=True))) == []


def test_off_hours_uses_declared_hours_and_the_learned_profile() -> None:
    d = OffHoursDetector(DetectorSettings(learning_seconds=DAY), RETAIL)
    # app -> db all day on Monday and Tuesday, nothing at night
    learn(d, [event(APP, DB, 5432, MONDAY + 14 * 3600 + i * 30) for i in range(2000)])
    night = MONDAY + 2 * DAY + 8 * 3600 + 12 * 60  # Wednesday 08:12 UTC = 02:12 in Chicago
    (found,) = d.observe(ctx(RETAIL, event(APP, DB, 5432, night)))
    assert found.reason.startswith(
        "02:12 local (America/Chicago), zone db hours 06:00-22:00 mon-fri;"
    )
    assert "0.00% of zone app's traffic falls in this hour of the week" in found.reason
    day = MONDAY + 2 * DAY + 18 * 3600  # 12:00 in Chicago
    assert d.observe(ctx(RETAIL, event(APP, DB, 5432, day))) == []


def test_off_hours_is_quiet_for_an_hour_the_source_always_uses() -> None:
    d = OffHoursDetector(DetectorSettings(learning_seconds=3600, offhours_min_share=0.01), RETAIL)
    for day in range(8):  # a nightly backup, every night
        for i in range(20):
            d.observe(ctx(RETAIL, event(APP, DB, 5432, MONDAY + day * DAY + 8 * 3600 + i)))
    assert d.observe(ctx(RETAIL, event(APP, DB, 5432, MONDAY + 8 * DAY + 8 * 3600 + 30))) == []


def test_new_path_after_learning_expiry_and_bounds() -> None:
    s = DetectorSettings(learning_seconds=DAY, path_ttl_seconds=7 * DAY, max_paths=100)
    d = NewPathDetector(s)
    learn(d, [event(DMZ, APP, 8080, MONDAY + i) for i in range(10)])
    (found,) = d.observe(ctx(RETAIL, event(APP, DB, 6379, MONDAY + DAY + 1)))
    assert found.reason == "new path app -> db tcp/6379 (first seen; learning ended 2026-11-03)"
    assert d.observe(ctx(RETAIL, event(APP, DB, 6379, MONDAY + DAY + 2))) == []
    again = d.observe(ctx(RETAIL, event(APP, DB, 6379, MONDAY + 9 * DAY)))
    assert again and "unseen for 8 days" in again[0].reason
    for port in range(1000, 1300):
        d.observe(ctx(RETAIL, event(APP, DB, port, MONDAY + 10 * DAY + port)))
    assert len(d.paths) <= 100


def test_pivoting_into_several_zones() -> None:
    d = NewPathDetector(DetectorSettings(learning_seconds=60, pivot_zones=3))
    learn(d, [event(DMZ, APP, 8080, MONDAY)])
    found = []
    for i, dst in enumerate(["10.50.20.9", "10.50.30.9", "10.50.2.9"]):
        found += d.observe(ctx(RETAIL, event("10.50.3.3", dst, 22, MONDAY + 3600 + i * 60)))
    pivots = [f for f in found if f.detector == "pivot"]
    assert (
        pivots
        and pivots[0].reason == "10.50.3.3 opened new paths into 3 zones in 2 min: app, db, pos"
    )


def test_volume() -> None:
    d = VolumeDetector(DetectorSettings(bulk_bytes=1_000_000, learning_seconds=0))
    (found,) = d.observe(ctx(RETAIL, event(DB, "198.51.100.9", 443, MONDAY, nbytes=250_000_000)))
    assert found.reason == "bulk transfer: 250 MB in one flow from zone db to zone internet"
    assert d.observe(ctx(RETAIL, event(DB, "198.51.100.9", 443, MONDAY, nbytes=10))) == []


def test_state_survives_a_restart_through_json() -> None:
    s = DetectorSettings(learning_seconds=60, rare_port_min_flows=5)
    detectors = [
        OddPortDetector(s),
        OffHoursDetector(s, RETAIL),
        NewPathDetector(s),
        ScanDetector(s),
        VolumeDetector(s),
    ]
    events = [event(APP, DB, 5432, MONDAY + i) for i in range(100)]
    events += [event(DMZ, DB, 2000 + i, MONDAY + 200 + i) for i in range(30)]
    probe = event(APP, DB, 7777, MONDAY + 400)
    for d in detectors:
        for e in events:
            d.observe(ctx(RETAIL, e))
        fresh = type(d)(s, RETAIL) if isinstance(d, OffHoursDetector) else type(d)(s)
        fresh.load(json.loads(json.dumps(d.state())))
        assert fresh.observe(ctx(RETAIL, probe)) == d.observe(ctx(RETAIL, probe)), d.name
