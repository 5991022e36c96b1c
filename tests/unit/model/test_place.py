"""Placement: lookups, rule matching, verdicts, reasons."""

from __future__ import annotations

from detector.model import enrich

from .conftest import HEAD, compiled, flow

BASE = (
    HEAD
    + """zones:
  - {name: vpc, cidrs: [10.0.0.0/16, 'fd00::/48']}
  - {name: app, cidrs: [10.0.2.0/24, 'fd00:0:0:2::/64'], within: vpc}
  - {name: db, cidrs: [10.0.3.0/24], within: vpc, mode: monitor}
  - name: web-pods
    kubernetes:
      - {namespaces: [shop], podSelector: {matchLabels: {app: web}}}
  - name: shop-pods
    kubernetes:
      - {namespaces: [shop]}
flows:
  - {id: app-db, from: app, to: db, ports: [5432]}
  - {id: temp, from: vpc, to: db, ports: [22], expires: 2026-06-30}
  - {id: ping, from: '*', to: app, protocol: icmp}
  - {id: web-app, from: web-pods, to: app, ports: ['8000-8999']}
"""
)


def test_longest_prefix_wins_for_ipv4_and_ipv6() -> None:
    model = compiled(BASE)
    assert model.zone_of_ip("10.0.2.9") == "app"
    assert model.zone_of_ip("10.0.9.9") == "vpc"
    assert model.zone_of_ip("fd00:0:0:2::9") == "app"
    assert model.zone_of_ip("fd00:0:0:7::9") == "vpc"
    assert model.zone_of_ip("192.168.1.1") is None  # private, in no zone
    assert model.zone_of_ip("8.8.8.8") == "internet"
    assert model.zone_of_ip("not-an-ip") is None


def test_most_specific_selector_wins_and_falls_back_to_the_address() -> None:
    model = compiled(BASE)
    web = {"kubernetes": {"namespace": "shop", "labels": {"app": "web"}}, "ip": "10.0.2.5"}
    other = {"kubernetes": {"namespace": "shop", "labels": {"app": "cart"}}, "ip": "10.0.2.5"}
    outside = {"kubernetes": {"namespace": "misc", "labels": {}}, "ip": "10.0.2.5"}
    assert model.zone_of(web) == "web-pods"
    assert model.zone_of(other) == "shop-pods"
    assert model.zone_of(outside) == "app"


def test_port_ranges_protocols_and_wildcards() -> None:
    model = compiled(BASE)
    web = {"namespace": "shop", "labels": {"app": "web"}}
    assert model.place(flow(web, "10.0.2.5", 8443)).verdict == "allowed"
    assert model.place(flow(web, "10.0.2.5", 9000)).verdict == "violation"
    assert model.place(flow("10.0.3.3", "10.0.2.5", proto="icmp")).rule_id == "ping"
    assert model.place(flow("10.0.2.5", "10.0.3.3", 5432, proto="udp")).verdict == "violation"


def test_an_expired_exception_stops_allowing_at_event_time() -> None:
    model = compiled(BASE)
    before = model.place(flow("10.0.9.9", "10.0.3.3", 22, at="2026-06-30T12:00:00.000Z"))
    after = model.place(flow("10.0.9.9", "10.0.3.3", 22, at="2026-07-01T00:00:00.000Z"))
    assert (before.verdict, before.rule_id) == ("allowed", "temp")
    assert after.verdict == "violation"
    assert after.reason == "flow temp would allow vpc -> db tcp/22 but expired 2026-06-30 23:59 UTC"


def test_replies_are_allowed_and_only_replies() -> None:
    model = compiled(BASE)
    reply = model.place(flow("10.0.3.3", "10.0.2.5", 51000, sport=5432))
    assert (reply.verdict, reply.rule_id, reply.reply) == ("allowed", "app-db", True)
    assert (reply.source_zone, reply.destination_zone, reply.service) == ("app", "db", "tcp/5432")
    assert reply.reason == "reply on a connection flow app-db allows"
    assert model.place(flow("10.0.3.3", "10.0.2.5", 5432, sport=51000)).verdict == "violation"


def test_the_reply_of_a_forbidden_connection_is_judged_as_that_connection() -> None:
    model = compiled(BASE)
    probe = model.place(flow("10.0.9.5", "10.0.3.8", 5432, sport=61103))
    answer = model.place(flow("10.0.3.8", "10.0.9.5", 61103, sport=5432))
    assert (probe.source_zone, probe.destination_zone, probe.verdict) == ("vpc", "db", "violation")
    assert (answer.source_zone, answer.destination_zone, answer.verdict, answer.reply) == (
        "vpc", "db", "violation", True,
    )  # fmt: skip
    assert answer.reason == (
        "reply on 10.0.9.5 -> 10.0.3.8 tcp/5432, which no flow allows "
        "(no flow allows vpc -> db tcp/5432 (default deny))"
    )


