"""Who opened a connection: a truth table per log family (real records through the
real parsers), the model's and the learned evidence, the port ranges, and the
property that a forbidden connection's replies never look like a connection."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.analyze import Analysis
from detector.connection import ServerPorts, from_ports, port_class
from detector.detect import DetectorSettings, Engine
from detector.model import compile_model, model_from_text
from detector.parsers import ParseOptions, make_parser

from .model.conftest import flow

MODEL = compile_model(
    model_from_text(
        """apiVersion: segwatch/v1
metadata: {name: conn}
zones:
  - {name: corp, cidrs: [10.0.1.0/24]}
  - {name: app, cidrs: [10.0.2.0/24]}
  - {name: db, cidrs: [10.0.3.0/24], tags: {sensitivity: restricted}}
  - {name: k8s, cidrs: [10.244.0.0/16]}
  - {name: pods, cidrs: [10.65.0.0/16]}
flows:
  - {id: app-db, from: app, to: db, ports: [5432]}
  - {id: corp-app, from: corp, to: app, ports: [443]}
""",
        "conn.yaml",
    )
)
VPC_FLAGS = (
    "${version} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} ${tcp-flags} "
    "${start} ${end} ${action} ${log-status}"
)
_IPT = (
    "Nov 25 10:00:00 fw kernel: {prefix}: IN=eth0 OUT=eth1 SRC={src} DST={dst} LEN=60 TOS=0x00 "
    "PREC=0x00 TTL=63 ID=1 DF PROTO=TCP SPT={sport} DPT={dport} WINDOW=64240 RES=0x00 {flags} "
    "URGP=0"
)
_ICMP = (
    "Nov 25 10:00:00 fw kernel: ACCEPT: IN=eth0 OUT=eth1 SRC={src} DST={dst} LEN=84 TOS=0x00 "
    "PREC=0x00 TTL=63 ID=1 PROTO=ICMP TYPE={kind} CODE=0 ID=7 SEQ=1"
)
_HUBBLE = (
    '{{"flow": {{"time": "2026-11-25T09:02:00Z", "verdict": "FORWARDED", "IP": {{"source": '
    '"{src}", "destination": "{dst}"}}, "l4": {{"TCP": {{"source_port": {sport}, '
    '"destination_port": {dport}, "flags": {{{flags}}}}}}}{reply}}}}}'
)
_CALICO = (
    '{{"start_time": 1764064800, "end_time": 1764065100, "source_ip": "{src}", '
    '"source_port": {sport}, "dest_ip": "{dst}", "dest_port": {dport}, "proto": "tcp", '
    '"action": "allow", "reporter": "{reporter}", "bytes_in": 10, "bytes_out": 10, '
    '"packets_in": 1, "packets_out": 1}}'
)

_ZEEK = (
    '{{"ts": 1764064800.5, "uid": "C1", "id.orig_h": "{src}", "id.orig_p": {sport}, '
    '"id.resp_h": "{dst}", "id.resp_p": {dport}, "proto": "tcp", "conn_state": "{state}"}}'
)


def parse(family: str, line: str, vpc_format: str | None = None) -> dict[str, Any]:
    options = ParseOptions(vpc_format=vpc_format, syslog_year=2026, reference_time=1.80e9)
    [event] = make_parser(family, options).parse(line)
    assert isinstance(event, dict), event
    return event


# (family, record, VPC format, expected (initiator, evidence, verdict, zones as initiated))
TRUTH = [
    # VPC Flow Logs v2: no flags, so the model decides, then the port ranges
    ("vpcflow", "2 1 eni-1 10.0.2.5 10.0.3.8 40100 5432 6 3 180 1764064800 1764064860 ACCEPT OK",
     None, ("source", "model", "allowed", "app", "db")),
    ("vpcflow", "2 1 eni-1 10.0.3.8 10.0.2.5 5432 40100 6 3 180 1764064800 1764064860 ACCEPT OK",
     None, ("destination", "model", "allowed", "app", "db")),
    ("vpcflow", "2 1 eni-1 10.0.3.8 10.0.1.5 5432 61103 6 3 180 1764064800 1764064860 ACCEPT OK",
     None, ("destination", "model", "violation", "corp", "db")),
    ("vpcflow", "2 1 eni-1 10.0.3.8 10.0.1.5 8080 61103 6 3 180 1764064800 1764064860 ACCEPT OK",
     None, ("destination", "ports", "violation", "corp", "db")),
    ("vpcflow", "2 1 eni-1 10.0.3.8 10.0.1.5 40000 61103 6 3 180 1764064800 1764064860 ACCEPT OK",
     None, ("unknown", "none", "violation", "db", "corp")),
    # VPC v3+: tcp-flags, SYN (2) opens, SYN-ACK (18) answers, whatever the ports say
    ("vpcflow", "3 10.0.3.8 10.0.1.5 5432 61103 6 2 1764064800 1764064860 ACCEPT OK",
     VPC_FLAGS, ("source", "tcp_flags", "violation", "db", "corp")),
    ("vpcflow", "3 10.0.1.5 10.0.3.8 61103 5432 6 18 1764064800 1764064860 ACCEPT OK",
     VPC_FLAGS, ("destination", "tcp_flags", "violation", "db", "corp")),
    ("vpcflow", "3 10.0.3.8 10.0.1.5 5432 61103 6 19 1764064800 1764064860 ACCEPT OK",
     VPC_FLAGS, ("destination", "tcp_flags", "violation", "corp", "db")),
    ("vpcflow", "3 10.0.3.8 10.0.1.5 5432 61103 6 1 1764064800 1764064860 ACCEPT OK",
     VPC_FLAGS, ("destination", "model", "violation", "corp", "db")),
    # iptables / nftables LOG lines: SYN without ACK opens, SYN-ACK answers
    ("iptables", _IPT.format(prefix="DROP", src="10.0.1.5", dst="10.0.3.8", sport=61103,
                             dport=5432, flags="SYN"),
     None, ("source", "tcp_flags", "blocked_attempt", "corp", "db")),
    ("iptables", _IPT.format(prefix="ACCEPT", src="10.0.3.8", dst="10.0.1.5", sport=5432,
                             dport=61103, flags="ACK SYN"),
     None, ("destination", "tcp_flags", "violation", "corp", "db")),
    ("iptables", _IPT.format(prefix="ACCEPT", src="10.0.3.8", dst="10.0.2.5", sport=5432,
                             dport=40100, flags="ACK PSH"),
     None, ("destination", "model", "allowed", "app", "db")),
    ("iptables", _ICMP.format(src="10.0.1.5", dst="10.0.3.8", kind=8),
     None, ("source", "icmp_type", "violation", "corp", "db")),
    ("iptables", _ICMP.format(src="10.0.3.8", dst="10.0.1.5", kind=0),
     None, ("destination", "icmp_type", "violation", "corp", "db")),
    # Hubble: is_reply first, then the flags
    ("hubble", _HUBBLE.format(src="10.244.2.8", dst="10.244.1.7", sport=5432, dport=51234,
                              flags='"ACK": true', reply=', "is_reply": true'),
     None, ("destination", "is_reply", "allowed", "k8s", "k8s")),
    ("hubble", _HUBBLE.format(src="10.244.1.7", dst="10.244.2.8", sport=51234, dport=5432,
                              flags='"SYN": true', reply=', "is_reply": false'),
     None, ("source", "is_reply", "allowed", "k8s", "k8s")),
    ("hubble", _HUBBLE.format(src="10.244.2.8", dst="10.244.1.7", sport=5432, dport=51234,
                              flags='"SYN": true, "ACK": true', reply=""),
     None, ("destination", "tcp_flags", "allowed", "k8s", "k8s")),
    # Calico flow logs are written per connection, from its initiator's side
    ("calico", _CALICO.format(src="10.65.1.4", dst="10.0.3.8", sport=45000, dport=5432,
                              reporter="dst"),
     None, ("source", "reporter", "violation", "pods", "db")),
    ("calico", _CALICO.format(src="10.65.1.4", dst="10.0.3.8", sport="null", dport=5432,
                              reporter="src"),
     None, ("source", "reporter", "violation", "pods", "db")),
    # Zeek's originator is the source, whatever the ports say; midstream traffic is no evidence
    ("zeek", _ZEEK.format(src="10.0.1.5", dst="10.0.3.8", sport=61103, dport=5432, state="SF"),
     None, ("source", "originator", "violation", "corp", "db")),
    ("zeek", _ZEEK.format(src="10.0.3.8", dst="10.0.1.5", sport=5432, dport=61103, state="S0"),
     None, ("source", "originator", "violation", "db", "corp")),
    ("zeek", _ZEEK.format(src="10.0.3.8", dst="10.0.1.5", sport=5432, dport=61103, state="OTH"),
     None, ("destination", "model", "violation", "corp", "db")),
]  # fmt: skip


@pytest.mark.parametrize(("family", "record", "fmt", "expected"), TRUTH)
def test_the_initiator_of_each_family(
    family: str, record: str, fmt: str | None, expected: tuple[str, ...]
) -> None:
    placement = MODEL.place(parse(family, record, fmt))
    got = (placement.initiator, placement.evidence, placement.verdict,
           placement.source_zone, placement.destination_zone)  # fmt: skip
    assert got == expected, f"{family}: {record}"


def test_model_evidence_a_rule_one_way_then_declared_services() -> None:
    assert MODEL.initiator("app", "db", 6, 40000, 5432) == ("source", "model")
    assert MODEL.initiator("db", "app", 6, 5432, 40000) == ("destination", "model")
    # no rule between corp and db, but 5432 is a service of db and 61103 none of corp's
    assert MODEL.initiator("db", "corp", 6, 5432, 61103) == ("destination", "model")
    assert MODEL.initiator("corp", "corp", 6, 50000, 50001) is None
    assert MODEL.initiator("corp", "db", 17, 40000, 5432) is None  # the rule is TCP only


def test_learned_server_ports_decide_what_the_model_and_the_ranges_cannot() -> None:
    learned = ServerPorts()
    record = flow("10.0.1.9", "10.0.1.5", 50001, sport=40000)  # both ephemeral, one zone
    assert MODEL.place(record, learned).initiator == "unknown"
    learned.learn("10.0.1.9", "corp", 6, 40000, 0)
    placement = MODEL.place(record, learned)
    assert (placement.initiator, placement.evidence) == ("destination", "learned")
    other = flow("10.0.1.8", "10.0.1.6", 50001, sport=40000)  # same zone, another host
    assert MODEL.place(other, learned).evidence == "learned"
    again = ServerPorts()
    again.load(learned.state())
    assert again.ports == learned.ports


def test_the_engine_learns_server_ports_from_decided_replies() -> None:
    engine = Engine(MODEL, DetectorSettings(learning_seconds=0))
    answer = parse("vpcflow", "3 10.0.1.9 10.0.1.5 40000 50001 6 18 1764064800 1764064860 "
                   "ACCEPT OK", VPC_FLAGS)  # fmt: skip
    engine.process(answer, engine.place(answer), "a")
    later = flow("10.0.1.9", "10.0.1.7", 50999, sport=40000)
    assert engine.place(later).evidence == "learned"


@pytest.mark.parametrize(
    ("sport", "dport", "side"),
    [(40000, 443, "source"), (443, 40000, "destination"), (8080, 61000, "destination"),
     (1023, 2049, "destination"), (50000, 40000, None), (80, 443, None), (0, 443, None),
     (None, 443, None)],
)  # fmt: skip
def test_port_ranges_as_the_last_resort(sport: int | None, dport: int, side: str | None) -> None:
    found = from_ports(sport, dport)
    assert (found.side if found else None) == side


def test_port_classes_are_the_iana_and_ephemeral_ranges() -> None:
    assert [port_class(p) for p in (0, 1023, 1024, 32767, 32768, 49152, 60999, 65535)] == [
        0, 0, 1, 1, 2, 2, 2, 2,
    ]  # fmt: skip


_hosts = st.sampled_from(["10.0.1.5", "10.0.2.7", "10.0.3.8", "8.8.8.8", "10.65.3.3"])


@settings(max_examples=300, deadline=None)
@given(
    client=_hosts,
    server=_hosts,
    dport=st.integers(1, 32767),
    sport=st.integers(32768, 65535),
    denied=st.booleans(),
)
def test_the_replies_of_a_forbidden_connection_raise_nothing_and_reverse_no_pair(
    client: str, server: str, dport: int, sport: int, denied: bool
) -> None:
    """For any connection the model forbids, its replies produce no alert, no new path
    and no reversed zone pair, in a run whose detectors are all awake."""
    request = flow(client, server, dport, sport=sport)
    if MODEL.place(request).verdict in ("allowed", "unmanaged") or client == server:
        return
    run = Analysis(MODEL, Engine(MODEL, DetectorSettings(learning_seconds=0)))
    zones = (MODEL.zone_of_ip(client), MODEL.zone_of_ip(server))
    for i in range(30):
        reply = flow(server, client, sport + i if sport + i <= 65535 else sport, sport=dport,
                     denied=denied, at=f"2026-11-25T10:{i:02d}:00.000Z")  # fmt: skip
        placement, _, alert = run.process(reply, f"r{i}")
        assert placement.reply, placement
        assert alert is None, alert
        assert (placement.source_zone, placement.destination_zone) == zones
        assert "new_path" not in reply["segmentation"].get("anomalies", [])
    assert not run.engine.book.alerts
    assert not run.engine.new_paths.paths
    assert all((s, d) == zones for s, d, _ in run.summary.matrix)


@pytest.mark.parametrize(("family", "record", "fmt", "expected"), TRUTH)
def test_the_initiator_host_is_the_address_of_the_side_that_opened(
    family: str, record: str, fmt: str | None, expected: tuple[str, ...]
) -> None:
    """The partition key (streams' normalize stage): the opener's address, told without
    learned state; the source's when nothing tells."""
    event = parse(family, record, fmt)
    opened_by = "destination" if expected[0] == "destination" else "source"
    assert MODEL.initiator_host(event) == event[opened_by]["ip"], f"{family}: {record}"


@settings(max_examples=300, deadline=None)
@given(
    client=_hosts,
    server=_hosts,
    dport=st.integers(1, 65535),
    sport=st.integers(1, 65535),
    flags=st.sampled_from([None, 2, 16, 24]),  # none, SYN, ACK, ACK PSH
)
def test_a_connections_records_get_one_key_wherever_a_scorer_would_tell_them_apart(
    client: str, server: str, dport: int, sport: int, flags: int | None
) -> None:
    """Request and reply of one connection get the same initiator host whenever the log,
    the model or the port ranges tell who opened it; when nothing does, each record is
    judged as written and keyed by its own source, as the scorer judges it."""
    if flags is None:
        request = flow(client, server, dport, sport=sport)
        reply = flow(server, client, sport, sport=dport)
    else:
        line = "3 {} {} {} {} 6 {} 1764064800 1764064860 ACCEPT OK"
        request = parse("vpcflow", line.format(client, server, sport, dport, flags), VPC_FLAGS)
        answer = 18 if flags == 2 else flags  # SYN is answered by SYN-ACK
        reply = parse("vpcflow", line.format(server, client, dport, sport, answer), VPC_FLAGS)
    told = MODEL.place(request).initiator != "unknown"
    assert told == (MODEL.place(reply).initiator != "unknown")
    if told:
        assert MODEL.initiator_host(request) == MODEL.initiator_host(reply)
        opener = MODEL.place(request)
        assert MODEL.initiator_host(request) == (client if opener.initiator == "source"
                                                 else server)  # fmt: skip
    else:
        assert (MODEL.initiator_host(request), MODEL.initiator_host(reply)) == (client, server)
