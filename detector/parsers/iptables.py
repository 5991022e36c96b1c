"""iptables / nftables LOG records (netfilter's kernel log format) -> ECS flow events.

Accepted wrappings of the kernel line ``PREFIX IN=.. OUT=.. MAC=.. SRC=.. DST=..
LEN=.. PROTO=.. SPT=.. DPT=..``:

- bare, as ``dmesg`` prints it (optionally after a ``[uptime]`` stamp);
- RFC 3164 syslog (``<PRI>Mmm dd hh:mm:ss host kernel: ...``, year and zone
  from the options) and RFC 3339-stamped syslog (``2021-03-12T14:10:18Z host ...``);
- RFC 5424 syslog (``<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG``);
- JSON: journald's export (``MESSAGE``, ``__REALTIME_TIMESTAMP``, ``_HOSTNAME``)
  and shippers' ``{"message": ..., "@timestamp": ...}`` documents.

The log prefix (``DROP-IN:``, ``[wan-lan-default-D]``, ``calico-packet:``) is
kept in ``iptables.prefix``, gives ``event.action`` and, through the options'
prefix table, whether the packet was allowed or denied. Ubiquiti EdgeOS rule
prefixes ``[ruleset-rule-A|D|R]`` are understood as such. A record without a
timestamp (bare kernel lines) is stamped with the reference time ("now").
"""

from __future__ import annotations

import re
import socket
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from detector.communityid import community_id_packed
from detector.definitions import ECS_VERSION, Disposition, stream_fields
from detector.errors import ParseError
from detector.parsers import _envelope
from detector.parsers._common import (
    FieldError,
    FlowEvent,
    ParseOptions,
    ParseResult,
    add_endpoints,
    base_event,
    bsd_iso,
    check_datetime,
    check_raw,
    disposition_from_prefix,
    iso_datetime,
    parse_bsd_time,
    parse_int,
    parse_ip,
    parse_rfc3339,
    protocol,
    to_bytes,
)

__all__ = ["IptablesParser", "kernel_event", "parse_kernel_line"]

FAMILY = "iptables"

_SYSLOG = re.compile(
    r"""^(?:<(?P<pri>\d{1,3})>)?
    (?:(?P<v5424>1)\ )?
    (?:(?P<bsd>[A-Z][a-z]{2}\ [\ \d]\d\ \d{2}:\d{2}:\d{2})
      |(?P<iso>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?)
    )?\ *""",
    re.VERBOSE,
)
_IN_FIELD = re.compile(r"(?:^|[\s\]:])(?P<in>IN=)")
_MAC = re.compile(
    r"([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}):([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}):"
    r"([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})(?::[0-9A-Fa-f]{2})*$"
)
_UPTIME = re.compile(r"\[\s*\d+\.\d+\]\s*")
# dmesg -T: [Tue Dec  1 10:00:00 2026]
_DMESG_T = re.compile(
    r"^\[(?P<ctime>[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4})\]\s*"
)
# RFC 5424 SD-ELEMENT: [SD-ID (SP PARAM-NAME="PARAM-VALUE")*]; names are 1-32 printable
# characters but = SP ] "
_SD_NAME = r'[^\s=\]"]{1,32}'
_SD_PARAM = re.compile(rf'({_SD_NAME})="((?:[^"\\]|\\.)*)"')
_SD_ELEMENT = re.compile(rf'\[(?P<id>{_SD_NAME})(?P<params>(?: {_SD_NAME}="(?:[^"\\]|\\.)*")*)\]')
_SD_ESCAPE = re.compile(r'\\(["\\\]])')
_HEADER_INTS = (
    ("LEN", "length", 65535),
    ("TTL", "ttl", 255),
    ("ID", "id", 2**32 - 1),
    ("HOPLIMIT", "hop_limit", 255),
    ("FLOWLBL", "flow_label", 0xFFFFF),
)
_UBIQUITI = re.compile(r"^\[(?P<set>[^\]]+)-(?P<rule>default|\d+)-(?P<act>[ADR])\]$")
_UBIQUITI_ACTIONS: dict[str, tuple[str, Disposition]] = {
    "A": ("accept", "allowed"),
    "D": ("drop", "denied"),
    "R": ("reject", "denied"),
}
_PREFIX_WORDS = frozenset(("iptables", "ip6tables", "nftables", "nft", "kernel:"))
_TCP_FLAGS = frozenset(("CWR", "ECE", "URG", "ACK", "PSH", "RST", "SYN", "FIN"))
_FRAGMENT_FLAGS = frozenset(("CE", "DF", "MF"))


