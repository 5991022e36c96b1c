"""Blast radius and model diffs."""

from __future__ import annotations

import pytest

from detector.model.diff import diff_models, diff_on_events
from detector.model.reach import blast_radius

from .conftest import example, flow


def test_blast_radius_of_a_compromised_web_server() -> None:
    radius = blast_radius(example("three_tier_vpc.yaml"), "10.0.1.10")
    assert (radius.start, radius.address) == ("dmz", "10.0.1.10")
    by_zone = {r.zone: r for r in radius.reached}
    assert set(by_zone) == {"app", "db", "vpc-dns"}
    assert by_zone["db"].sensitivity == "restricted"
    assert [(h.source, h.destination, h.service) for h in by_zone["db"].hops] == [
        ("dmz", "app", "tcp/8080"), ("app", "db", "tcp/5432"),
    ]  # fmt: skip
    assert by_zone["app"].direct and not by_zone["db"].direct
    assert radius.reached[0].zone == "db"  # most sensitive first


def test_blast_radius_respects_direction_and_unknown_starts() -> None:
    model = example("tiers.yaml")
    assert {r.zone for r in blast_radius(model, "tier2").reached} == {"tier1", "tier0", "resolvers"}
    assert "tier2" not in {r.zone for r in blast_radius(model, "tier0").reached}
    with pytest.raises(KeyError):
        blast_radius(model, "192.168.50.1")


def test_diff_shows_ports_gained_and_lost_per_zone_pair() -> None:
    old = example("three_tier_vpc.yaml")
    from detector.model import compile_model, model_from_text

    text = old.model.to_yaml().replace("- 8080", "- 8080\n  - 8443").replace("- 5432", "- 6432")
    new = compile_model(model_from_text(text))
    result = diff_models(old, new)
    assert ("dmz", "app", "tcp/8443") in result.allowed
    assert ("app", "db", "tcp/6432") in result.allowed
    assert ("app", "db", "tcp/5432") in result.denied
    assert not result.zones_added and not result.empty
    assert diff_models(old, old).empty


def test_diff_replays_observed_flows() -> None:
    from detector.model import compile_model, model_from_text

    old = example("three_tier_vpc.yaml")
    new = compile_model(model_from_text(old.model.to_yaml().replace("- 5432", "- 6432")))
    events = [flow("10.0.2.20", "10.0.3.30", 5432)] * 3 + [flow("10.0.1.10", "10.0.2.20", 8080)]
    replay = diff_on_events(old, new, events)
    assert replay.events == 4
    assert dict(replay.changes) == {("app", "db", "tcp/5432", "allowed", "violation"): 3}


def test_diff_reports_what_enforcing_a_monitor_zone_blocks() -> None:
    """db in monitor mode: its violations are what enforcing it would block; switching it
    to enforce is a change of its own, and the same flows are then blocked."""
    from detector.model import compile_model, model_from_text

    enforced = example("three_tier_vpc.yaml")
    text = enforced.model.to_yaml()
    assert "- name: db\n" in text
    monitored = compile_model(
        model_from_text(text.replace("- name: db\n", "- name: db\n  mode: monitor\n", 1))
    )
    events = [flow("10.0.1.10", "10.0.3.30", 5432)] * 2 + [flow("10.0.2.20", "10.0.3.30", 5432)]
    staying = diff_on_events(monitored, monitored, events)
    assert dict(staying.would_block) == {("dmz", "db", "tcp/5432"): 2}
    assert not staying.newly_enforced and not staying.changes
    switching = diff_on_events(monitored, enforced, events)
    assert dict(switching.newly_enforced) == {("dmz", "db", "tcp/5432"): 2}
    assert not switching.would_block
    assert diff_models(monitored, enforced).modes_changed == (("db", "monitor", "enforce"),)
    assert not diff_models(monitored, enforced).empty
