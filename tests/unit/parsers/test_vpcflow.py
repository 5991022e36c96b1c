"""AWS VPC and Transit Gateway flow logs."""

from __future__ import annotations

import base64
import gzip
import json

from detector.events import is_flow
from detector.parsers import ParseOptions
from detector.parsers.vpcflow import VpcFlowParser

from .conftest import REFERENCE_TIME, flatten, only_error, only_event

V2 = "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK"


def _parser(**kw: object) -> VpcFlowParser:
    return VpcFlowParser(ParseOptions(reference_time=REFERENCE_TIME, **kw))  # type: ignore[arg-type]


def test_default_v2_record() -> None:
    ev = flatten(only_event(_parser().parse(V2)))
    assert ev["@timestamp"] == ev["event.end"] == "2014-12-14T04:07:50.000Z"
    assert ev["event.start"] == "2014-12-14T04:06:50.000Z"
    assert ev["source.ip"] == "172.31.16.139" and ev["source.port"] == 20641
    assert ev["destination.ip"] == "172.31.16.21" and ev["destination.port"] == 22
    assert (ev["network.transport"], ev["network.iana_number"]) == ("tcp", "6")
    assert (ev["network.bytes"], ev["network.packets"]) == (4249, 20)
    assert ev["event.type"] == ["connection", "allowed"] and ev["event.outcome"] == "success"
    assert ev["event.dataset"] == "segwatch.vpcflow" and ev["event.original"] == V2
    assert ev["cloud.account.id"] == "123456789010"
    assert ev["network.community_id"].startswith("1:")
    assert ev["related.ip"] == ["172.31.16.139", "172.31.16.21"]


def test_custom_format_in_any_order() -> None:
    fmt = "${srcaddr} ${dstaddr} ${dstport} ${protocol} ${action} ${flow-direction} ${traffic-path} ${pkt-srcaddr} ${start} ${end} ${tcp-flags}"
    line = "10.0.0.5 10.0.1.9 443 6 REJECT egress 2 203.0.113.7 1700000000 1700000060 19"
    ev = flatten(only_event(_parser(vpc_format=fmt).parse(line)))
    assert ev["destination.port"] == 443 and ev["event.outcome"] == "failure"
    assert ev["network.direction"] == "egress"
    assert ev["aws.vpcflow.traffic_path"] == "2"
    assert ev["aws.vpcflow.pkt_srcaddr"] == "203.0.113.7"
    assert ev["aws.vpcflow.tcp_flags_array"] == ["fin", "syn", "ack"]


def test_header_line_declares_the_layout_of_what_follows() -> None:
    parser = _parser()
    assert parser.parse("account-id dstport srcaddr dstaddr start end action log-status") == []
    ev = flatten(
        only_event(
            parser.parse("111122223333 5432 10.0.2.4 10.0.3.9 1700000000 1700000001 ACCEPT OK")
        )
    )
    assert ev["destination.port"] == 5432 and ev["cloud.account.id"] == "111122223333"


def test_nodata_and_skipdata_are_state_records_not_flows_nor_errors() -> None:
    for status in ("NODATA", "SKIPDATA"):
        line = f"2 123456789010 eni-1 - - - - - - - 1431280876 1431280934 - {status}"
        event = only_event(_parser().parse(line))
        ev = flatten(event)
        assert ev["aws.vpcflow.log_status"] == status and ev["event.kind"] == "state"
        assert ev["event.type"] == ["info"] and ev["event.reason"].startswith(f"{status}: ")
        assert "source.ip" not in ev and "event.outcome" not in ev
        assert not is_flow(event)
    # an OK record with the same layout is a flow
    ok = "2 123456789010 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 40 1431280876 1431280934 ACCEPT OK"
    assert is_flow(only_event(_parser().parse(ok)))