class IptablesParser:
    """Parses netfilter LOG records; stateless, one instance can serve any stream."""

    family = FAMILY

    def __init__(self, options: ParseOptions | None = None) -> None:
        self.options = options or ParseOptions()

    def parse(self, raw: bytes | str) -> list[ParseResult]:
        """One raw record -> one event (or none for a blank line, or an error)."""
        return parse_record(raw, self.options, FAMILY)


def parse_record(raw: bytes | str, opts: ParseOptions, family: str) -> list[ParseResult]:
    """Shared with the Calico family, whose open-source deny logs are LOG records."""
    data = to_bytes(raw)
    text = check_raw(data, family, opts)
    if isinstance(text, ParseError):
        return [text]
    if not text or text.isspace():
        return []
    inner: _envelope.Inner | None = None
    if text[:1] == "{":
        try:
            inners = _envelope.unwrap_json(_envelope.loads(text))
        except _envelope.EnvelopeError as exc:
            return [ParseError(family, f"JSON envelope {exc}", data)]
        if not inners or len(inners) != 1:
            return [ParseError(family, "JSON record has no 'message' or 'MESSAGE' field", data)]
        inner = inners[0]
    try:
        if inner is None:
            return [kernel_event(text, opts, family)]
        return [parse_kernel_line(inner.text, opts, family, inner, original=text)]
    except FieldError as exc:
        return [ParseError(family, exc.reason, data, exc.position)]


def kernel_event(line: str, opts: ParseOptions, family: str = FAMILY) -> FlowEvent:
    """A LOG line as read (no envelope): the fast path if it fits, else the general one.

    :raises FieldError: the line is not a complete LOG record.
    """
    return _fast_line(line, opts, family) or parse_kernel_line(line, opts, family)


def parse_kernel_line(
    line: str,
    opts: ParseOptions,
    family: str = FAMILY,
    inner: _envelope.Inner | None = None,
    original: str | None = None,
) -> FlowEvent:
    """One LOG line (with or without a syslog header) -> an event.

    :raises FieldError: the line is not a complete LOG record.
    """
    m = _IN_FIELD.search(line)
    start = m.start("in") if m else -1
    if start < 0 or " SRC=" not in line[start:]:
        raise FieldError(
            "not a complete netfilter LOG record: no IN=... SRC=... fields "
            "(truncated, or not an iptables/nftables LOG line)"
        )
    header, body = line[:start], line[start:]
    fields, flags = _fields(body)
    when, host, syslog, prefix = _header(header, opts, bare=inner is not None)
    if when is None and inner is not None:
        when = inner.timestamp
    if when is None:
        when = datetime.fromtimestamp(opts.reference_time, UTC)
    check_datetime(when, "timestamp", opts)

    action, disposition, rule = _action(prefix, opts)
    ev = base_event(
        family,
        iso_datetime(when),
        disposition,
        (original or line) if opts.keep_original else None,
        namespace=opts.namespace,
    )
    if action:
        ev["event"]["action"] = action

    proto_name = fields.get("PROTO")
    proto = protocol(proto_name, "PROTO")[0] if proto_name else None
    src = parse_ip(fields.get("SRC", ""), "SRC")
    dst = parse_ip(fields.get("DST", "") or "", "DST")
    sport = dport = None
    if proto in (6, 17, 132, 136):
        sport = _port(fields, "SPT")
        dport = _port(fields, "DPT")
    elif proto in (1, 58) and "TYPE" in fields:
        sport = parse_int(fields["TYPE"], "TYPE", 0, 255)
        dport = parse_int(fields.get("CODE", "0"), "CODE", 0, 255)
    add_endpoints(ev, src, dst, proto, sport, dport, icmp_type_code=True)

    in_dev, out_dev = fields.get("IN", ""), fields.get("OUT", "")
    net = ev.setdefault("network", {})
    net["direction"] = (
        "ingress" if in_dev and not out_dev else ("egress" if out_dev and not in_dev else "unknown")
    )
    observer: dict[str, Any] = {}
    if host or (inner and inner.host):
        observer["name"] = host or (inner.host if inner else None)
    if in_dev:
        observer["ingress"] = {"interface": {"name": in_dev}}
    if out_dev:
        observer["egress"] = {"interface": {"name": out_dev}}
    ipt = _iptables_fields(fields, flags, proto, prefix, ev)
    if rule is not None:
        ev["rule"] = {"name": rule[0], "id": rule[1]}
        ipt["ubiquiti"] = {"rule_set": rule[0], "rule_number": rule[1]}
        zones = rule[0].split("-")
        if len(zones) == 2:
            ipt["ubiquiti"].update(input_zone=zones[0], output_zone=zones[1])
            observer.setdefault("ingress", {})["zone"] = zones[0]
            observer.setdefault("egress", {})["zone"] = zones[1]
    if observer:
        ev["observer"] = observer
    if syslog:
        ev["log"] = {"syslog": syslog}
    ev["iptables"] = ipt
    return ev


