"""What every parser shares: options, field checks, timestamps, the ECS skeleton.

Hot-path helpers here work on plain ``str``/``int``/``dict`` values; they are
measured by ``make bench`` (see bench/parsers.py).
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from functools import cached_property, lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from detector.communityid import community_id
from detector.definitions import (
    DEFAULT_NAMESPACE,
    ECS_VERSION,
    IANA_PROTOCOLS,
    PROTOCOL_NUMBERS,
    Disposition,
    dataset,
    stream_fields,
)
from detector.errors import DetectorError, ParseError

__all__ = [
    "DEFAULT_PREFIX_ACTIONS",
    "FieldError",
    "FlowEvent",
    "ParseOptions",
    "ParseResult",
]

FlowEvent = dict[str, Any]
ParseResult = FlowEvent | ParseError

# Substring of a log prefix (matched case-insensitively, first match wins) -> disposition.
DEFAULT_PREFIX_ACTIONS: tuple[tuple[str, Disposition], ...] = (
    ("calico-packet", "denied"),  # Calico's Log action is placed before its Deny rule
    ("reject", "denied"),
    ("drop", "denied"),
    ("deny", "denied"),
    ("block", "denied"),
    ("accept", "allowed"),
    ("allow", "allowed"),
    ("pass", "allowed"),
)


@dataclass(frozen=True)
class ParseOptions:
    """How to parse; built once by the caller (the CLI or the stream app).

    :param reference_time: "now" in epoch seconds: the year of year-less syslog
        timestamps and the limit for timestamps in the future are taken from it.
    :param max_record_bytes: records over this size are errors, not events.
    :param max_envelope_bytes: the same for JSON/gzip envelopes holding many records
        (CloudWatch Logs batches), after decompression.
    :param max_future_seconds: timestamps further than this past
        ``reference_time`` are errors (a clock or parsing problem upstream).
    :param syslog_timezone: the zone of syslog timestamps that carry none.
    :param syslog_year: the year of year-less syslog timestamps; None: the
        year of ``reference_time`` (or the one before, for a December line read
        in January).
    :param vpc_format: an AWS VPC flow-log format string
        (``${version} ${vpc-id} ...``) or space-separated field names; None:
        header lines, then the field count, decide.
    :param prefix_actions: log prefix substring -> disposition, first match wins.
    :param keep_original: keep the raw record in ``event.original``.
    :param namespace: the ``data_stream.namespace`` of the events (Elastic's
        ``{type}-{dataset}-{namespace}`` scheme; the worker's
        ``elasticsearch.namespace``).
    """

    reference_time: float = field(default_factory=time.time)
    max_record_bytes: int = 64 * 1024
    max_envelope_bytes: int = 16 * 1024 * 1024
    max_future_seconds: int = 24 * 3600
    syslog_timezone: str = "UTC"
    syslog_year: int | None = None
    vpc_format: str | None = None
    prefix_actions: tuple[tuple[str, Disposition], ...] = DEFAULT_PREFIX_ACTIONS
    keep_original: bool = True
    namespace: str = DEFAULT_NAMESPACE

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.syslog_timezone)

    @cached_property
    def syslog_stamps(self) -> dict[str, str]:
        """RFC 3164 stamp -> ISO UTC text under these options (see :func:`bsd_iso`)."""
        return {}


class FieldError(DetectorError):
    """Raised inside a parser for one bad field; the parser turns it into a ParseError.

    ``position`` is the field's name; the parser may rewrite it with the
    field's place in the record (``field 7 'dstport'``).
    """

    def __init__(self, reason: str, position: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.position = position


def check_raw(
    raw: bytes | str, family: str, options: ParseOptions, limit: int | None = None
) -> str | ParseError:
    """Decode and vet a raw record: size, NUL bytes, UTF-8. Returns the text or an error.

    :param limit: the size limit, default ``options.max_record_bytes``.
    """
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    limit = options.max_record_bytes if limit is None else limit
    if len(data) > limit:
        setting = "max_record_bytes" if limit == options.max_record_bytes else "max_envelope_bytes"
        return ParseError(
            family,
            f"record is {len(data)} bytes, over the limit of {limit} ({setting}); "
            "split it or raise the limit",
            data[:1024],
        )
    nul = data.find(b"\0")
    if nul >= 0:
        return ParseError(family, "record contains a NUL byte", data, f"byte {nul}")
    if isinstance(raw, str):
        return raw
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ParseError(family, f"invalid UTF-8 ({exc.reason})", data, f"byte {exc.start}")


def to_bytes(raw: bytes | str) -> bytes:
    return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw


# --- field checks -------------------------------------------------------------


def parse_int(value: str, name: str, lo: int, hi: int) -> int:
    """An integer in [lo, hi], or FieldError naming the field and the range."""
    digits = value[1:] if value[:1] == "-" and lo < 0 else value
    # ASCII only: str.isdigit() is also true for '²', which int() refuses
    if digits.isascii() and digits.isdigit() and len(digits) < 20:
        number = int(value)
        if lo <= number <= hi:
            return number
    raise FieldError(f"{name} is {value[:40]!r}, expected an integer {lo}-{hi}", name)


def parse_ip(value: str, name: str) -> str:
    """A valid IPv4 address as written, an IPv6 address in RFC 5952 text (lowercase, the
    longest run of zero groups as ``::``, IPv4-mapped as ``::ffff:10.0.0.1``; kernels
    write ``fe80:0000:...``), or FieldError."""
    if not isinstance(value, str):
        raise FieldError(f"{name} is a {type(value).__name__}, expected an IPv4 or IPv6 "
                         "address", name)  # fmt: skip
    v6 = ":" in value
    try:
        packed = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, value)
    except (OSError, ValueError):
        raise FieldError(
            f"{name} is {value[:60]!r}, expected an IPv4 or IPv6 address", name
        ) from None
    return socket.inet_ntop(socket.AF_INET6, packed) if v6 else value


def protocol(value: str | int, name: str = "protocol") -> tuple[int, str]:
    """(IANA number, ECS transport name) from a number or a name like TCP / ICMPv6."""
    if isinstance(value, int) or value.isdigit():
        number = int(value)
        if not 0 <= number <= 255:
            raise FieldError(f"{name} is {value!r}, expected 0-255 or a name", name)
        return number, IANA_PROTOCOLS.get(number, str(number))
    number_or_none = PROTOCOL_NUMBERS.get(value.lower())
    if number_or_none is None:
        raise FieldError(f"{name} {value[:20]!r} is not a known protocol name", name)
    return number_or_none, IANA_PROTOCOLS[number_or_none]


# --- time ---------------------------------------------------------------------

_iso_cache: dict[int, str] = {}


def iso_seconds(epoch: int) -> str:
    """Epoch seconds -> ``YYYY-MM-DDThh:mm:ss.000Z`` (cached: flow logs repeat seconds)."""
    text = _iso_cache.get(epoch)
    if text is None:
        if len(_iso_cache) > 100_000:
            _iso_cache.clear()
        text = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(epoch))
        _iso_cache[epoch] = text
    return text


@lru_cache(maxsize=8192)
def iso_datetime(dt: datetime) -> str:
    """An aware datetime -> ISO 8601 UTC with milliseconds (cached: logs repeat seconds)."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


