"""Hostile records: every field of valid JSON records (Hubble, Calico, a CloudWatch
envelope of VPC lines, journald) replaced by every JSON type and by absurd values
(numbers of thousands of digits, integers beyond 64 bits, deep nesting). Nothing
raises out of a parser; every event that comes out has the shapes the pipeline
relies on, places with every example model, and encodes (or is refused where it is
encoded, by the normalize stage: see tests/unit/streams)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from detector.definitions import FAMILIES
from detector.detect import DetectorSettings, Engine
from detector.errors import ParseError
from detector.model import compile_model, load_model
from detector.parsers import check_event, make_parser

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "golden"

VALUES: list[Any] = [None, True, 0, -1, 2**64, 10**30, 1.5, "", "x", "9" * 5000, "10.0.0.1",
                     [], [1], ["a", "b"], {}, {"a": 1}, {"namespace": ["x"]}]  # fmt: skip


def _records() -> list[tuple[str, dict[str, Any]]]:
    hubble = [
        json.loads(line)
        for line in (GOLDEN / "hubble" / "flows.jsonl").read_text().splitlines()[:3]
    ]
    calico = json.loads((GOLDEN / "calico" / "mixed.log").read_text().splitlines()[0])
    vpc = {"messageType": "DATA_MESSAGE", "logGroup": "g", "logStream": "eni-1-all",
           "logEvents": [{"id": "1", "timestamp": 1764064800000,
                          "message": "2 123456789012 eni-1 10.0.1.10 10.0.2.20 40000 443 6 1 60 "
                                     "1764064800 1764064830 ACCEPT OK"}]}  # fmt: skip
    journald = {"__REALTIME_TIMESTAMP": "1764064800000000", "_HOSTNAME": "node-1",
                "MESSAGE": "DROP: IN=eth0 OUT= SRC=10.0.0.5 DST=10.0.0.6 LEN=60 PROTO=TCP "
                           "SPT=40000 DPT=22 MARK=0x1"}  # fmt: skip
    zeek = [
        json.loads(line)
        for line in (GOLDEN / "zeek" / "conn.json.log").read_text().splitlines()[:2]
    ]
    return [*(("hubble", r) for r in hubble), ("calico", calico), ("vpcflow", vpc),
            ("iptables", journald), *(("zeek", r) for r in zeek)]  # fmt: skip


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*path, i))


def _replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    out = copy.deepcopy(doc)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _mutations() -> Iterator[tuple[str, bytes]]:
    for family, record in _records():
        for path in _paths(record):
            for value in VALUES:
                yield family, json.dumps(_replaced(record, path, value)).encode()
    deep = b"[" * 1000 + b"]" * 1000
    for family in ("auto", *FAMILIES):
        yield family, deep
        yield family, b'{"flow": ' * 900 + b"{}" + b"}" * 900


MODELS = [
    compile_model(load_model(p))
    for p in sorted((ROOT / "detector" / "assets" / "models").glob("*.yaml"))
]
ENGINES = [Engine(m, DetectorSettings()) for m in MODELS]


def test_every_field_of_every_type_gets_nowhere() -> None:
    parsers = {f: make_parser(f) for f in ("auto", *FAMILIES)}
    for family, record in _records():  # unmutated, each is an event
        (event,) = parsers[family].parse(json.dumps(record).encode())
        assert not isinstance(event, ParseError), event
    tried = refused = encoded_refused = 0
    for family, raw in _mutations():
        for parser in (parsers[family], parsers["auto"]):
            tried += 1
            for result in parser.parse(raw):  # never raises
                if isinstance(result, ParseError):
                    refused += 1
                    assert result.reason and result.raw  # the record (or the envelope entry)
                    continue
                assert check_event(result) is None
                for engine in ENGINES:
                    engine.place(copy.deepcopy(result))  # never raises
                try:
                    orjson.dumps(result)
                except TypeError:
                    encoded_refused += 1  # refused by the normalize stage, per record
    assert tried > 2000 and refused > 100


@pytest.mark.parametrize(
    "family, record, reason",
    [
        ("hubble", '{"flow": {"time": "2026-11-25T09:00:00Z", "verdict": "DROPPED", '
                   '"IP": {"source": ["10.0.0.1"], "destination": "10.0.0.2"}}}', "IP.source"),
        ("hubble", '{"flow": {"time": "2026-11-25T09:00:00Z", "verdict": "DROPPED", '
                   '"IP": {"source": "10.0.0.1", "destination": "10.0.0.2"}, "l4": "TCP"}}', ""),
        ("hubble", '{"flow": {"time": "2026-11-25T09:00:00Z", "verdict": "DROPPED", '
                   '"IP": {"source": "10.0.0.1", "destination": "10.0.0.2"}, '
                   '"source": {"namespace": {"a": 1}}}}', "source.kubernetes.namespace"),
        ("auto", "[" * 1000 + "]" * 1000, ""),
    ],
)  # fmt: skip
def test_the_review_samples_are_refused_or_carried(family: str, record: str, reason: str) -> None:
    for result in make_parser(family).parse(record.encode()):
        if isinstance(result, ParseError):
            assert reason in (result.position or "") + result.reason
        else:
            assert check_event(result) is None
            orjson.dumps(result)


def test_an_ipv4_mapped_ipv6_address_is_placed_in_its_ipv4_zone() -> None:
    tiers = compile_model(
        load_model(ROOT / "detector" / "assets" / "models" / "three_tier_vpc.yaml")
    )
    assert tiers.zone_of_ip("::ffff:10.0.3.7") == tiers.zone_of_ip("10.0.3.7") == "db"
    assert tiers.zone_of_ip("::ffff:8.8.8.8") == "internet"
    assert tiers.zone_of_ip("::ffff:0a00:0307") == "db"  # the same address, written in hex


@pytest.mark.parametrize("stamp, reason", [
    ("2026-13-45T99:00:00Z", "is not a valid date"),
    ("yesterday", "RFC 5424 timestamp 'yesterday' is not a valid date"),
    ("-", "RFC 5424 record has no timestamp (-)"),
])  # fmt: skip
def test_an_rfc5424_time_that_cannot_be_read_is_an_error_never_now(stamp: str, reason: str) -> None:
    line = (f"<4>1 {stamp} host kernel - - - DROP: IN=eth0 OUT= SRC=10.0.0.5 DST=10.0.0.6 "
            "LEN=60 PROTO=TCP SPT=1 DPT=22")  # fmt: skip
    (error,) = make_parser("iptables").parse(line.encode())
    assert isinstance(error, ParseError) and reason in error.reason


def test_an_error_inside_a_cloudwatch_envelope_names_its_entry() -> None:
    good = (
        "2 123456789012 eni-1 10.0.1.10 10.0.2.20 40000 443 6 1 60 1764064800 1764064830 ACCEPT OK"
    )
    envelope = {"messageType": "DATA_MESSAGE", "logEvents": [
        {"id": str(i), "timestamp": 1764064800000, "message": good.replace("10.0.2.20", ip)}
        for i, ip in enumerate(["10.0.2.20", "10.0.2.20", "10.0.2.999"])]}  # fmt: skip
    *events, error = make_parser("vpcflow").parse(json.dumps(envelope).encode())
    assert len(events) == 2 and isinstance(error, ParseError)
    assert error.position is not None and error.position.startswith("logEvents[2] field 5")