def _fields(body: str) -> tuple[dict[str, str], list[str]]:
    """KEY=VALUE pairs and bare flags; a quoted ICMP-error packet ``[SRC=..]`` is skipped.

    A key seen twice keeps its first value, except the transport header's own
    ``LEN`` (UDP) and ``ID`` (ICMP), kept as ``ULEN`` / ``ICMPID``.
    """
    quoted = body.find(" [")
    if quoted >= 0:
        body = body[:quoted]
    fields: dict[str, str] = {}
    flags: list[str] = []
    for token in body.split():
        key, eq, value = token.partition("=")
        if not eq:
            flags.append(token)
        elif key not in fields:
            fields[key] = value
        elif key == "LEN":
            fields["ULEN"] = value
        elif key == "ID":
            fields["ICMPID"] = value
    return fields, flags


def _header(
    header: str, opts: ParseOptions, bare: bool
) -> tuple[datetime | None, str | None, dict[str, Any], str]:
    """(time, host, ``log.syslog.*``, log prefix) from the text before ``IN=``."""
    if bare:  # journald / shipper message: the text is the kernel's own
        return None, None, {}, _UPTIME.sub("", header).strip()
    ctime = _DMESG_T.match(header)
    if ctime:  # dmesg -T: the kernel's wall-clock rendering, in the local zone
        try:
            wall = datetime.strptime(" ".join(ctime["ctime"].split()), "%a %b %d %H:%M:%S %Y")
        except ValueError:
            raise FieldError(f"dmesg time {ctime['ctime']!r} is not a valid date",
                             "timestamp") from None  # fmt: skip
        rest = header[ctime.end() :]
        return wall.replace(tzinfo=opts.tz).astimezone(UTC), None, {}, rest.strip()
    m = _SYSLOG.match(header)
    assert m is not None  # every group is optional
    syslog: dict[str, Any] = {"priority": int(m["pri"])} if m["pri"] else {}
    when = None
    if m["bsd"]:
        when = parse_bsd_time(m["bsd"], opts)
    elif m["iso"]:
        when = parse_rfc3339(m["iso"], opts.tz)
        if when is None:
            raise FieldError(f"timestamp {m['iso']!r} is not a valid date", "timestamp")
    rest = header[m.end() :]
    host = None
    if m["v5424"]:
        if when is None:  # the timestamp field is there, but not a time: never "now"
            stamp = rest.split(" ", 1)[0]
            raise FieldError("RFC 5424 record has no timestamp (-): its time is unknown"
                             if stamp == "-" else
                             f"RFC 5424 timestamp {stamp[:40]!r} is not a valid date",
                             "timestamp")  # fmt: skip
        parts = rest.split(" ", 4)  # HOSTNAME APP-NAME PROCID MSGID, then SD and MSG
        if len(parts) < 5:
            raise FieldError("RFC 5424 header is cut short: expected HOSTNAME APP-NAME PROCID "
                             "MSGID STRUCTURED-DATA before the message", "header")  # fmt: skip
        syslog["version"] = "1"
        for name, value in zip(("hostname", "appname", "procid", "msgid"), parts, strict=False):
            if value != "-":
                syslog[name] = value
        host = syslog.get("hostname")
        structured, rest = _structured_data(parts[4])
        if structured:
            syslog["structured_data"] = structured
    elif "kernel:" in rest:
        before, _, rest = rest.partition("kernel:")
        host = before.split()[-1] if before.split() else None
    elif when is not None and (words := rest.split()) and len(words) > 1:
        host, rest = words[0], rest.split(None, 1)[1]
    prefix = _UPTIME.sub("", rest).strip()
    return when, host, syslog, prefix


