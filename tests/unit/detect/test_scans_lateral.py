"""Scans, sweeps, blocked series, lateral movement and DNS volume: found at any rate
and size, quiet while learning, quiet for what the learning period showed usual."""

from __future__ import annotations

import json

import pytest

from detector.detect import DetectorSettings, Engine
from detector.detect.detectors import OffHoursDetector
from detector.detect.lateral import DnsDetector, LateralMovementDetector
from detector.detect.scans import BlockedSeriesDetector, ScanDetector

from .conftest import MONDAY, ctx, event, example

RETAIL = example("retail_store.yaml")
DMZ, POS, LAN, DB = "10.50.10.5", "10.50.2.5", "10.50.3.", "10.50.30.5"
DAY = 86_400
AWAKE = DetectorSettings(learning_seconds=0)


def run(detector, events) -> list:
    return [f for e in events for f in detector.observe(ctx(RETAIL, e))]


@pytest.mark.parametrize("every", [0.2, 2.0, 30.0, 75.0, 150.0])
def test_a_vertical_scan_is_found_at_any_rate(every: float) -> None:
    """40 ports of one host, 9 in 10 rejected, from 8 seconds to 100 minutes in all."""
    d = ScanDetector(AWAKE)
    found = run(d, [event(DMZ, POS, 20 + i * 7, MONDAY + i * every, denied=i % 10 != 0)
                    for i in range(40)])  # fmt: skip
    vertical = [f for f in found if f.key == "vertical"]
    assert len(vertical) == 21  # from the 20th port on
    assert vertical[-1].reason.startswith(f"vertical scan of {POS} by {DMZ}: 40 ports in ")
    assert vertical[-1].reason.endswith(", 36 rejected")


def test_a_client_of_a_few_services_and_rpc_dynamic_ports_is_no_scan() -> None:
    d = ScanDetector(AWAKE)
    usual = [event(DMZ, POS, port, MONDAY + i * 60) for i in range(300) for port in (443, 8443)]
    rpc = [event(DMZ, POS, 49152 + i, MONDAY + 20_000 + i) for i in range(200)]
    assert run(d, usual + rpc) == []


def test_ports_spread_wider_than_the_slow_window_are_no_scan() -> None:
    d = ScanDetector(AWAKE)  # 40 ports over 40 hours: never 20 within 6 h
    assert run(d, [event(DMZ, POS, 100 + i, MONDAY + i * 3600) for i in range(40)]) == []


def test_horizontal_sweeps_fast_and_slow_and_denied_bursts() -> None:
    s = DetectorSettings(learning_seconds=0, horizontal_scan_hosts=20, deny_burst=15,
                         slow_scan_hosts=30)  # fmt: skip
    d = ScanDetector(s)
    fast = run(d, [event("10.50.3.7", f"10.50.30.{i + 10}", 445, MONDAY + 100 + i, denied=True)
                   for i in range(25)])  # fmt: skip
    assert any(f.key == "horizontal" and "25 rejected" not in f.reason for f in fast)
    assert any(f.key == "denied" for f in fast)
    slow = run(d, [event("10.50.3.8", f"10.50.20.{i + 10}", 139, MONDAY + 1000 + i * 500)
                   for i in range(35)])  # 35 hosts in ~5 h  # fmt: skip
    assert any(f.key == "slow" and f.reason.endswith("(slow sweep)") for f in slow)
    spread = ScanDetector(s)  # the same 35 hosts over 17 h never fill the 6 h window
    assert not run(spread, [event("10.50.3.8", f"10.50.20.{i + 10}", 139, MONDAY + i * 1800)
                            for i in range(35)])  # fmt: skip


def test_sources_that_scanned_while_learning_are_known_scanners() -> None:
    d = ScanDetector(DetectorSettings(learning_seconds=DAY))
    monitor = [event(DMZ, POS, 20 + i, MONDAY + i) for i in range(30)]
    assert run(d, monitor) == []  # learning: quiet, and remembered
    again = [event(DMZ, POS, 20 + i, MONDAY + 2 * DAY + i) for i in range(30)]
    assert run(d, again) == []
    stranger = [event("10.50.10.6", POS, 20 + i, MONDAY + 2 * DAY + i) for i in range(30)]
    assert any(f.key == "vertical" for f in run(d, stranger))


@pytest.mark.parametrize(("attempts", "every"), [(12, 25.0), (30, 10.0), (60, 2.0)])
def test_a_series_of_blocked_attempts_into_a_restricted_zone(attempts: int, every: float) -> None:
    d = BlockedSeriesDetector(AWAKE, RETAIL)
    found = run(d, [event("10.50.3.9", f"10.50.2.{5 + i % 3}", 22, MONDAY + i * every,
                          denied=True) for i in range(attempts)])  # fmt: skip
    assert len(found) == attempts - 9
    assert found[-1].reason.startswith(
        f"blocked series: {min(attempts, 40)} blocked attempts from 10.50.3.9 into pos in "
    )
    assert found[-1].reason.endswith("(tcp/22)")


def test_blocked_attempts_into_a_low_zone_or_spread_over_hours_are_no_series() -> None:
    d = BlockedSeriesDetector(AWAKE, RETAIL)
    low = [event("10.50.3.9", "10.50.10.7", 22, MONDAY + i, denied=True) for i in range(40)]
    slow = [event("10.50.3.9", POS, 22, MONDAY + 10_000 + i * 300, denied=True) for i in range(40)]
    assert run(d, low + slow) == []


def _lateral(settings: DetectorSettings) -> tuple[LateralMovementDetector, OffHoursDetector]:
    hours = OffHoursDetector(settings, RETAIL)
    return LateralMovementDetector(settings, hours), hours


