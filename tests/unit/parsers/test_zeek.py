"""Zeek conn.log, JSON and TSV, as Elastic's Zeek integration maps it."""

from __future__ import annotations

import json

from detector.connection import from_log
from detector.parsers import ParseOptions, detect_family, make_parser
from streams.pipeline import Normalizer

from .conftest import REFERENCE_TIME, flatten, only_error, only_event

FIELDS = ("#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tconn_state\t"
          "orig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes")  # fmt: skip
LINE = "1764064800.5\tCab1\t10.0.1.10\t40000\t10.0.2.20\t5432\ttcp\tSF\t3\t180\t2\t120"


def _parser() -> object:
    return make_parser("zeek", ParseOptions(reference_time=REFERENCE_TIME))


def test_json_record_is_an_ecs_event_with_the_originator_as_source() -> None:
    record = {"ts": 1764064800.5, "uid": "CHhAvVGS1DHFjwGM9", "id.orig_h": "10.0.1.10",
              "id.orig_p": 40000, "id.resp_h": "10.0.2.20", "id.resp_p": 5432, "proto": "tcp",
              "service": "postgresql", "duration": 2.5, "conn_state": "SF", "local_orig": True,
              "local_resp": True, "orig_pkts": 3, "orig_ip_bytes": 180, "resp_pkts": 2,
              "resp_ip_bytes": 120, "missed_bytes": 0, "history": "ShADadFf"}  # fmt: skip
    event = only_event(_parser().parse(json.dumps(record)))  # type: ignore[attr-defined]
    ev = flatten(event)
    assert ev["event.dataset"] == "segwatch.zeek" and ev["data_stream.dataset"] == "segwatch.zeek"
    assert (ev["source.ip"], ev["source.port"], ev["destination.port"]) == (
        "10.0.1.10",
        40000,
        5432,
    )
    assert ev["event.type"] == ["connection", "start", "end"] and ev["event.outcome"] == "success"
    assert ev["event.duration"] == 2_500_000_000 and ev["event.end"] == "2025-11-25T10:00:03.000Z"
    assert (ev["source.bytes"], ev["destination.packets"], ev["network.bytes"]) == (180, 2, 300)
    assert ev["network.protocol"] == "postgresql" and ev["network.direction"] == "internal"
    assert ev["zeek.session_id"] == "CHhAvVGS1DHFjwGM9" and ev["zeek.connection.state"] == "SF"
    assert ev["zeek.connection.state_message"] == "Normal establishment and termination."
    assert ev["network.community_id"].startswith("1:")
    initiator = from_log(event)
    assert initiator is not None and (initiator.side, initiator.evidence) == (
        "source",
        "originator",
    )


def test_states_say_what_the_network_did() -> None:
    def outcome(state: str) -> tuple[list[str], str]:
        record = {"ts": 1764064800, "id.orig_h": "10.0.0.1", "id.orig_p": 1,
                  "id.resp_h": "10.0.0.2", "id.resp_p": 22, "proto": "tcp", "conn_state": state}  # fmt: skip
        ev = only_event(_parser().parse(json.dumps(record)))  # type: ignore[attr-defined]
        return ev["event"]["type"], ev["event"]["outcome"]

    assert outcome("REJ") == (["connection", "start", "denied"], "failure")
    assert outcome("S0") == (["connection", "start"], "unknown")  # no answer: not known why
    assert outcome("RSTR")[1] == "success"
    assert outcome("XYZ") == (["connection"], "unknown")


def test_midstream_connections_are_no_initiator_evidence() -> None:
    record = {"ts": 1764064800, "id.orig_h": "10.0.0.2", "id.orig_p": 22, "id.resp_h": "10.0.0.1",
              "id.resp_p": 40000, "proto": "tcp", "conn_state": "OTH"}  # fmt: skip
    assert from_log(only_event(_parser().parse(json.dumps(record)))) is None  # type: ignore[attr-defined]


def test_tsv_with_a_fields_header_and_without_one() -> None:
    parser = _parser()
    assert parser.parse(FIELDS) == []  # type: ignore[attr-defined]
    ev = flatten(only_event(parser.parse(LINE)))  # type: ignore[attr-defined]
    assert ev["destination.port"] == 5432 and ev["zeek.session_id"] == "Cab1"
    assert "event.duration" not in ev  # not in this layout
    err = only_error(parser.parse(LINE + "\textra"))  # type: ignore[attr-defined]
    assert err.reason == "record has 13 fields, the #fields line declares 12"
    # no header at all: the default conn.log fields
    default = "\t".join(["1764064800.5", "Cx", "10.0.1.10", "40000", "10.0.2.20", "5432", "tcp",
                         "-", "0.5", "10", "20", "SF", "T", "F", "0", "ShADadFf", "3", "180", "2",
                         "120", "(empty)"])  # fmt: skip
    ev = flatten(only_event(_parser().parse(default)))  # type: ignore[attr-defined]
    assert ev["network.direction"] == "outbound" and "network.protocol" not in ev
    bad = only_error(_parser().parse("#fields\tfoo\tbar"))  # type: ignore[attr-defined]
    assert "not a conn.log header" in bad.reason


def test_a_fields_header_holds_for_its_own_producer_only() -> None:
    """In the stream, a #fields line is kept per message key, as VPC header lines are."""
    normalizer = Normalizer("zeek", lambda: ParseOptions(reference_time=REFERENCE_TIME))
    short = FIELDS.replace("\tconn_state\torig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes", "")
    assert normalizer.normalize(short.encode(), "t", 0, 0, b"sensor-a") == ([], [])
    events, dead = normalizer.normalize(b"\t".join(LINE.encode().split(b"\t")[:7]), "t", 0, 1,
                                        b"sensor-a")  # fmt: skip
    assert len(events) == 1 and not dead
    # another producer's default-layout line is not read with sensor-a's header
    events, dead = normalizer.normalize(b"\t".join(LINE.encode().split(b"\t")[:7]), "t", 0, 2,
                                        b"sensor-b")  # fmt: skip
    assert not events and "a default conn.log has 21" in dead[0]["reason"]


def test_icmp_type_and_code_are_not_ports() -> None:
    record = {"ts": 1764064800, "id.orig_h": "10.0.0.1", "id.orig_p": 8, "id.resp_h": "10.0.0.2",
              "id.resp_p": 0, "proto": "icmp", "conn_state": "OTH"}  # fmt: skip
    ev = flatten(only_event(_parser().parse(json.dumps(record))))  # type: ignore[attr-defined]
    assert "source.port" not in ev and "destination.port" not in ev
    assert (ev["zeek.connection.icmp.type"], ev["zeek.connection.icmp.code"]) == (8, 0)


def test_auto_detection_knows_zeek() -> None:
    assert detect_family(FIELDS) == "zeek" and detect_family("#separator \\x09") == "zeek"
    assert detect_family(LINE) == "zeek"
    assert detect_family('{"ts": 1, "uid": "C1", "id.orig_h": "10.0.0.1"}') == "zeek"
