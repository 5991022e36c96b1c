"""Segmentation tests as code: expectations about a model, checked against what the
model declares and, given traffic, against what was observed.

A tests file (``kind: SegmentationTests``) lists expectations; each names its
source (``from``) and one check:

| check | holds when |
|---|---|
| ``deny: TO`` | no allow rule lets ``from`` open anything on ``TO`` (one hop) |
| ``allow: {to, protocol, port}`` | an allow rule admits that service (declared only) |
| ``reaches_only: [ZONES]`` | every zone ``from`` can open a connection to is listed |
| ``no_path_to: TO`` | no chain of allowed connections leads from ``from`` to ``TO`` |
| ``only_through: [ZONES]``, ``to: TO`` | every chain from ``from`` to ``TO`` passes one |
| ``at_most: [ZONES]`` | everything ``from`` reaches, through any chain, is listed (blast radius) |

Zones are given by name, as a list, as ``internet``, ``from`` also as an IP
address (the zone that holds it), or as tags (``{environment: production}``:
every zone whose tags say so; lists match by membership).

Declared reach is the model's allow rules (:func:`detector.model.reach.edges`).
Observed reach is the connections in the traffic as their initiators opened them
(reply records count for their connection), those the platform let through.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import quoteattr

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from detector.errors import DetectorError
from detector.model.compile import CompiledModel
from detector.model.load import ModelError, load_yaml
from detector.model.reach import Hop, edges, path_text, paths
from detector.model.schema import ANY_ZONE, INTERNET

__all__ = [
    "Expectation",
    "Outcome",
    "TestsProblem",
    "check_all",
    "junit_xml",
    "load_tests",
    "observed_edges",
]

ZoneRef = str | list[str] | dict[str, Any]
Graph = dict[str, list[Hop]]


class TestsProblem(DetectorError):
    """A tests file that cannot be read or names zones the model does not have."""

    __test__ = False  # not a pytest test class, whatever its name


class _Allow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: ZoneRef
    protocol: Literal["tcp", "udp", "icmp"] = "tcp"
    port: int | None = Field(default=None, ge=1, le=65535)


class Expectation(BaseModel):
    """One expectation: a source and exactly one check."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    source: ZoneRef = Field(alias="from")
    to: ZoneRef | None = None
    deny: ZoneRef | None = None
    allow: _Allow | None = None
    reaches_only: list[str] | None = None
    no_path_to: ZoneRef | None = None
    only_through: list[str] | None = None
    at_most: list[str] | None = None
    line: int = 0

    @model_validator(mode="after")
    def _one_check(self) -> Expectation:
        checks = [k for k in _CHECKS if getattr(self, k) is not None]
        if len(checks) != 1:
            raise ValueError(f"give exactly one of {', '.join(_CHECKS)} (found {checks or 'none'})")
        if (checks[0] == "only_through") != (self.to is not None):
            raise ValueError("`to` goes with only_through, and only_through needs `to`")
        return self

    @property
    def check(self) -> str:
        return next(k for k in _CHECKS if getattr(self, k) is not None)


_PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1}
_CHECKS = ("deny", "allow", "reaches_only", "no_path_to", "only_through", "at_most")


@dataclass
class Outcome:
    """One expectation's result against one view (``declared`` or ``observed``)."""

    expectation: Expectation
    view: str
    failures: list[str] = field(default_factory=list)
    skipped: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures


def load_tests(path: Path) -> list[Expectation]:
    """The expectations of a tests file, each with its line.

    :raises TestsProblem: unreadable, not a tests file, or an invalid expectation
        (FILE:LINE: tests[i].field: reason).
    """
    try:
        doc, lines = load_yaml(path)
    except ModelError as exc:
        raise TestsProblem("; ".join(str(p) for p in exc.problems)) from None
    if not isinstance(doc, dict) or doc.get("kind") != "SegmentationTests":
        raise TestsProblem(f"{path}:1: kind: not a SegmentationTests file")
    items = doc.get("tests")
    if not isinstance(items, list) or not items:
        raise TestsProblem(f"{path}:{lines.get(('tests',), 1)}: tests: give a list of expectations")
    out = []
    for i, item in enumerate(items):
        line = lines.get(("tests", i), 1)
        if not isinstance(item, dict):
            raise TestsProblem(f"{path}:{line}: tests[{i}]: an expectation is a mapping")
        try:
            out.append(Expectation.model_validate({**item, "line": line}))
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            at = lines.get(("tests", i, *err["loc"][:1]), line)
            raise TestsProblem(f"{path}:{at}: tests[{i}]{'.' + field if field else ''}: "
                               f"{err['msg']}") from None  # fmt: skip
    return out


class _Zones:
    """Resolves zone references against one model."""

    def __init__(self, model: CompiledModel) -> None:
        self.model = model
        self.names = [*model.zones, INTERNET]

    def __call__(self, ref: ZoneRef, what: str, address_ok: bool = False) -> list[str]:
        if isinstance(ref, dict):
            found = [n for n, z in self.model.zones.items() if _tags_match(z.tags, ref)]
            if not found:
                raise TestsProblem(f"{what}: no zone has the tags {ref}")
            return found
        out = []
        for name in [ref] if isinstance(ref, str) else ref:
            if name in self.names:
                out.append(name)
            elif address_ok and (zone := self._address(name)) is not None:
                out.append(zone)
            else:
                raise TestsProblem(f"{what}: {name!r} is not a zone of the model"
                                   + (" nor an address in one" if address_ok else ""))  # fmt: skip
        return out

    def _address(self, text: str) -> str | None:
        try:
            return self.model.zone_of_ip(text)
        except ValueError:
            return None