_FRACTION = re.compile(r"(\.\d{6})\d+")
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def parse_rfc3339(stamp: str, default_tz: tzinfo = UTC) -> datetime | None:
    """An RFC 3339 / ISO 8601 timestamp (nanoseconds cut to micro), or None if invalid.

    A timestamp without a zone is taken in ``default_tz``.
    """
    text = _FRACTION.sub(r"\1", stamp.strip())
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=default_tz)


def parse_bsd_time(stamp: str, opts: ParseOptions) -> datetime:
    """See :func:`_bsd_time`; cached, since a log repeats each second many times."""
    return _bsd_time(stamp, opts.syslog_year, opts.syslog_timezone, opts.reference_time)


@lru_cache(maxsize=8192)
def _bsd_time(stamp: str, syslog_year: int | None, zone: str, reference_time: float) -> datetime:
    """``Mmm dd hh:mm:ss`` (RFC 3164) in the options' zone and year.

    With no ``syslog_year``, the year is the reference time's, or the one
    before when that would put the line more than a day in the future (a
    December line read in January).
    """
    try:
        month = _MONTHS[stamp[:3]]
        day, hh, mm, ss = int(stamp[4:6]), int(stamp[7:9]), int(stamp[10:12]), int(stamp[13:15])
        tz = ZoneInfo(zone)
        year = syslog_year or datetime.fromtimestamp(reference_time, tz).year
        when = datetime(year, month, day, hh, mm, ss, tzinfo=tz)
        if syslog_year is None and when.timestamp() > reference_time + 86400:
            when = when.replace(year=year - 1)
    except (KeyError, ValueError):
        raise FieldError(f"syslog timestamp {stamp!r} is not a valid date", "timestamp") from None
    return when


def bsd_iso(stamp: str, opts: ParseOptions) -> str:
    """An RFC 3164 stamp, checked, as ISO UTC text; one dict lookup for a repeated second."""
    cache = opts.syslog_stamps
    iso = cache.get(stamp)
    if iso is None:
        iso = iso_datetime(check_datetime(parse_bsd_time(stamp, opts), "timestamp", opts))
        if len(cache) >= 8192:
            cache.clear()
        cache[stamp] = iso
    return iso


def check_epoch(epoch: int, name: str, options: ParseOptions) -> int:
    if epoch > options.reference_time + options.max_future_seconds:
        raise FieldError(
            f"{name} {epoch} ({iso_seconds(min(epoch, 253402300799))}) is in the future, "
            f"more than {options.max_future_seconds}s past the reference time "
            "(max_future_seconds)",
            name,
        )
    return epoch


