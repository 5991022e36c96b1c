"""iptables / nftables LOG records in their wrappings."""

from __future__ import annotations

import json

from detector.parsers import ParseOptions
from detector.parsers.iptables import IptablesParser

from .conftest import REFERENCE_TIME, flatten, only_error, only_event

BODY = "IN=eth0 OUT= MAC=00:11:22:33:44:55:66:77:88:99:aa:bb:08:00 SRC=198.51.100.7 DST=10.0.3.4 LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID=4242 DF PROTO=TCP SPT=51515 DPT=5432 WINDOW=64240 RES=0x00 SYN URGP=0"  # noqa: E501


def _parse(line: str, **kw: object) -> dict[str, object]:
    opts = ParseOptions(reference_time=REFERENCE_TIME, **kw)  # type: ignore[arg-type]
    return flatten(only_event(IptablesParser(opts).parse(line)))


def test_rfc3164_with_prefix_and_configured_year_and_zone() -> None:
    ev = _parse(
        f"<4>Mar  3 14:10:18 db-1 kernel: DROP-IN: {BODY}",
        syslog_year=2025,
        syslog_timezone="Europe/Berlin",
    )
    assert ev["@timestamp"] == "2025-03-03T13:10:18.000Z"  # 14:10 CET is 13:10 UTC
    assert ev["event.action"] == "drop_in" and ev["event.type"] == ["connection", "denied"]
    assert ev["iptables.prefix"] == "DROP-IN:" and ev["observer.name"] == "db-1"
    assert ev["destination.port"] == 5432 and ev["iptables.tcp.flags"] == ["SYN"]
    assert ev["network.direction"] == "ingress"
    assert ev["source.mac"] == "66-77-88-99-AA-BB" and ev["iptables.ether_type"] == 0x0800


def test_year_less_line_from_december_read_in_january_is_last_year() -> None:
    jan_2026 = 1767312000.0  # 2026-01-02
    opts = ParseOptions(reference_time=jan_2026)
    ev = only_event(IptablesParser(opts).parse(f"Dec 31 23:59:59 fw kernel: {BODY}"))
    assert ev["@timestamp"] == "2025-12-31T23:59:59.000Z"


def test_rfc5424() -> None:
    ev = _parse(f"<4>1 2026-11-25T10:00:00.123+01:00 fw1 kernel - - - ACCEPT-OUT: {BODY}")
    assert ev["@timestamp"] == "2026-11-25T09:00:00.123Z"
    assert ev["observer.name"] == "fw1" and ev["event.type"] == ["connection", "allowed"]


def test_journald_export_json() -> None:
    doc = {
        "MESSAGE": f"REJECT-FWD: {BODY.replace('OUT= ', 'OUT=eth1 ')}",
        "__REALTIME_TIMESTAMP": "1764064800000000",
        "_HOSTNAME": "gw",
    }
    ev = _parse(json.dumps(doc))
    assert ev["@timestamp"] == "2025-11-25T10:00:00.000Z" and ev["observer.name"] == "gw"
    assert ev["event.action"] == "reject_fwd" and ev["network.direction"] == "unknown"
    assert ev["observer.egress.interface.name"] == "eth1"


def test_prefix_table_is_configurable() -> None:
    ev = _parse(
        f"Mar  3 14:10:18 h kernel: AUDIT-QUARANTINE: {BODY}",
        prefix_actions=(("quarantine", "denied"),),
    )
    assert ev["event.type"] == ["connection", "denied"]
    assert _parse(f"Mar  3 14:10:18 h kernel: SEEN: {BODY}")["event.outcome"] == "unknown"


def test_ipv6_icmp_type_and_code() -> None:
    line = "Jan 22 09:05:05 h kernel: [ 12.5] v6: IN=eth0 OUT= SRC=2001:db8::1 DST=2001:db8::2 LEN=104 TC=0 HOPLIMIT=64 FLOWLBL=1 PROTO=ICMPv6 TYPE=128 CODE=0 ID=3427 SEQ=1"  # noqa: E501
    ev = _parse(line)
    assert ev["network.type"] == "ipv6" and ev["network.transport"] == "ipv6-icmp"
    assert (ev["iptables.icmp.type"], ev["iptables.icmp.code"]) == (128, 0)
    assert "source.port" not in ev and ev["network.community_id"].startswith("1:")


def test_calico_packet_prefix_means_denied() -> None:
    ev = _parse(f"Mar  3 14:10:18 node-1 kernel: calico-packet: {BODY}")
    assert ev["event.type"] == ["connection", "denied"]


def test_bare_kernel_line_gets_the_reference_time() -> None:
    ev = _parse(f"[12345.678] DROP: {BODY}")
    assert ev["@timestamp"] == "2033-05-18T03:33:20.000Z"


def test_truncated_record_is_an_error() -> None:
    err = only_error(IptablesParser().parse("May  5 20:46:45 gw kernel: TTL=126 ID=1 PROTO=TCP"))
    assert "truncated" in err.reason
