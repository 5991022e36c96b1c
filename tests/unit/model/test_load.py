"""Model files: what is accepted, and every error naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from detector.model import ModelError, load_model, model_from_text

from .conftest import HEAD


def problems(text: str) -> list[str]:
    with pytest.raises(ModelError) as caught:
        model_from_text(text, "m.yaml")
    return [str(p) for p in caught.value.problems]


def test_invalid_network_names_file_line_and_field() -> None:
    text = HEAD + "zones:\n  - name: a\n    cidrs:\n      - 10.0.0.0/24\n      - 10.0.300.0/24\n"
    assert problems(text) == ["m.yaml:7: zones[0].cidrs[1]: '10.0.300.0/24' is not a valid network"]


def test_host_bits_set_says_which_network_was_meant() -> None:
    (msg,) = problems(HEAD + "zones:\n  - {name: a, cidrs: [10.0.0.5/24]}\n")
    assert "m.yaml:4: zones[0].cidrs[0]" in msg and "(10.0.0.0/24)" in msg


def test_every_problem_is_reported_not_just_the_first() -> None:
    text = (
        HEAD
        + """zones:
  - name: a
    cidrs: [10.0.0.0/24]
    tags: {sensitivity: secret}
flows:
  - {from: a, to: a, ports: ["90-70"], colour: red}
"""
    )
    found = problems(text)
    assert len(found) == 3, found
    assert any("zones[0].tags.sensitivity" in p and "m.yaml:6" in p for p in found)
    assert any("flows[0].ports[0]: port range 90-70 ends before it starts" in p for p in found)
    assert any("flows[0].colour: unknown field 'colour'" in p for p in found)


def test_unknown_zone_reference_suggests_the_close_name() -> None:
    text = (
        HEAD
        + "zones:\n  - {name: database, cidrs: [10.0.0.0/24]}\nflows:\n  - {from: internet, to: databse, ports: [5432]}\n"
    )
    assert problems(text) == [
        "m.yaml:6: flows[0].to[0]: unknown zone 'databse' (did you mean 'database'?)"
    ]


def test_duplicate_names_and_flow_ids() -> None:
    text = (
        HEAD
        + """zones:
  - {name: a, cidrs: [10.0.0.0/24]}
  - {name: a, cidrs: [10.0.1.0/24]}
flows:
  - {id: x, from: a, to: a}
  - {id: x, from: a, to: a}
"""
    )
    found = problems(text)
    assert "m.yaml:5: zones[1].name: zone 'a' is declared twice (first as zones[0])" in found
    assert any(p.startswith("m.yaml:8: flows[1].id: flow id 'x' is used twice") for p in found)


def test_overlapping_cidrs_are_an_error_unless_nesting_is_declared() -> None:
    zones = (
        "zones:\n  - {name: vpc, cidrs: [10.0.0.0/16]}\n  - {name: db, cidrs: [10.0.3.0/24]%s}\n"
    )
    (msg,) = problems(HEAD + zones % "")
    assert "m.yaml:5: zones[1].cidrs[0]: 10.0.3.0/24 overlaps 10.0.0.0/16 of zone 'vpc'" in msg
    assert "within: vpc" in msg
    model = model_from_text(HEAD + zones % ", within: vpc")
    assert [z.name for z in model.document.zones] == ["vpc", "db"]


def test_the_same_network_in_two_zones_is_an_error_even_when_nested() -> None:
    text = (
        HEAD
        + "zones:\n  - {name: a, cidrs: [10.0.0.0/24]}\n  - {name: b, cidrs: [10.0.0.0/24], within: a}\n"
    )
    (msg,) = problems(text)
    assert "10.0.0.0/24 is also in zone 'a'" in msg


def test_declared_nesting_must_be_true_and_acyclic() -> None:
    text = (
        HEAD
        + "zones:\n  - {name: a, cidrs: [10.0.0.0/24]}\n  - {name: b, cidrs: [10.9.0.0/24], within: a}\n"
    )
    (msg,) = problems(text)
    assert "10.9.0.0/24 is not inside any network of 'a'" in msg
    cyc = (
        HEAD
        + "zones:\n  - {name: a, cidrs: [10.0.0.0/24], within: b}\n  - {name: b, cidrs: [10.1.0.0/24], within: a}\n"
    )
    assert any("zones nest in a cycle: a -> b -> a" in p for p in problems(cyc))


def test_ipv6_overlap_is_found_and_families_do_not_mix() -> None:
    text = (
        HEAD
        + "zones:\n  - {name: a, cidrs: ['2001:db8::/32', 10.0.0.0/8]}\n  - {name: b, cidrs: ['2001:db8:1::/48']}\n"
    )
    (msg,) = problems(text)
    assert "2001:db8:1::/48 overlaps 2001:db8::/32" in msg


def test_yaml_syntax_error_has_its_line() -> None:
    (msg,) = problems(HEAD + "zones:\n  - name: a\n   cidrs: [\n")
    assert msg.startswith("m.yaml:") and "not valid YAML" in msg


def test_business_hours_are_not_sexagesimal_numbers() -> None:
    text = (
        HEAD
        + "zones:\n  - name: a\n    cidrs: [10.0.0.0/24]\n    hours: {start: 08:00, end: 19:00, timezone: Europe/Berlin}\n"
    )
    hours = model_from_text(text).document.zones[0].hours
    assert hours is not None and (hours.start.hour, hours.end.hour) == (8, 19)
    bad = (
        HEAD
        + "zones:\n  - name: a\n    cidrs: [10.0.0.0/24]\n    hours: {timezone: Mars/Olympus}\n"
    )
    assert any("is not an IANA time zone" in p for p in problems(bad))


def test_flows_get_readable_ids_and_the_version_follows_the_content() -> None:
    text = (
        HEAD
        + "zones:\n  - {name: a, cidrs: [10.0.0.0/24]}\n  - {name: b, cidrs: [10.0.1.0/24]}\nflows:\n  - {from: a, to: b, ports: [5432, '9000-9010']}\n  - {from: a, to: b, ports: [5432, '9000-9010']}\n"
    )
    model = model_from_text(text)
    assert [f.id for f in model.document.flows] == [
        "a-to-b-tcp-5432_9000-9010",
        "a-to-b-tcp-5432_9000-9010-2",
    ]
    other = model_from_text(text.replace("5432", "5433"))
    assert model.version != other.version
    assert model_from_text(text).version == model.version


def test_reserved_and_empty_zones_are_refused() -> None:
    assert any(
        "built-in pseudo-zone" in p
        for p in problems(HEAD + "zones:\n  - {name: internet, cidrs: [10.0.0.0/8]}\n")
    )
    assert any("has no members" in p for p in problems(HEAD + "zones:\n  - {name: a}\n"))


def test_missing_file_and_non_mapping() -> None:
    with pytest.raises(ModelError, match="cannot read"):
        load_model(Path("/nonexistent/model.yaml"))
    assert problems("- just\n- a list\n") == [
        "m.yaml:1: a model is a mapping with apiVersion, metadata, zones"
    ]


def test_round_trip_through_yaml_keeps_the_model() -> None:
    from .conftest import MODELS

    for path in MODELS.glob("*.yaml"):
        model = load_model(path)
        again = model_from_text(model.to_yaml())
        assert again.document == model.document, path.name


def test_the_readme_example_is_a_valid_model() -> None:
    import re

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme[readme.index("## Segmentation model") :]
    example = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert example is not None
    model = model_from_text(example.group(1), "README.md")
    assert {z.name for z in model.document.zones} == {"vpc", "db", "web", "kube-dns"}
    assert model.version.startswith("7+")