def _structured_data(text: str) -> tuple[dict[str, dict[str, str]], str]:
    """RFC 5424 STRUCTURED-DATA (``-`` or ``[id name="value" ...]...``, values with
    ``\\"``, ``\\\\`` and ``\\]`` escaped) -> ({id: {name: value}}, the message after it).

    :raises FieldError: it is not well formed (the message cannot be told from it).
    """
    if text == "-" or text.startswith("- "):
        return {}, text[2:]
    found: dict[str, dict[str, str]] = {}
    position = 0
    while text.startswith("[", position):
        m = _SD_ELEMENT.match(text, position)
        if m is None:
            raise FieldError(f"RFC 5424 structured data is not well formed at "
                             f"{text[position:position + 40]!r}", "structured_data")  # fmt: skip
        found[m["id"]] = {name: _SD_ESCAPE.sub(r"\1", value)
                          for name, value in _SD_PARAM.findall(m["params"])}  # fmt: skip
        position = m.end()
    if not found:
        raise FieldError(f"RFC 5424 structured data is {text[:40]!r}: expected - or [id ...]",
                         "structured_data")  # fmt: skip
    return found, text[position:].lstrip()


def _action(
    prefix: str, opts: ParseOptions
) -> tuple[str | None, Disposition, tuple[str, str] | None]:
    """(event.action, disposition, Ubiquiti (rule set, rule number)) from the prefix."""
    return _action_cached(prefix, opts.prefix_actions)


@lru_cache(maxsize=4096)
def _action_cached(
    prefix: str, table: tuple[tuple[str, Disposition], ...]
) -> tuple[str | None, Disposition, tuple[str, str] | None]:
    m = _UBIQUITI.match(prefix)
    if m:
        action, disposition = _UBIQUITI_ACTIONS[m["act"]]
        return action, disposition, (m["set"], m["rule"])
    words = [w for w in prefix.rstrip(":").split() if w.lower() not in _PREFIX_WORDS]
    name = re.sub(r"[^a-z0-9]+", "_", " ".join(words).lower()).strip("_") or None
    return name, disposition_from_prefix(prefix, table), None


def _port(fields: dict[str, str], key: str) -> int | None:
    value = fields.get(key)
    return parse_int(value, key, 0, 65535) if value is not None else None


