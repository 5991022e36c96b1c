"""iptables / nftables LOG records in their wrappings."""

from __future__ import annotations

import json
import re

from detector.parsers import ParseOptions
from detector.parsers.iptables import IptablesParser

from .conftest import REFERENCE_TIME, flatten, only_error, only_event

BODY = "IN=eth0 OUT= MAC=00:11:22:33:44:55:66:77:88:99:aa:bb:08:00 SRC=198.51.100.7 DST=10.0.3.4 LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID=4242 DF PROTO=TCP SPT=51515 DPT=5432 WINDOW=64240 RES=0x00 SYN URGP=0"


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


def test_rfc5424_header_fields_and_structured_data_with_spaces_and_escapes() -> None:
    sd = r'[meta sequenceId="7" note="a b \] c \"q\""][origin@32473 ip="192.0.2.1"]'
    ev = _parse(f"<4>1 2026-11-25T10:00:00Z fw1 kernel 4242 NETFILTER {sd} DROP-IN: {BODY}")
    assert ev["iptables.prefix"] == "DROP-IN:" and ev["event.action"] == "drop_in"
    assert ev["log.syslog.hostname"] == "fw1" and ev["log.syslog.appname"] == "kernel"
    assert ev["log.syslog.procid"] == "4242" and ev["log.syslog.msgid"] == "NETFILTER"
    assert ev["log.syslog.priority"] == 4 and ev["log.syslog.version"] == "1"
    assert ev["log.syslog.structured_data.meta.note"] == 'a b ] c "q"'
    assert ev["log.syslog.structured_data.origin@32473.ip"] == "192.0.2.1"
    nil = _parse(f"<4>1 2026-11-25T10:00:00Z fw1 kernel - - - DROP: {BODY}")
    assert "log.syslog.procid" not in nil and "log.syslog.structured_data" not in nil
    bad = only_error(
        IptablesParser().parse(f"<4>1 2026-11-25T10:00:00Z fw1 kernel - - [x DROP: {BODY}")
    )
    assert "structured data is not well formed" in bad.reason


def test_dmesg_uptime_and_wall_clock_stamps() -> None:
    ev = _parse(f"[12345.678901] DROP: {BODY}")
    assert ev["@timestamp"] == "2033-05-18T03:33:20.000Z" and ev["iptables.prefix"] == "DROP:"
    ev = _parse(f"[Tue Dec  1 10:00:00 2026] DROP: {BODY}", syslog_timezone="Europe/Berlin")
    assert ev["@timestamp"] == "2026-12-01T09:00:00.000Z" and ev["event.action"] == "drop"


def test_ipv6_addresses_are_rfc5952_text() -> None:
    line = (
        "Jan 22 09:05:05 h kernel: v6: IN=eth0 OUT= SRC=FE80:0000:0000:0000:0202:B3FF:FE1E:8329 "
        "DST=2001:0db8:0000:0000:0001:0000:0000:0001 LEN=104 TC=0 HOPLIMIT=64 FLOWLBL=1 "
        "PROTO=UDP SPT=1 DPT=2 LEN=8"
    )
    ev = _parse(line)
    assert (
        ev["source.ip"] == "fe80::202:b3ff:fe1e:8329"
        and ev["destination.ip"] == "2001:db8::1:0:0:1"
    )
    assert ev["related.ip"] == ["fe80::202:b3ff:fe1e:8329", "2001:db8::1:0:0:1"]


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
    line = "Jan 22 09:05:05 h kernel: [ 12.5] v6: IN=eth0 OUT= SRC=2001:db8::1 DST=2001:db8::2 LEN=104 TC=0 HOPLIMIT=64 FLOWLBL=1 PROTO=ICMPv6 TYPE=128 CODE=0 ID=3427 SEQ=1"
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