def check_datetime(dt: datetime, name: str, options: ParseOptions) -> datetime:
    check_epoch(int(dt.timestamp()), name, options)
    return dt


# Flows repeat their 5-tuples (aggregated logs, long connections): a bounded
# cache saves the SHA-1 and base64 of every repeat.
cached_community_id = lru_cache(maxsize=1 << 16)(community_id)


# --- the ECS skeleton ---------------------------------------------------------


def base_event(
    family: str,
    timestamp: str,
    disposition: Disposition,
    original: str | None,
    start: str | None = None,
    end: str | None = None,
    namespace: str = DEFAULT_NAMESPACE,
) -> FlowEvent:
    """The ``@timestamp``, ``event.*``, ``ecs`` and ``data_stream`` part every flow event
    shares."""
    event: dict[str, Any] = {
        "kind": "event",
        "category": ["network"],
        "type": ["connection"] if disposition == "unknown" else ["connection", disposition],
        "outcome": _OUTCOMES[disposition],
        "dataset": dataset(family),
        "module": "segwatch",
        "start": start or timestamp,
        "end": end or timestamp,
    }
    if original is not None:
        event["original"] = original
    return {"@timestamp": timestamp, "event": event, "ecs": {"version": ECS_VERSION},
            "data_stream": stream_fields(event["dataset"], namespace)}  # fmt: skip


_OUTCOMES: dict[Disposition, str] = {
    "allowed": "success",
    "denied": "failure",
    "unknown": "unknown",
}


def add_endpoints(
    ev: FlowEvent,
    src_ip: str | None,
    dst_ip: str | None,
    proto: int | None,
    src_port: int | None,
    dst_port: int | None,
    icmp_type_code: bool = False,
) -> None:
    """source/destination ip+port, network transport/type/community_id, related.ip.

    :param icmp_type_code: for ICMP/ICMPv6, ``src_port``/``dst_port`` are the
        type and code: they feed the community id but are not written as ports.
    """
    src: dict[str, Any] = ev.setdefault("source", {})
    dst: dict[str, Any] = ev.setdefault("destination", {})
    net: dict[str, Any] = ev.setdefault("network", {})
    if src_ip is not None:
        src["ip"] = src["address"] = src_ip
        net["type"] = "ipv6" if ":" in src_ip else "ipv4"
    if dst_ip is not None:
        dst["ip"] = dst["address"] = dst_ip
    if not (icmp_type_code and (proto == 1 or proto == 58)):
        if src_port is not None:
            src["port"] = src_port
        if dst_port is not None:
            dst["port"] = dst_port
    if proto is not None:
        net["iana_number"] = str(proto)
        net["transport"] = IANA_PROTOCOLS.get(proto) or str(proto)
        if src_ip is not None and dst_ip is not None:
            cid = cached_community_id(src_ip, dst_ip, proto, src_port, dst_port)
            if cid is not None:
                net["community_id"] = cid
    if src_ip is not None:
        ev["related"] = {"ip": [src_ip] if dst_ip is None or dst_ip == src_ip else [src_ip, dst_ip]}
    elif dst_ip is not None:
        ev["related"] = {"ip": [dst_ip]}
    if not src:
        del ev["source"]
    if not dst:
        del ev["destination"]
    if not net:
        del ev["network"]


def add_counters(
    ev: FlowEvent,
    src_bytes: int | None,
    src_packets: int | None,
    dst_bytes: int | None = None,
    dst_packets: int | None = None,
) -> None:
    """source/destination bytes and packets, and their sums as network.bytes/packets."""
    if src_bytes is not None or src_packets is not None:
        side = ev.setdefault("source", {})
        if src_bytes is not None:
            side["bytes"] = src_bytes
        if src_packets is not None:
            side["packets"] = src_packets
    if dst_bytes is not None or dst_packets is not None:
        side = ev.setdefault("destination", {})
        if dst_bytes is not None:
            side["bytes"] = dst_bytes
        if dst_packets is not None:
            side["packets"] = dst_packets
    total_bytes = _sum(src_bytes, dst_bytes)
    total_packets = _sum(src_packets, dst_packets)
    if total_bytes is not None or total_packets is not None:
        net = ev.setdefault("network", {})
        if total_bytes is not None:
            net["bytes"] = total_bytes
        if total_packets is not None:
            net["packets"] = total_packets


def _sum(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else a + b


def disposition_from_prefix(prefix: str, table: tuple[tuple[str, Disposition], ...]) -> Disposition:
    """The first entry of the prefix table whose text the prefix contains, else unknown."""
    lowered = prefix.lower()
    for needle, disposition in table:
        if needle in lowered:
            return disposition
    return "unknown"