def _daytime_profile(hours: OffHoursDetector) -> None:
    for day in range(7):  # the store LAN works 09:00-17:00 UTC
        for i in range(200):
            hours.observe(ctx(RETAIL, event(LAN + "20", "10.50.20.5", 443,
                                            MONDAY + day * DAY + 9 * 3600 + i * 144)))  # fmt: skip


@pytest.mark.parametrize(("peers", "every"), [(12, 20.0), (15, 100.0), (40, 5.0)])
def test_an_intra_zone_rdp_sweep_at_night(peers: int, every: float) -> None:
    detector, hours = _lateral(AWAKE)
    _daytime_profile(hours)
    night = MONDAY + 8 * DAY + 2 * 3600
    sweep = [event(LAN + "7", f"{LAN}{30 + i}", 3389, night + i * every, denied=i % 4 == 0)
             for i in range(peers)]  # fmt: skip
    found = [f for e in sweep for f in detector.observe(ctx(RETAIL, e))]
    assert len(found) == peers - 9
    assert found[-1].score == 95
    assert found[-1].reason.startswith(f"lateral movement in zone store-lan: {LAN}7 reached "
                                       f"{peers} of its peers on tcp/3389 in ")  # fmt: skip
    assert found[-1].reason.endswith(", off-hours")
    day = MONDAY + 8 * DAY + 12 * 3600
    daytime = [event(LAN + "8", f"{LAN}{30 + i}", 445, day + i * 10) for i in range(12)]
    assert [f.score for e in daytime for f in detector.observe(ctx(RETAIL, e))][-1] == 85


def test_lateral_movement_needs_one_zone_admin_services_and_a_stranger() -> None:
    detector, _ = _lateral(DetectorSettings(learning_seconds=DAY))
    jump = [event(LAN + "2", f"{LAN}{30 + i}", 22, MONDAY + i * 30) for i in range(20)]
    assert run(detector, jump) == []  # learning: the jump host is remembered
    later = MONDAY + 2 * DAY
    assert (
        run(detector, [event(LAN + "2", f"{LAN}{30 + i}", 22, later + i) for i in range(20)]) == []
    )
    web = [event(LAN + "3", f"{LAN}{30 + i}", 443, later + i) for i in range(20)]
    across = [event(LAN + "4", f"10.50.20.{30 + i}", 22, later + i) for i in range(20)]
    assert run(detector, web + across) == []


def test_dns_volume_to_a_resolver_outside_the_dns_zone() -> None:
    d = DnsDetector(AWAKE, RETAIL)
    inside = [event(LAN + "5", "10.50.0.2", 53, MONDAY + i, proto="udp") for i in range(500)]
    assert run(d, inside) == []
    out = [event(LAN + "6", "8.8.8.8", 53, MONDAY + i * 3, proto="udp") for i in range(120)]
    found = run(d, out)
    assert len(found) == 21
    assert found[-1].reason.startswith(f"unusual DNS volume: 120 flows (0.1 MB) from {LAN}6 in ")
    assert found[-1].reason.endswith("to resolvers outside zone dns: 8.8.8.8")
    big = [event(LAN + "7", "1.1.1.1", 53, MONDAY + i * 30, proto="udp", nbytes=300_000)
           for i in range(8)]  # fmt: skip
    assert len(run(d, big)) == 2  # 2 MB in the window from the 7th flow on


def test_every_detector_is_quiet_while_learning() -> None:
    eng = Engine(RETAIL, DetectorSettings(learning_seconds=DAY))
    attacks = [event(DMZ, POS, 20 + i, MONDAY + 60 + i) for i in range(100)]
    attacks += [event("10.50.3.9", POS, 22, MONDAY + 300 + i, denied=True) for i in range(40)]
    attacks += [event(LAN + "7", f"{LAN}{30 + i}", 3389, MONDAY + 600 + i) for i in range(30)]
    attacks += [event(LAN + "6", "8.8.8.8", 53, MONDAY + 900 + i, proto="udp")
                for i in range(200)]  # fmt: skip
    attacks += [event(DB, "198.51.100.9", 443, MONDAY + 1200, nbytes=300_000_000)]
    for e in attacks:
        eng.process(e, eng.place(e), "x")
        assert "anomalies" not in e["segmentation"], e["segmentation"]


def test_the_new_detectors_state_survives_json() -> None:
    eng = Engine(RETAIL, AWAKE)
    for i in range(30):
        for e in (event(DMZ, POS, 20 + i, MONDAY + i, denied=True),
                  event(LAN + "7", f"{LAN}{30 + i}", 3389, MONDAY + i),
                  event(LAN + "6", "8.8.8.8", 53, MONDAY + i, proto="udp")):  # fmt: skip
            eng.process(e, eng.place(e), "x")
    fresh = Engine(RETAIL, AWAKE)
    fresh.load(json.loads(json.dumps(eng.state())))
    probe = [event(DMZ, POS, 60, MONDAY + 40, denied=True), event(LAN + "7", LAN + "90", 3389,
             MONDAY + 40), event(LAN + "6", "8.8.8.8", 53, MONDAY + 40, proto="udp")]  # fmt: skip
    for e in probe:
        a, b = json.loads(json.dumps(e)), json.loads(json.dumps(e))
        assert eng.process(a, eng.place(a), "p")[0] == fresh.process(b, fresh.place(b), "p")[0]
        assert a["segmentation"] == b["segmentation"]


def test_a_client_reaching_many_internet_hosts_on_443_is_no_sweep() -> None:
    d = ScanDetector(AWAKE)
    browsing = [event("10.60.0.10", f"203.0.113.{1 + i}", 443, MONDAY + i) for i in range(120)]
    assert run(d, browsing) == []