def _tags_match(tags: Any, wanted: dict[str, Any]) -> bool:
    have = {**tags.extra, **tags.model_dump(exclude={"extra"})}
    for key, value in wanted.items():
        got = have.get(key)
        if isinstance(got, (list, tuple)):
            if value not in got:
                return False
        elif got != value:
            return False
    return True


def observed_edges(
    model: CompiledModel, events: Iterable[dict[str, Any]]
) -> tuple[Graph, Counter[str]]:
    """The observed graph (an edge per zone pair and service, with its count) and how
    many events placed each zone (as either end)."""
    counts: Counter[tuple[str, str, str]] = Counter()
    seen: Counter[str] = Counter()
    for event in events:
        placed = model.place(event)
        for zone in (placed.source_zone, placed.destination_zone):
            if zone is not None:
                seen[zone] += 1
        denied = "denied" in ((event.get("event") or {}).get("type") or ())
        if denied or placed.source_zone is None or placed.destination_zone is None:
            continue
        if placed.source_zone != placed.destination_zone:
            counts[(placed.source_zone, placed.destination_zone, placed.service or "?")] += 1
    graph: Graph = {}
    for (src, dst, svc), n in sorted(counts.items()):
        graph.setdefault(src, []).append(Hop(src, dst, f"observed {n}x", svc))
    return graph, seen


def check_all(
    model: CompiledModel,
    expectations: list[Expectation],
    observed: Graph | None = None,
    origin: str = "<tests>",
) -> list[Outcome]:
    """Every expectation against the declared model, and against ``observed`` if given
    (``origin``: the tests file, for messages).

    :raises TestsProblem: an expectation names a zone the model does not have.
    """
    zones = _Zones(model)
    declared = edges(model)
    out = []
    for exp in expectations:
        views = [("declared", declared)] + (
            [("observed", observed)] if observed is not None else []
        )
        for view, graph in views:
            outcome = Outcome(exp, view)
            if exp.check == "allow" and view == "observed":
                outcome.skipped = "allow is checked against the declared model only"
            else:
                outcome.failures = _check(model, zones, exp, graph, f"{origin}:{exp.line}")
            out.append(outcome)
    return out


def _check(
    model: CompiledModel, zones: _Zones, exp: Expectation, graph: Graph, where: str
) -> list[str]:
    sources = zones(exp.source, f"{where}: from", address_ok=True)
    failures: list[str] = []
    for src in sources:
        direct = graph.get(src, [])  # neither graph has an edge from a zone to itself
        if exp.deny is not None:
            banned = set(zones(exp.deny, f"{where}: deny"))
            failures += [f"{path_text([h])}" for h in direct if h.destination in banned]
        elif exp.allow is not None:
            failures += _allow_failures(model, zones, src, exp.allow, where)
        elif exp.reaches_only is not None:
            fine = set(zones(exp.reaches_only, f"{where}: reaches_only")) | set(sources)
            failures += [f"{path_text([h])}" for h in direct if h.destination not in fine]
        elif exp.no_path_to is not None:
            targets = set(zones(exp.no_path_to, f"{where}: no_path_to"))
            reach = paths(graph, src)
            failures += [path_text(reach[t]) for t in sorted(targets & set(reach))]
        elif exp.only_through is not None and exp.to is not None:
            via = frozenset(zones(exp.only_through, f"{where}: only_through"))
            targets = set(zones(exp.to, f"{where}: to"))
            reach = paths(graph, src, avoid=via)
            # via zones are reached but not gone through: what is left got there around them
            failures += [f"{path_text(reach[t])} (not through {', '.join(sorted(via))})"
                         for t in sorted(targets & set(reach))]  # fmt: skip
        elif exp.at_most is not None:
            fine = set(zones(exp.at_most, f"{where}: at_most")) | set(sources)
            reach = paths(graph, src)
            failures += [path_text(reach[t]) for t in sorted(set(reach) - fine)]
    return list(dict.fromkeys(failures))


def _allow_failures(
    model: CompiledModel, zones: _Zones, src: str, allow: _Allow, where: str
) -> list[str]:
    proto = _PROTOCOLS[allow.protocol]
    out = []
    for dst in zones(allow.to, f"{where}: allow.to"):
        admitted = any(
            rule.source in (src, ANY_ZONE) and rule.destination in (dst, ANY_ZONE)
            and (dst != INTERNET or rule.destination != ANY_ZONE)
            and rule.admits(proto, allow.port)
            for rule in model.rules
        )  # fmt: skip
        if not admitted:
            service = allow.protocol + (f"/{allow.port}" if allow.port else "")
            out.append(f"no rule allows {src} -> {dst} {service}")
    return out


def junit_xml(outcomes: list[Outcome], suite: str) -> str:
    """The outcomes as JUnit XML: a test case per expectation and view."""
    failed = sum(not o.passed for o in outcomes)
    skipped = sum(bool(o.skipped) for o in outcomes)
    cases = []
    for o in outcomes:
        name = quoteattr(f"{o.expectation.name} [{o.view}]")
        body = ""
        if o.skipped:
            body = f"<skipped message={quoteattr(o.skipped)}/>"
        elif o.failures:
            text = "\n".join(o.failures)
            body = f"<failure message={quoteattr(o.failures[0])}>{_escape(text)}</failure>"
        cases.append(f"  <testcase classname={quoteattr(suite)} name={name}>{body}</testcase>")
    head = (f'<testsuite name={quoteattr(suite)} tests="{len(outcomes)}" '
            f'failures="{failed}" skipped="{skipped}">')  # fmt: skip
    return (
        "\n".join(['<?xml version="1.0" encoding="UTF-8"?>', head, *cases, "</testsuite>"]) + "\n"
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
