"""Calico flow logs / deny logs and Cilium Hubble flows, from the corpus samples."""

from __future__ import annotations

import json

from detector.parsers import ParseOptions, detect_family
from detector.parsers.calico import CalicoParser
from detector.parsers.hubble import HubbleParser

from .conftest import CORPUS, REFERENCE_TIME, flatten, only_event

CALICO = CORPUS / "calico" / "tigera-cs-observability-clinic"
HUBBLE = CORPUS / "hubble"
OPTS = ParseOptions(reference_time=REFERENCE_TIME)


def test_calico_flow_log_carries_kubernetes_identity() -> None:
    line = (CALICO / "flows.log.jsonl").read_text().strip()
    ev = only_event(CalicoParser(OPTS).parse(line))
    flat = flatten(ev)
    assert flat["event.start"] == "2022-08-04T13:59:02.000Z"
    assert flat["@timestamp"] == flat["event.end"] == "2022-08-04T14:04:02.000Z"
    assert flat["event.type"] == ["connection", "denied"] and flat["event.action"] == "deny"
    dst = ev["destination"]["kubernetes"]
    assert dst["namespace"] == "hipstershop"
    assert dst["labels"] == {
        "app": "checkoutservice",
        "pod-template-hash": "598d5b586d",
        "tenant": "hipstershop",
    }
    assert dst["workload"] == "checkoutservice-598d5b586d-*"
    assert ev["source"]["kubernetes"]["labels"] == {"run": "multitool"}
    assert "port" not in ev["source"]  # source_port is null in the record
    # reporter=dst: bytes_in (300) were sent by the source
    assert (flat["source.bytes"], flat["destination.bytes"], flat["network.bytes"]) == (300, 0, 300)
    assert flat["rule.name"] == "hipstershop/app-hipstershop.checkoutservice"
    assert [p["tier"] for p in ev["calico"]["policies"]] == ["security", "app-hipstershop"]


def test_calico_felix_deny_records() -> None:
    lines = (CALICO / "felix-syslog-deny.log").read_text().splitlines()
    events = [only_event(CalicoParser(OPTS).parse(line)) for line in lines]
    assert len(events) == 4
    first = flatten(events[0])
    assert first["@timestamp"].endswith("-08-04T16:14:12.000Z")
    assert (first["source.ip"], first["destination.ip"]) == ("10.0.1.10", "147.75.40.148")
    assert (first["destination.port"], first["network.transport"]) == (443, "tcp")
    assert first["source.bytes"] == 120 and first["network.direction"] == "egress"
    assert first["rule.name"] == "hep-external" and first["event.outcome"] == "failure"


def test_calico_open_source_deny_log_is_a_calico_event() -> None:
    line = (
        "Mar  3 14:10:18 node-1 kernel: calico-packet: IN=cali12 OUT=eth0 SRC=10.65.0.4 "
        "DST=10.65.1.9 LEN=60 TTL=63 ID=1 DF PROTO=TCP SPT=40000 DPT=6379 SYN URGP=0"
    )
    ev = flatten(only_event(CalicoParser(OPTS).parse(line)))
    assert ev["event.dataset"] == "segwatch.calico"
    assert ev["event.type"] == ["connection", "denied"] and ev["destination.port"] == 6379


def test_hubble_exporter_records() -> None:
    lines = (HUBBLE / "cilium-docs" / "export-fieldmask-sample.jsonl").read_text().splitlines()
    icmp, tcp = (flatten(only_event(HubbleParser(OPTS).parse(line))) for line in lines)
    assert icmp["event.reason"] == "INVALID_SOURCE_IP" and icmp["network.transport"] == "ipv6-icmp"
    assert tcp["@timestamp"] == "2023-08-21T12:12:18.510Z"
    assert tcp["event.action"] == "dropped" and tcp["event.reason"] == "POLICY_DENIED"
    assert (tcp["source.port"], tcp["destination.port"]) == (44916, 80)
    assert tcp["destination.kubernetes.pod.name"] == "deathstar-7848d6c4d5-th9v2"


def test_hubble_full_record_labels_and_namespace_labels() -> None:
    doc = json.loads(
        (HUBBLE / "imroc-tke-guide" / "flow-sample-curl-nginx.pretty.json").read_text()
    )
    ev = only_event(HubbleParser(OPTS).parse(json.dumps(doc)))
    src = ev["source"]["kubernetes"]
    assert src["labels"] == {"app": "curl"} and src["namespace"] == "test"
    assert src["namespace_labels"] == {"kubernetes.io/metadata.name": "test"}
    assert ev["network"]["direction"] == "egress" and ev["hubble"]["verdict"] == "FORWARDED"
    assert ev["event"]["type"] == ["connection", "allowed"]


def test_hubble_bare_flow_and_audit_verdict() -> None:
    flow = {
        "time": "2026-01-01T00:00:00.5Z",
        "verdict": "AUDIT",
        "policy_match_type": 2,
        "IP": {"source": "10.0.0.1", "destination": "10.0.0.2"},
        "l4": {"UDP": {"source_port": 5353, "destination_port": 53}},
    }
    ev = only_event(HubbleParser(OPTS).parse(json.dumps(flow)))
    assert ev["event"]["action"] == "audit" and ev["event"]["outcome"] == "success"
    assert ev["hubble"]["policy_match_type"] == 2 and ev["destination"]["port"] == 53


def test_auto_detection_per_record() -> None:
    samples = {
        "vpcflow": "2 1 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 1 2 ACCEPT OK",
        "iptables": "Mar  3 14:10:18 h kernel: DROP: IN=eth0 SRC=1.2.3.4 DST=5.6.7.8 PROTO=UDP",
        "calico": (CALICO / "flows.log.jsonl").read_text(),
        "hubble": (HUBBLE / "cilium-docs" / "export-fieldmask-sample.jsonl")
        .read_text()
        .splitlines()[0],
    }
    for family, text in samples.items():
        assert detect_family(text) == family, family
    assert detect_family("hello world") is None