def test_four_verdicts_and_unmanaged() -> None:
    model = compiled(BASE)
    assert model.place(flow("10.0.2.5", "10.0.3.3", 5432)).verdict == "allowed"
    assert (
        model.place(flow("10.0.2.5", "10.0.3.3", 5432, denied=True)).verdict == "over_restrictive"
    )
    assert model.place(flow("10.0.2.5", "10.0.3.3", 6379)).verdict == "violation"
    assert model.place(flow("10.0.2.5", "10.0.3.3", 6379, denied=True)).verdict == "blocked_attempt"
    unmanaged = model.place(flow("192.168.7.7", "10.0.3.3", 5432))
    assert (unmanaged.verdict, unmanaged.source_zone, unmanaged.destination_zone) == (
        "unmanaged",
        None,
        "db",
    )
    assert unmanaged.reason == "source 192.168.7.7 is in no zone"


def test_monitor_mode_and_model_version_are_carried() -> None:
    model = compiled(BASE)
    placement = model.place(flow("10.0.2.5", "10.0.3.3", 6379))
    assert placement.mode == "monitor"
    assert placement.model_version == model.version
    assert model.place(flow("10.0.2.5", "10.0.2.6", 1)).mode == "enforce"


def test_intra_zone_default_allow_and_deny() -> None:
    assert compiled(BASE).place(flow("10.0.2.5", "10.0.2.6", 1)).verdict == "allowed"
    strict = compiled(BASE.replace("zones:", "defaults: {intra_zone: deny}\nzones:", 1))
    assert strict.place(flow("10.0.2.5", "10.0.2.6", 1)).verdict == "violation"


def test_default_allow_allows_what_no_flow_names() -> None:
    model = compiled(BASE.replace("zones:", "defaults: {action: allow}\nzones:", 1))
    placement = model.place(flow("10.0.2.5", "10.0.3.3", 6379))
    assert (placement.verdict, placement.reason) == (
        "allowed",
        "no flow matches; default action allow",
    )


def test_a_log_that_does_not_say_is_taken_as_passed() -> None:
    event = flow("10.0.2.5", "10.0.3.3", 6379)
    event["event"] = {"kind": "event", "type": ["connection"], "outcome": "unknown"}
    assert compiled(BASE).place(event).verdict == "violation"


def test_enrich_writes_the_segmentation_fields() -> None:
    model = compiled(BASE)
    event = enrich(
        flow("10.0.2.5", "10.0.3.3", 5432), model.place(flow("10.0.2.5", "10.0.3.3", 5432))
    )
    assert event["segmentation"] == {
        "source_zone": "app", "destination_zone": "db", "verdict": "allowed",
        "reason": "flow app-db allows it", "rule_id": "app-db",
        "model_version": model.version, "mode": "monitor", "service": "tcp/5432",
        "initiator": "source", "initiator_evidence": "model", "reply": False,
    }  # fmt: skip


def test_the_internet_pseudo_zone_can_be_switched_off() -> None:
    model = compiled(BASE.replace("zones:", "defaults: {internet: false}\nzones:", 1))
    assert model.place(flow("8.8.8.8", "10.0.2.5", 443)).verdict == "unmanaged"


def test_lookups_are_cached_but_bounded() -> None:
    from detector.model import compile as compile_module

    model = compiled(BASE)
    for i in range(compile_module._CACHE_LIMIT + 10):
        model.zone_of_ip(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    assert len(model._ip_cache) <= compile_module._CACHE_LIMIT


def test_cached_placements_keep_each_event_s_own_addresses_in_the_reason() -> None:
    model = compiled(BASE)
    first = model.place(flow("192.168.7.7", "10.0.3.3", 5432))
    second = model.place(flow("192.168.7.8", "10.0.3.3", 5432))
    assert (first.reason, second.reason) == (
        "source 192.168.7.7 is in no zone", "source 192.168.7.8 is in no zone")  # fmt: skip
    a = model.place(flow("10.0.3.8", "10.0.9.5", 61103, sport=5432))
    b = model.place(flow("10.0.3.9", "10.0.9.6", 61104, sport=5432))
    assert "10.0.9.5 -> 10.0.3.8" in a.reason and "10.0.9.6 -> 10.0.3.9" in b.reason
