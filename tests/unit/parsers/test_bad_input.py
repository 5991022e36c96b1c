"""Bad input never raises and never vanishes: each case is an error with a reason."""

from __future__ import annotations

import json

import pytest

from detector.parsers import PARSERS, ParseError, ParseOptions, make_parser

from .conftest import REFERENCE_TIME, only_error

OPTS = ParseOptions(reference_time=REFERENCE_TIME, max_record_bytes=4096)
V2 = "2 123456789010 eni-1 10.0.0.1 10.0.0.2 40000 443 6 10 1000 1700000000 1700000060 ACCEPT OK"
IPT = (
    "Mar  3 14:10:18 h kernel: DROP: IN=eth0 OUT= SRC=10.0.0.1 DST=10.0.0.2 LEN=60 "
    "PROTO=TCP SPT=40000 DPT=443 SYN"
)
CALICO = json.dumps(
    {
        "start_time": 1700000000,
        "end_time": 1700000060,
        "source_ip": "10.0.0.1",
        "dest_ip": "10.0.0.2",
        "dest_port": 443,
        "proto": "tcp",
        "action": "allow",
        "reporter": "dst",
        "bytes_in": 10,
        "bytes_out": 5,
    }
)
HUBBLE = json.dumps(
    {
        "time": "2023-08-21T12:12:18.5Z",
        "verdict": "FORWARDED",
        "IP": {"source": "10.0.0.1", "destination": "10.0.0.2"},
        "l4": {"TCP": {"source_port": 40000, "destination_port": 443}},
    }
)
ZEEK = json.dumps(
    {
        "ts": 1764064800.5,
        "uid": "CHhAvVGS1DHFjwGM9",
        "id.orig_h": "10.0.0.1",
        "id.orig_p": 40000,
        "id.resp_h": "10.0.0.2",
        "id.resp_p": 443,
        "proto": "tcp",
        "conn_state": "SF",
    }
)
VALID = {"vpcflow": V2, "iptables": IPT, "calico": CALICO, "hubble": HUBBLE, "zeek": ZEEK}


def _error(family: str, raw: bytes | str) -> ParseError:
    return only_error(make_parser(family, OPTS).parse(raw))


@pytest.mark.parametrize("family", list(PARSERS))
def test_valid_samples_parse(family: str) -> None:
    results = make_parser(family, OPTS).parse(VALID[family])
    assert len(results) == 1 and isinstance(results[0], dict), results


@pytest.mark.parametrize("family", [*PARSERS, "auto"])
def test_oversized_record(family: str) -> None:
    # auto accepts envelopes up to max_envelope_bytes (16 MiB) before handing over
    err = _error(family, "x" * (17_000_000 if family == "auto" else 5000))
    assert "over the limit" in err.reason


@pytest.mark.parametrize("family", [*PARSERS, "auto"])
def test_invalid_utf8(family: str) -> None:
    err = _error(family, VALID.get(family, V2).encode()[:20] + b"\xff\xfe" + b" rest")
    assert "invalid UTF-8" in err.reason and err.position == "byte 20"


@pytest.mark.parametrize("family", [*PARSERS, "auto"])
def test_nul_byte(family: str) -> None:
    err = _error(family, VALID.get(family, V2).replace("10.0.0.2", "10.0\0.0.2"))
    assert "NUL byte" in err.reason and err.raw.count(b"\0") == 1


@pytest.mark.parametrize("family", list(PARSERS))
def test_truncated_record(family: str) -> None:
    raw = VALID[family][: len(VALID[family]) // 2]
    err = _error(family, raw)
    assert err.reason and err.raw == raw.encode() and err.family == family


def test_wrong_field_count() -> None:
    parser = make_parser(
        "vpcflow", ParseOptions(reference_time=REFERENCE_TIME, vpc_format="version srcaddr dstaddr")
    )
    err = only_error(parser.parse("2 10.0.0.1"))
    assert err.reason == "record has 2 fields, the format declares 3"
    assert "no format" in _error("vpcflow", "2 10.0.0.1 10.0.0.2 5").reason


ABSURD = [
    ("vpcflow", V2.replace(" 443 ", " 70000 "), "dstport is '70000', expected an integer 0-65535"),
    ("vpcflow", V2.replace(" 1000 ", " -5 "), "bytes is '-5', expected an integer"),
    ("vpcflow", V2.replace("10.0.0.2", "10.0.300.2"), "dstaddr is '10.0.300.2', expected an IPv4"),
    ("iptables", IPT.replace("DPT=443", "DPT=70000"), "DPT is '70000'"),
    ("calico", CALICO.replace('"dest_port": 443', '"dest_port": 70000'), "dest_port is '70000'"),
    ("calico", CALICO.replace('"bytes_in": 10', '"bytes_in": -1'), "bytes_in is '-1'"),
    ("hubble", HUBBLE.replace("443", "70000"), "destination_port is '70000'"),
    ("zeek", ZEEK.replace("443", "70000"), "id.resp_p is 70000, expected 0 to 65535"),
    ("zeek", ZEEK.replace("1764064800.5", "-3"), "ts is '-3', not a time"),
    ("zeek", ZEEK.replace('"SF"', "12"), "conn_state is not a word"),
]


@pytest.mark.parametrize(("family", "raw", "reason"), ABSURD, ids=[a[2][:30] for a in ABSURD])
def test_absurd_numbers(family: str, raw: str, reason: str) -> None:
    assert reason in _error(family, raw).reason


FUTURE = [
    ("vpcflow", V2.replace("1700000060", "4102444800")),  # 2100-01-01
    ("calico", CALICO.replace("1700000060", "4102444800")),
    ("hubble", HUBBLE.replace("2023-08-21", "2100-08-21")),
    ("iptables", IPT.replace("Mar  3 14:10:18", "2100-03-03T14:10:18Z")),
]


@pytest.mark.parametrize(("family", "raw"), FUTURE, ids=[f[0] for f in FUTURE])
def test_timestamps_far_in_the_future(family: str, raw: str) -> None:
    assert "in the future" in _error(family, raw).reason


def test_error_str_shows_family_position_and_reason() -> None:
    err = _error("vpcflow", V2.replace(" 443 ", " abc "))
    assert str(err) == "vpcflow at field 7 'dstport': dstport is 'abc', expected an integer 0-65535"
    assert err.to_dict()["raw"] == V2.replace(" 443 ", " abc ")


def test_blank_records_are_not_events_nor_errors() -> None:
    for family in [*PARSERS, "auto"]:
        assert make_parser(family, OPTS).parse("   ") == []