def _iptables_fields(
    fields: dict[str, str], flags: list[str], proto: int | None, prefix: str, ev: FlowEvent
) -> dict[str, Any]:
    """The packet's header fields under iptables.*, and the MACs under source/destination."""
    ipt: dict[str, Any] = {
        "input_device": fields.get("IN", ""),
        "output_device": fields.get("OUT", ""),
    }
    if prefix:
        ipt["prefix"] = prefix
    if "MAC" in fields:
        layout = _ethernet(fields["MAC"])
        if layout is not None:
            ev["destination"]["mac"], ev["source"]["mac"], ipt["ether_type"] = layout
        else:
            ipt["mac"] = fields["MAC"]  # not the Ethernet layout: kept as written
    # header fields only describe the packet: bounds are loose, so an odd value
    # (Elastic's sample has ICMP ID=98765) never costs the flow itself
    for key, name, hi in _HEADER_INTS:
        value = fields.get(key)
        if value is not None:
            ipt[name] = (
                int(value)
                if value.isdecimal() and len(value) < 11
                else parse_int(value, key, 0, hi)
            )
    for key, name in (
        ("TOS", "tos"),
        ("PREC", "precedence_bits"),
        ("TC", "traffic_class"),
        ("MARK", "mark"),
    ):
        if key in fields:
            ipt[name] = _hex_or_int(fields[key], key)
    frag = [f for f in flags if f in _FRAGMENT_FLAGS]
    if frag:
        ipt["fragment_flags"] = frag
    if proto == 6:
        tcp: dict[str, Any] = {"flags": [f for f in flags if f in _TCP_FLAGS]}
        if "WINDOW" in fields:
            tcp["window"] = parse_int(fields["WINDOW"], "WINDOW", 0, 2**32 - 1)
        if "RES" in fields:
            tcp["reserved_bits"] = _hex_or_int(fields["RES"], "RES")
        ipt["tcp"] = tcp
    elif proto in (17, 136) and "ULEN" in fields:
        ipt["udp"] = {"length": parse_int(fields["ULEN"], "LEN", 0, 65535)}
    elif proto in (1, 58):
        icmp: dict[str, Any] = {}
        for key, name in (("TYPE", "type"), ("CODE", "code"), ("ICMPID", "id"), ("SEQ", "seq")):
            if key in fields:
                icmp[name] = parse_int(fields[key], key.removeprefix("ICMP"), 0, 2**32 - 1)
        ipt["icmp"] = icmp
    elif proto == 50 and "SPI" in fields:
        ipt["esp"] = {"spi": _hex_or_int(fields["SPI"], "SPI")}
    return ipt


# The common record, whole: RFC 3164 syslog from the kernel, IPv4, TCP or UDP,
# fields in the order netfilter writes them. Anything else (IPv6, ICMP, other
# wrappings, odd prefixes) takes the general path, which explains what is wrong.
_FAST = re.compile(
    r"(?:<(\d{1,3})>)?([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) ([^\s:]+) kernel: "
    r"(?:\[\s*\d+\.\d+\]\s*)?((?:[^=\[\]]*[\s:])?)IN=(\S*) OUT=(\S*) (?:MAC=(\S*) )?"
    r"SRC=([\d.]{7,15}) DST=([\d.]{7,15}) LEN=(\d{1,10}) TOS=(0x[\dA-Fa-f]{1,2}) "
    r"PREC=(0x[\dA-Fa-f]{1,2}) TTL=(\d{1,10}) ID=(\d{1,10}) ((?:(?:CE|DF|MF) )*)"
    r"PROTO=(TCP|UDP) SPT=(\d{1,5}) DPT=(\d{1,5}) (?:LEN=(\d{1,5})|WINDOW=(\d{1,10}) "
    r"RES=(0x[\dA-Fa-f]{1,2}) ((?:(?:CWR|ECE|URG|ACK|PSH|RST|SYN|FIN) )*)URGP=\d{1,5})"
    r"(?: MARK=(0x[\dA-Fa-f]{1,8}))? *"
)
_pton, _INET = socket.inet_pton, socket.AF_INET
_OUTCOMES = {"allowed": "success", "denied": "failure", "unknown": "unknown"}