def _fast_and_general(line: str, opts: ParseOptions) -> tuple[object, object]:
    """What the fast path gives (None: declined) and what the general path gives."""
    from detector.parsers._common import FieldError
    from detector.parsers.iptables import _fast_line, parse_kernel_line

    def run(fn: object) -> object:
        try:
            return fn(line, opts, "iptables")  # type: ignore[operator]
        except FieldError as exc:
            return ("error", exc.reason)

    return run(_fast_line), run(parse_kernel_line)


def test_fast_path_and_general_path_build_the_same_event() -> None:
    opts = ParseOptions(reference_time=REFERENCE_TIME, syslog_year=2026)
    head = "<4>Nov 25 09:00:01 web-1 kernel: "
    tcp = "IN=eth0 OUT= MAC=02:42:ac:11:00:02:02:42:ac:11:00:01:08:00 SRC=198.51.100.23 DST=10.0.1.10 LEN=60 TOS=0x10 PREC=0x00 TTL=49 ID=54321 DF PROTO=TCP SPT=61000 DPT=3389 WINDOW=29200 RES=0x00 ACK SYN URGP=0"
    udp = "IN= OUT=eth1 SRC=10.0.1.10 DST=10.0.1.10 LEN=76 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=UDP SPT=123 DPT=123 LEN=56"
    lines = [
        head + "DROP-IN: " + tcp,
        head + "[ 9123.000001] ACCEPT " + tcp,
        "Nov 25 09:00:01 web-1 kernel: " + tcp,  # no priority, no prefix
        head + "DROP-IN: " + tcp + " MARK=0x1f",
        head + "DROP-IN: " + tcp.replace("MAC=02:42:ac:11:00:02:02:42:ac:11:00:01:08:00", "MAC="),
        head + "DROP-IN: " + tcp.replace("MAC=02:42:ac:11:00:02:02:42:ac:11:00:01:08:00", "MAC=ff"),
        head + "LOG: " + udp,
        head + "LOG: " + udp.replace("LEN=56", "LEN=99999"),  # the general path refuses it
        head + "DROP-IN: " + tcp.replace("SPT=61000", "SPT=70000"),
        head + "DROP-IN: " + tcp.replace("WINDOW=29200", "WINDOW=9999999999"),
        head + "DROP-IN: " + tcp.replace("SRC=198.51.100.23", "SRC=198.51.100.300"),
        head.replace("Nov 25", "Feb 30") + "DROP-IN: " + tcp,
        head + "FOOIN=x " + tcp,  # '=' in the prefix: declined
        head + "[WAN_LOCAL-default-D]" + tcp,  # Ubiquiti: declined
        head + "DROP-IN:" + tcp,  # no space before IN=
    ]
    fired = 0
    for line in lines:
        fast, general = _fast_and_general(line, opts)
        if fast is not None:
            fired += 1
            assert fast == general, line
    assert fired >= 6  # the common shapes really take the fast path
    # and the parser as a whole gives what the general path gives, declined or not
    for line in lines:
        _, general = _fast_and_general(line, opts)
        (result,) = IptablesParser(opts).parse(line)
        if isinstance(general, tuple):
            assert only_error([result]).reason == general[1], line
        else:
            assert result == general, line


def test_fast_path_agrees_with_the_general_path_on_the_corpus() -> None:
    from .conftest import CORPUS

    opts = ParseOptions(reference_time=REFERENCE_TIME, syslog_year=2026)
    lines = [
        line
        for path in sorted((CORPUS / "iptables").rglob("*.log"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    assert len(lines) > 10
    # the corpus is mostly Ubiquiti's bracketed prefixes, which the fast path
    # declines: each line again with a plain prefix exercises it
    lines += [re.sub(r"\[[^\]]*\](?=IN=)", "FW-DROP: ", line) for line in lines]
    fired = 0
    for line in lines:
        fast, general = _fast_and_general(line, opts)
        fired += fast is not None
        assert fast is None or fast == general, line
    assert fired > 10
