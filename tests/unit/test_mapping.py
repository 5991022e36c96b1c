"""The index templates map what segwatch writes: every path of every document, with a
type that takes its values.

The documents: every golden output, the parsers' output for every corpus input, the
events of simulated traffic of every family placed and scored (with replies,
anomalies and detections), the alerts and incidents of attack scenarios. A path
that is written and not mapped is not searchable (the mapping is not dynamic);
one mapped with the wrong type is refused or misread. A path in ``UNINDEXED`` is
kept in ``_source`` on purpose, for the reason given.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from detector.analyze import Analysis
from detector.assets import MODELS, RULES
from detector.definitions import FAMILIES
from detector.detect import DetectorSettings, Engine, load_rules
from detector.files import iter_records
from detector.model import compile_model, load_model
from detector.model.quarantine import suggestion
from detector.parsers import ParseOptions, make_parser
from detector.simulate import SCENARIOS, SimulationError, Simulator
from streams.elastic import load_components
from streams.kibana import mapped_fields

from .parsers.conftest import CORPUS, GOLDEN, REFERENCE_TIME

pytestmark = pytest.mark.unit

# Written, kept in _source, not indexed, on purpose (path prefix -> why). Nothing is,
# today: every field segwatch writes is searchable. docs/elasticsearch.md lists the same.
UNINDEXED: dict[str, str] = {}
MONDAY = 1_793_059_200.0  # 2026-10-26, a Monday, 00:00 UTC

_TYPES: dict[type, set[str]] = {
    str: {"keyword", "constant_keyword", "wildcard", "text", "match_only_text", "ip", "date",
          "version"},
    bool: {"boolean"},
    int: {"long", "integer", "short", "byte", "unsigned_long", "double", "float", "scaled_float"},
    float: {"double", "float", "half_float", "scaled_float"},
}  # fmt: skip
_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _mapping() -> dict[str, dict[str, Any]]:
    """{path: its mapping} of every leaf of the components (objects named too)."""
    out: dict[str, dict[str, Any]] = {}

    def walk(properties: dict[str, Any], prefix: str) -> None:
        for name, spec in properties.items():
            out[prefix + name] = spec
            if "properties" in spec:
                walk(spec["properties"], f"{prefix}{name}.")

    for body in load_components().values():
        walk(body.get("template", {}).get("mappings", {}).get("properties", {}), "")
    return out


def _leaves(doc: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, scalar value) of a document; lists are walked element by element."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _leaves(value, f"{prefix}{key}.")
    elif isinstance(doc, list):
        for value in doc:
            yield from _leaves(value, prefix)
    elif doc is not None:
        yield prefix[:-1], doc


def _problem(path: str, value: Any, mapping: dict[str, dict[str, Any]]) -> str | None:
    if any(path.startswith(p) for p in UNINDEXED):
        return None
    parts = path.split(".")
    for i in range(1, len(parts)):  # a flattened or disabled object takes anything inside
        spec = mapping.get(".".join(parts[:i]), {})
        if spec.get("type") == "flattened" or spec.get("enabled") is False:
            return None
    spec = mapping.get(path)
    if spec is None:
        return f"{path} is written ({value!r}) and not mapped"
    kind = spec.get("type", "object")
    if kind not in _TYPES[type(value)]:
        return f"{path} is mapped as {kind}, written as {type(value).__name__} ({value!r})"
    if kind == "ip":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return f"{path} is mapped as ip, written as {value!r}"
    if kind == "date" and isinstance(value, str) and not _ISO.match(value):
        return f"{path} is mapped as date, written as {value!r}"
    return None


@cache
def _documents() -> list[tuple[str, dict[str, Any]]]:
    """(where it came from, document) for everything segwatch writes."""
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(GOLDEN.rglob("*-expected.json")):
        docs += [
            (f"{path.name}[{i}]", d)
            for i, d in enumerate(json.loads(path.read_text()))
            if "event" in d
        ]  # (the others are the errors the golden input holds)
    options = ParseOptions(reference_time=REFERENCE_TIME)
    for family in FAMILIES:
        for path in sorted((CORPUS / family).rglob("*")):
            if not path.is_file() or path.suffix not in (".log", ".jsonl", ".json"):
                continue
            if path.name.endswith("-expected.json") or path.name == "cases.json":
                continue
            parser = make_parser(family, options)  # a VPC header holds for its file
            for number, raw in _records(path):
                docs += [(f"{path.name}:{number}", r) for r in parser.parse(raw)
                         if isinstance(r, dict)]  # fmt: skip
    docs += _simulated()
    docs += [(f"every field of {family}", d) for family, d in _every_field()]
    return docs


def _every_field() -> Iterator[tuple[str, dict[str, Any]]]:
    """One record per family with every field its parser copies (what the samples do
    not all show: Transit Gateway and v5 fields, Calico services, Hubble policies)."""
    from detector.parsers.vpcflow import FIELDS, TGW_FIELDS

    values = {"srcaddr": "10.0.1.5", "dstaddr": "10.0.2.9", "pkt-srcaddr": "10.0.1.5",
              "pkt-dstaddr": "10.0.2.9", "srcport": "40000", "dstport": "443", "protocol": "6",
              "packets": "3", "bytes": "300", "start": "1764064800", "end": "1764064860",
              "action": "ACCEPT", "log-status": "OK", "version": "5", "tcp-flags": "19",
              "flow-direction": "egress", "traffic-path": "1", "type": "IPv4",
              "reject-reason": "BPA"}  # fmt: skip
    options = ParseOptions(reference_time=REFERENCE_TIME)
    for names in (FIELDS, TGW_FIELDS):
        layout = " ".join(f"${{{n}}}" for n in names)
        line = " ".join(values.get(n, f"x-{n}") for n in names)
        parser = make_parser("vpcflow", ParseOptions(reference_time=REFERENCE_TIME,
                                                      vpc_format=layout))  # fmt: skip
        (event,) = parser.parse(line)
        assert isinstance(event, dict), event
        yield "vpcflow", event
    calico = {"start_time": 1764064800, "end_time": 1764065100, "source_ip": "10.65.1.4",
              "source_type": "wep", "source_namespace": "shop", "dest_ip": "10.96.0.10",
              "dest_port": 53, "dest_type": "wep", "proto": "udp", "action": "allow",
              "reporter": "dst", "dest_service_name": "kube-dns",
              "dest_service_namespace": "kube-system", "num_flows": 1}  # fmt: skip
    hubble = {"flow": {"time": "2025-11-25T10:00:00Z", "verdict": "DROPPED",
                       "IP": {"source": "10.0.0.1", "destination": "10.0.0.2"},
                       "l4": {"TCP": {"source_port": 1, "destination_port": 2}},
                       "source": {"labels": ["reserved:host"]},
                       "destination": {"labels": ["reserved:world"]},
                       **{f"{way}_{what}_by": [{"name": "p"}] for way in ("ingress", "egress")
                          for what in ("allowed", "denied")}}}  # fmt: skip
    iptables = ('<4>1 2026-11-25T10:00:00Z fw kernel 42 NF [meta note="a b"] DROP: IN=eth0 '
                "OUT= MAC=00:11 SRC=10.0.0.1 DST=10.0.0.2 LEN=60 TOS=0x00 PREC=0x00 TTL=63 "
                "ID=99 PROTO=TCP SPT=1 DPT=2 WINDOW=1 RES=0x00 SYN URGP=0")  # fmt: skip
    # the quarantine of a pod (the simulated pods have no names), as alerts carry it
    pod = suggestion("10.65.1.4", {"namespace": "shop", "pod": {"name": "web-1"}}, "x")
    for kind in ("alert", "incident"):
        yield f"{kind} quarantine", {"segwatch": {kind: {"quarantine": pod}}}
    for family, record in (("calico", json.dumps(calico)), ("hubble", json.dumps(hubble)),
                           ("iptables", iptables)):  # fmt: skip
        (event,) = make_parser(family, options).parse(record)
        assert isinstance(event, dict), event
        yield family, event


def _records(path: Path) -> Iterator[tuple[int, bytes | str]]:
    if path.suffix == ".json" and "events" in (text := path.read_text())[:200]:
        yield from enumerate((json.dumps(e) for e in json.loads(text)["events"]), 1)
    else:
        yield from iter_records(str(path))


def _simulated() -> list[tuple[str, dict[str, Any]]]:
    """Scored events, alerts and incidents of six simulated hours with attacks, per
    family the simulator writes (Hubble's scored events have the same segmentation.*)."""
    out: list[tuple[str, dict[str, Any]]] = []
    rules = load_rules(RULES)
    for family, name in (("vpcflow", "three_tier_vpc"), ("iptables", "retail_store"),
                         ("calico", "kubernetes_dns"), ("calico", "multi_tenant_saas"),
                         ("zeek", "financial_pci")):  # fmt: skip
        model = compile_model(load_model(MODELS / f"{name}.yaml"))
        attacks = []
        for scenario in SCENARIOS:
            try:
                list(Simulator(model, family, seed=3).run(MONDAY, 3600, 0.01, [scenario]))
            except SimulationError:
                continue
            attacks.append(scenario)
        run = Analysis(model, Engine(model, DetectorSettings(learning_seconds=3600), rules))
        parser = make_parser(family, ParseOptions(reference_time=MONDAY + 9e5, syslog_year=2026))
        records = Simulator(model, family, seed=3).run(MONDAY, 6 * 3600, 0.3, attacks)
        for line, (record, _) in enumerate(records, 1):
            for result in parser.parse(record):
                if isinstance(result, dict):
                    run.process(result, f"{family}:{line}")
                    if line % 7 == 0 or result.get("segmentation", {}).get("anomalies"):
                        out.append((f"{family} simulated event {line}", result))
        run.finish()
        out += [(f"{family} alert", d) for d in run.alert_documents()]
        out += [(f"{family} incident", d) for d in run.incident_documents()]
    return out


def test_the_documents_cover_what_is_asked() -> None:
    docs = [d for _, d in _documents()]
    kinds = {d["event"]["kind"] for d in docs if "event" in d}
    datasets = {d["event"]["dataset"] for d in docs if "event" in d}
    assert kinds == {"event", "alert", "state"}
    assert datasets >= {f"segwatch.{f}" for f in FAMILIES} | {"segwatch.alerts",
                                                             "segwatch.incidents"}  # fmt: skip
    assert any(d.get("segmentation", {}).get("reply") for d in docs)
    assert any(d.get("segmentation", {}).get("anomalies") for d in docs)


def test_every_written_path_is_mapped_with_a_type_that_takes_its_values() -> None:
    mapping = _mapping()
    problems: dict[str, str] = {}
    for where, doc in _documents():
        for path, value in _leaves(doc):
            problem = _problem(path, value, mapping)
            if problem is not None:
                problems.setdefault(path, f"{problem} in {where}")
    assert not problems, "\n".join(sorted(problems.values()))


def test_every_mapped_field_is_written() -> None:
    """A mapped field nobody writes is a name a search finds nothing under."""
    written = {path for _, doc in _documents() for path, _ in _leaves(doc)}
    mapping = _mapping()
    leaves = {p for p, spec in mapping.items() if "properties" not in spec}
    never = sorted(p for p in leaves - written
                   if not any(w.startswith(p + ".") for w in written))  # fmt: skip
    assert not never, never


def test_names_are_snake_case() -> None:
    camel = sorted(p for p in _mapping() if re.search(r"[a-z][A-Z]", p))
    assert not camel, camel


def test_the_kibana_check_reads_the_same_mapping() -> None:
    assert set(mapped_fields()) <= set(_mapping())
