"""Vector's parse_aws_vpc_flow_log cases (../shared/corpus/vpcflow/vrl/cases.json).

Vector keeps its own field names and epoch integers; the mapping below says
where each of its fields lands in segwatch's ECS event.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from detector.parsers import ParseOptions
from detector.parsers.vpcflow import VpcFlowParser

from .conftest import CORPUS, REFERENCE_TIME, flatten, only_event

CASES = json.loads((CORPUS / "vpcflow" / "vrl" / "cases.json").read_text())["cases"]

# Vector's key -> (segwatch's flattened key, how Vector's value is written there)
WHERE: dict[str, tuple[str, Any]] = {
    "srcaddr": ("source.ip", str), "dstaddr": ("destination.ip", str),
    "srcport": ("source.port", int), "dstport": ("destination.port", int),
    "protocol": ("network.iana_number", str), "packets": ("network.packets", int),
    "bytes": ("network.bytes", int), "account_id": ("cloud.account.id", str),
    "action": ("event.action", str), "log_status": ("aws.vpcflow.log_status", str),
    "interface_id": ("aws.vpcflow.interface_id", str), "version": ("aws.vpcflow.version", str),
    "vpc_id": ("aws.vpcflow.vpc_id", str), "subnet_id": ("aws.vpcflow.subnet_id", str),
    "instance_id": ("aws.vpcflow.instance_id", str), "tcp_flags": ("aws.vpcflow.tcp_flags", str),
    "type": ("aws.vpcflow.type", str), "pkt_srcaddr": ("aws.vpcflow.pkt_srcaddr", str),
    "pkt_dstaddr": ("aws.vpcflow.pkt_dstaddr", str), "region": ("cloud.region", str),
    "az_id": ("cloud.availability_zone", str), "flow_direction": ("network.direction", str),
    "pkt_src_aws_service": ("aws.vpcflow.pkt_src_service", str),
    "pkt_dst_aws_service": ("aws.vpcflow.pkt_dst_service", str),
    "traffic_path": ("aws.vpcflow.traffic_path", str),
    "start": ("event.start", None), "end": ("event.end", None),
    "sublocation_type": ("aws.vpcflow.sublocation.type", str),
    "sublocation_id": ("aws.vpcflow.sublocation.id", str),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_vector_case(case: dict[str, Any]) -> None:
    parser = VpcFlowParser(ParseOptions(reference_time=REFERENCE_TIME, vpc_format=case["format"]))
    event = flatten(only_event(parser.parse(case["input"])))
    for key, value in (case["expected"] or {}).items():
        target, kind = WHERE[key]
        if value is None:
            assert target not in event, f"{key} is '-', so {target} must be absent"
        elif kind is None:
            from datetime import UTC, datetime

            iso = datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            assert event[target] == iso, key
        else:
            assert event[target] == kind(value), f"{key} -> {target}"