def test_transit_gateway_record() -> None:
    line = "6 TransitGateway 123456789012 tgw-0123 tgw-attach-1 123456789012 123456789012 vpc-a vpc-b subnet-a subnet-b eni-a eni-b use1-az1 use1-az2 tgw-attach-2 10.1.0.5 10.2.0.9 41000 443 6 10 840 1700000000 1700000060 OK IPv4 0 0 0 0 2 us-east-1 egress - -"
    ev = flatten(only_event(_parser().parse(line)))
    assert ev["aws.vpcflow.tgw_id"] == "tgw-0123"
    assert ev["aws.vpcflow.resource_type"] == "TransitGateway"
    assert ev["destination.port"] == 443 and ev["cloud.region"] == "us-east-1"


def _cloudwatch(*lines: str, control: bool = False) -> bytes:
    doc = {
        "messageType": "CONTROL_MESSAGE" if control else "DATA_MESSAGE",
        "owner": "999988887777", "logGroup": "vpc-flow", "logStream": "eni-1-all",
        "subscriptionFilters": ["all"],
        "logEvents": [{"id": str(i), "timestamp": 1700000000000, "message": m}
                      for i, m in enumerate(lines)],
    }  # fmt: skip
    return json.dumps(doc).encode()


def test_cloudwatch_envelope_gives_one_event_per_line() -> None:
    results = _parser().parse(_cloudwatch(V2, V2.replace(" 22 ", " 3389 ")))
    assert [r["destination"]["port"] for r in results] == [22, 3389]  # type: ignore[index]
    assert results[0]["event"]["original"] == V2  # type: ignore[index]


def test_cloudwatch_envelope_gzip_and_base64_as_firehose_delivers() -> None:
    packed = gzip.compress(_cloudwatch(V2))
    for raw in (packed, base64.b64encode(packed)):
        assert only_event(_parser().parse(raw))["destination"]["port"] == 22


def test_cloudwatch_control_message_holds_no_flows() -> None:
    assert _parser().parse(_cloudwatch(control=True)) == []


def test_field_error_names_the_field_and_its_place() -> None:
    err = only_error(_parser().parse(V2.replace(" 22 ", " abc ")))
    assert err.position == "field 7 'dstport'"
    assert "dstport is 'abc', expected an integer 0-65535" in err.reason
    assert err.raw == V2.replace(" 22 ", " abc ").encode()


def test_unknown_format_field_is_refused() -> None:
    import pytest

    from detector.parsers._common import FieldError

    with pytest.raises(FieldError, match="unknown field"):
        _parser(vpc_format="${version} ${no-such-field}")


def test_fast_path_and_general_path_build_the_same_event() -> None:
    from detector.parsers.vpcflow import FIELDS

    general = _parser(vpc_format=" ".join(FIELDS[:14]))  # a declared format skips the fast path
    lines = [
        V2,
        V2.replace("ACCEPT", "REJECT"),
        "2 1 eni-1 2001:db8::1 2001:db8::2 0 0 58 1 80 1700000000 1700000001 ACCEPT OK",
        "2 1 eni-1 10.0.0.1 10.0.0.1 0 0 1 4 336 1700000000 1700000001 REJECT OK",
        "2 1 eni-1 10.0.0.1 10.0.0.2 5 6 47 1 1 1700000000 1700000001 ACCEPT OK",
        "2 1 eni-1 10.0.0.1 10.0.0.2 5 6 200 1 1 1700000000 1700000001 ACCEPT OK",
        "02  1\teni-1 10.0.0.1 10.0.0.2 005 6 06 1 1 1700000000 1700000001 ACCEPT OK",
    ]
    for line in lines:
        assert only_event(_parser().parse(line.encode())) == only_event(general.parse(line)), line
    # what int() would take but the general path refuses: both give the same error
    refused = [
        V2.replace(" 20641 ", " +20641 "),
        V2.replace(" 20641 ", " 20_641 "),
        V2.replace(" 20641 ", " \u0664\u0664\u0663 "),  # Arabic-Indic digits
        V2.replace("2 ", "-2 ", 1),
        V2.replace(" 20641 ", " -20641 "),
        V2.replace(" 20641 ", " 70000 "),
    ]
    for line in refused:
        ours, theirs = only_error(_parser().parse(line.encode())), only_error(general.parse(line))
        assert ours.reason == theirs.reason, line
