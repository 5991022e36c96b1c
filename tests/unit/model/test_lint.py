"""Each lint check fires on the model it is about, and only there."""

from __future__ import annotations

import pytest

from detector.model.lint import lint

from .conftest import HEAD, compiled

ZONES = """zones:
  - {name: web, cidrs: [10.0.1.0/24], tags: {sensitivity: low, internet_facing: true, environment: production}}
  - {name: app, cidrs: [10.0.2.0/24], tags: {sensitivity: medium, environment: production}}
  - {name: db, cidrs: [10.0.3.0/24], tags: {sensitivity: restricted, environment: production, tier: 0}}
  - {name: dev, cidrs: [10.9.0.0/24], tags: {environment: development}}
  - {name: t1, cidrs: [10.5.1.0/24], tags: {tenant: one}}
  - {name: t2, cidrs: [10.5.2.0/24], tags: {tenant: two}}
  - {name: dns, cidrs: [10.0.0.2/32]}
"""
CLEAN = (
    HEAD
    + "defaults: {dns: {zone: dns}}\n"
    + ZONES
    + """flows:
  - {id: in, from: internet, to: web, ports: [443], owner: web-team}
  - {id: web-app, from: web, to: app, ports: [8080], one_way: true, ticket: SEC-1}
  - {id: app-db, from: app, to: db, ports: [5432], owner: data-team}
  - {id: t1-app, from: t1, to: app, ports: [8080], owner: tenants}
  - {id: t2-app, from: t2, to: app, ports: [8080], owner: tenants}
  - {id: dev-self, from: dev, to: dev, owner: dev-team}
"""
)


def ids(text: str) -> set[str]:
    return {f.id for f in lint(compiled(text), at=1_800_000_000)}


def test_the_clean_model_has_no_errors_or_warnings() -> None:
    found = lint(compiled(CLEAN), at=1_800_000_000)
    assert [f for f in found if f.severity != "info"] == [], found


@pytest.mark.parametrize(
    ("finding", "change"),
    [
        ("SW001", lambda t: t.replace("defaults: {", "defaults: {action: allow, ")),
        ("SW002", lambda t: t + "  - {id: leak, from: dev, to: app, ports: [8080]}\n"),
        ("SW003", lambda t: t + "  - {id: wide, from: web, to: '*', ports: [22]}\n"),
        ("SW004", lambda t: t + "  - {id: direct, from: internet, to: db, ports: [5432]}\n"),
        ("SW004", lambda t: t + "  - {id: skip, from: web, to: db, ports: [5432]}\n"),
        ("SW006", lambda t: t + "  - {id: direct, from: internet, to: db, ports: [5432]}\n"),
        ("SW007", lambda t: t.replace("defaults: {dns: {zone: dns}}\n", "")),
        ("SW008", lambda t: t + "  - {id: back, from: app, to: web, ports: [9000]}\n"),
        (
            "SW009",
            lambda t: t + "  - {id: old, from: app, to: db, ports: [22], expires: 2020-01-01}\n",
        ),
        ("SW010", lambda t: t + "  - {id: any, from: app, to: db, protocol: any}\n"),
        ("SW010", lambda t: t + "  - {id: all, from: app, to: db, ports: [1-65535]}\n"),
        ("SW010", lambda t: t + "  - {id: two, from: app, to: db, ports: [1-1024, 1000-65535]}\n"),
        ("SW014", lambda t: t.replace("zones:\n", "zones:\n  - {name: v6, cidrs: ['::/0']}\n")),
        ("SW011", lambda t: t + "  - {id: cross, from: t1, to: t2, ports: [80]}\n"),
        ("SW012", lambda t: t.replace("name: app, cidrs", "name: app, mode: monitor, cidrs")),
        (
            "SW013",
            lambda t: t.replace("  - {id: dev-self, from: dev, to: dev, owner: dev-team}\n", ""),
        ),
        (
            "SW015",
            lambda t: t.replace(
                "tags: {sensitivity: medium,", "tags: {compliance: [pci], sensitivity: medium,"
            ),
        ),
        ("SW016", lambda t: t + "  - {id: dmz-any, from: web, to: app, protocol: any, owner: x}\n"),
        ("SW017", lambda t: t + "  - {id: whose, from: app, to: db, ports: [5433]}\n"),
    ],
)
def test_each_check_fires(finding: str, change: object) -> None:
    assert finding not in ids(CLEAN)
    assert finding in ids(change(CLEAN)), finding  # type: ignore[operator]


def test_a_zone_of_every_address_shadows_the_internet() -> None:
    text = HEAD + "zones:\n  - {name: corp, cidrs: [0.0.0.0/0]}\nflows:\n" \
        "  - {id: in, from: internet, to: corp, ports: [443]}\n"  # fmt: skip
    (found,) = [f for f in lint(compiled(text)) if f.id == "SW014"]
    assert found.severity == "error" and found.zones == ("corp",)
    assert "no address is ever in internet" in found.message


def test_most_ports_into_a_restricted_zone_are_not_every_port() -> None:
    assert "SW010" not in ids(CLEAN + "  - {id: wide, from: app, to: db, ports: [2-65535]}\n")


def test_transitive_exposure_is_information_with_the_path() -> None:
    (found,) = [f for f in lint(compiled(CLEAN)) if f.id == "SW005"]
    assert found.severity == "info"
    assert "internet -> web -> app -> db" in found.message
    assert found.rules == ("in", "web-app", "app-db")


def test_findings_are_sorted_errors_first_and_carry_a_hint() -> None:
    text = (
        CLEAN.replace("defaults: {", "defaults: {action: allow, ")
        + "  - {id: x, from: t1, to: t2}\n"
    )
    found = lint(compiled(text))
    order = [f.severity for f in found]
    assert order == sorted(order, key=["error", "warning", "info"].index)
    assert all(f.hint for f in found)