def _fast_line(line: str, opts: ParseOptions, family: str) -> FlowEvent | None:
    """The common record straight-line; None hands it to :func:`parse_kernel_line`.

    Builds the same event as the general path (a test runs both over the
    golden and corpus lines).
    """
    m = _FAST.fullmatch(line)
    if m is None:
        return None
    (pri, stamp, host, prefix, in_dev, out_dev, mac, src, dst, length, tos, prec, ttl,
     ip_id, frag, proto_name, sport_s, dport_s, udp_len, window, res, tcp_flags,
     mark) = m.groups()  # fmt: skip
    sport, dport = int(sport_s), int(dport_s)
    if sport > 65535 or dport > 65535 or (udp_len and int(udp_len) > 65535):
        return None
    if window and int(window) > 2**32 - 1:
        return None
    try:
        cid = community_id_packed(
            _pton(_INET, src), _pton(_INET, dst), 6 if proto_name == "TCP" else 17, sport, dport
        )
    except OSError:
        return None
    timestamp = bsd_iso(stamp, opts)
    prefix = prefix.strip()
    action, disposition, _ = _action(prefix, opts)
    event: dict[str, Any] = {
        "kind": "event",
        "category": ["network"],
        "type": ["connection"] if disposition == "unknown" else ["connection", disposition],
        "outcome": _OUTCOMES[disposition],
        "dataset": f"segwatch.{family}",
        "module": "segwatch",
    }
    event["start"] = event["end"] = timestamp
    if opts.keep_original:
        event["original"] = line
    if action:
        event["action"] = action
    tcp = proto_name == "TCP"
    source: dict[str, Any] = {"ip": src, "address": src, "port": sport}
    destination: dict[str, Any] = {"ip": dst, "address": dst, "port": dport}
    ipt: dict[str, Any] = {"input_device": in_dev, "output_device": out_dev}
    if prefix:
        ipt["prefix"] = prefix
    if mac is not None:
        layout = _ethernet(mac)
        if layout is not None:
            destination["mac"], source["mac"], ipt["ether_type"] = layout
        else:
            ipt["mac"] = mac
    ipt["length"], ipt["ttl"], ipt["id"] = int(length), int(ttl), int(ip_id)
    ipt["tos"], ipt["precedence_bits"] = int(tos, 16), int(prec, 16)
    if mark:
        ipt["mark"] = int(mark, 16)
    if frag:
        ipt["fragment_flags"] = frag.split()
    if tcp:
        ipt["tcp"] = {
            "flags": tcp_flags.split(),
            "window": int(window),
            "reserved_bits": int(res, 16),
        }
    elif udp_len:
        ipt["udp"] = {"length": int(udp_len)}
    observer: dict[str, Any] = {"name": host}
    if in_dev:
        observer["ingress"] = {"interface": {"name": in_dev}}
    if out_dev:
        observer["egress"] = {"interface": {"name": out_dev}}
    ev: FlowEvent = {
        "@timestamp": timestamp,
        "event": event,
        "ecs": {"version": ECS_VERSION},
        "data_stream": stream_fields(event["dataset"], opts.namespace),
        "source": source,
        "destination": destination,
        "network": {
            "type": "ipv4",
            "iana_number": "6" if tcp else "17",
            "transport": "tcp" if tcp else "udp",
            "community_id": cid,
            "direction": "ingress" if in_dev and not out_dev
            else ("egress" if out_dev and not in_dev else "unknown"),
        },
        "related": {"ip": [src] if src == dst else [src, dst]},
        "observer": observer,
    }  # fmt: skip
    if pri is not None:
        ev["log"] = {"syslog": {"priority": int(pri)}}
    ev["iptables"] = ipt
    return ev


@lru_cache(maxsize=4096)
def _ethernet(mac: str) -> tuple[str, str, int] | None:
    """(destination MAC, source MAC, ether type) from the kernel's MAC= bytes, if well formed.

    Bytes past the fourteenth (the start of the IP header) are ignored.
    """
    m = _MAC.match(mac)
    if m is None:
        return None
    return m[1].replace(":", "-").upper(), m[2].replace(":", "-").upper(), int(m[3] + m[4], 16)


def _hex_or_int(value: str, key: str) -> int:
    try:
        return int(value, 16) if value.lower().startswith("0x") else int(value)
    except ValueError:
        raise FieldError(f"{key} is {value[:20]!r}, expected a number", key) from None
