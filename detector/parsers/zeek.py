"""Zeek ``conn.log`` -> ECS flow events, as Elastic's Zeek integration maps them.

Two forms, one record per line:

- JSON (``LogAscii::use_json``): ``{"ts": 1591367999.3, "uid": "C...", "id.orig_h":
  ..., "id.orig_p": ..., "id.resp_h": ..., "proto": "tcp", "conn_state": "SF", ...}``;
  ``ts`` as epoch seconds or ISO 8601, the ``id`` fields dotted or nested.
- TSV (Zeek's default ASCII log): header lines (``#separator``, ``#fields``,
  ``#types``, ...) then tab-separated values, ``-`` unset and ``(empty)`` empty.
  A ``#fields`` line holds for the lines after it from the same producer (the
  stream keeps it per message key, a file run per file), as VPC header lines do.

The originator is the source (``id.orig_*``), the responder the destination:
Zeek decided who opened the connection, which is explicit initiator evidence
(``segmentation.initiator_evidence: originator``). ``zeek.session_id`` is the
``uid``; ``zeek.connection.*`` keeps the state (with Elastic's message),
history, ``local_orig``/``local_resp`` and missed bytes; bytes and packets are
the IP-level counts (``orig_ip_bytes``, ``orig_pkts``, ...). Zeek watches, it
does not enforce: a rejected connection (``REJ``) is ``denied``, one that carried
data is ``allowed``, the rest ``unknown``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from detector.errors import ParseError
from detector.parsers import _envelope
from detector.parsers._common import (
    FieldError,
    FlowEvent,
    ParseOptions,
    ParseResult,
    add_counters,
    add_endpoints,
    base_event,
    check_datetime,
    check_raw,
    iso_datetime,
    parse_ip,
    parse_rfc3339,
    protocol,
    to_bytes,
)

__all__ = ["ZeekParser"]

FAMILY = "zeek"
# The fields of Zeek's default conn.log, in order: a TSV line with no #fields before it
DEFAULT_FIELDS: tuple[str, ...] = (
    "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service",
    "duration", "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp",
    "missed_bytes", "history", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes",
    "tunnel_parents",
)  # fmt: skip
# conn_state -> (Elastic's state message, event.type, what the network did)
STATES: dict[str, tuple[str, list[str], str]] = {
    "S0": ("Connection attempt seen, no reply.", ["connection", "start"], "unknown"),
    "S1": ("Connection established, not terminated.", ["connection", "start"], "allowed"),
    "SF": ("Normal establishment and termination.", ["connection", "start", "end"], "allowed"),
    "REJ": ("Connection attempt rejected.", ["connection", "start", "denied"], "denied"),
    "S2": ("Connection established and close attempt by originator seen (but no reply from "
           "responder).", ["connection", "info"], "allowed"),
    "S3": ("Connection established and close attempt by responder seen (but no reply from "
           "originator).", ["connection", "info"], "allowed"),
    "RSTO": ("Connection established, originator aborted (sent a RST).", ["connection", "info"],
             "allowed"),
    "RSTR": ("Responder sent a RST.", ["connection", "info"], "allowed"),
    "RSTOS0": ("Originator sent a SYN followed by a RST, we never saw a SYN-ACK from the "
               "responder.", ["connection", "info"], "unknown"),
    "RSTRH": ("Responder sent a SYN ACK followed by a RST, we never saw a SYN from the "
              "(purported) originator.", ["connection", "info"], "unknown"),
    "SH": ("Originator sent a SYN followed by a FIN, we never saw a SYN ACK from the responder "
           "(hence the connection was 'half' open).", ["connection", "info"], "unknown"),
    "SHR": ("Responder sent a SYN ACK followed by a FIN, we never saw a SYN from the "
            "originator.", ["connection", "info"], "unknown"),
    "OTH": ("No SYN seen, just midstream traffic (a 'partial connection' that was not later "
            "closed).", ["connection", "info"], "unknown"),
}  # fmt: skip
_DIRECTIONS = {(True, True): "internal", (True, False): "outbound",
               (False, True): "inbound", (False, False): "external"}  # fmt: skip
_OUTCOMES = {"allowed": "success", "denied": "failure", "unknown": "unknown"}
_COUNTERS = ("orig_ip_bytes", "orig_pkts", "resp_ip_bytes", "resp_pkts", "missed_bytes")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_MAX_COUNT = 2**63 - 1


class ZeekParser:
    """Parses Zeek conn.log records, JSON or TSV; the TSV layout is the last ``#fields``
    line seen (:meth:`layout`, :meth:`use_layout`)."""

    family = FAMILY

    def __init__(self, options: ParseOptions | None = None) -> None:
        self.options = options or ParseOptions()
        self._fields: tuple[str, ...] | None = None
        self._separator = "\t"

    def layout(self) -> tuple[str, ...] | None:
        """The fields the last ``#fields`` line declared (None: none seen)."""
        return self._fields

    def use_layout(self, layout: tuple[str, ...] | None) -> None:
        """Parse what follows with ``layout`` (a producer's ``#fields`` seen before)."""
        self._fields = layout

    def parse(self, raw: bytes | str) -> list[ParseResult]:
        """One raw record -> one event, none (a header or blank line) or an error."""
        data = to_bytes(raw)
        text = check_raw(data, FAMILY, self.options)
        if isinstance(text, ParseError):
            return [text]
        line = text.rstrip("\r\n")
        if not line or line.isspace():
            return []
        try:
            if line.startswith("#"):
                self._header(line)
                return []
            if line.lstrip().startswith("{"):
                record = _envelope.loads(line)
                if not isinstance(record, dict):
                    raise FieldError("record is not a JSON object")
                return [_event(_flat(record), line, self.options)]
            return [_event(self._tsv(line), line, self.options)]
        except _envelope.EnvelopeError as exc:
            return [ParseError(FAMILY, f"record {exc}", data)]
        except FieldError as exc:
            return [ParseError(FAMILY, exc.reason, data, exc.position)]

    def _header(self, line: str) -> None:
        """``#fields ...`` sets the layout; ``#separator \\x09`` the separator; the other
        header lines (``#types``, ``#path``, ``#open``, ...) say nothing a record needs."""
        if line.startswith("#separator "):
            value = line[len("#separator ") :].strip()
            self._separator = value.encode().decode("unicode_escape") if value else "\t"
        elif line.startswith("#fields"):
            names = tuple(line.split(self._separator)[1:]) or tuple(line.split()[1:])
            if not {"ts", "id.orig_h", "id.resp_h", "proto"} <= set(names):
                raise FieldError("#fields does not declare ts, id.orig_h, id.resp_h and proto: "
                                 "not a conn.log header", "#fields")  # fmt: skip
            self._fields = names

    def _tsv(self, line: str) -> dict[str, Any]:
        fields = self._fields or DEFAULT_FIELDS
        values = line.split(self._separator)
        if len(values) != len(fields):
            where = "the #fields line declares" if self._fields else "a default conn.log has"
            raise FieldError(f"record has {len(values)} fields, {where} {len(fields)}")
        return {name: value for name, value in zip(fields, values, strict=True)
                if value != "-" and value != "(empty)"}  # fmt: skip


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    """JSON with the ``id`` fields nested (``{"id": {"orig_h": ...}}``) -> dotted names."""
    ident = record.get("id")
    if isinstance(ident, dict):
        record = {**record, **{f"id.{k}": v for k, v in ident.items()}}
    return record


def _int(record: dict[str, Any], name: str, hi: int) -> int | None:
    value = record.get(name)
    if value is None:
        return None
    if type(value) is int:
        number = value
    elif isinstance(value, str) and value.isdecimal() and len(value) < 20:
        number = int(value)
    else:
        raise FieldError(f"{name} is {str(value)[:20]!r}, expected a count", name)
    if not 0 <= number <= hi:
        raise FieldError(f"{name} is {number}, expected 0 to {hi}", name)
    return number


def _bool(record: dict[str, Any], name: str) -> bool | None:
    value = record.get(name)
    if value is None:
        return None
    if type(value) is bool:
        return bool(value)
    if value in ("T", "F"):
        return bool(value == "T")
    raise FieldError(f"{name} is {str(value)[:20]!r}, expected T, F or a JSON boolean", name)


def _time(value: Any) -> datetime:
    if isinstance(value, str) and "T" in value:
        when = parse_rfc3339(value)
        if when is None:
            raise FieldError(f"ts {value[:40]!r} is not an ISO 8601 time", "ts")
        return when
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise FieldError(f"ts is {str(value)[:40]!r}, expected epoch seconds or ISO 8601",
                         "ts") from None  # fmt: skip
    if not 0 <= seconds < 1e11:
        raise FieldError(f"ts is {str(value)[:40]!r}, not a time", "ts")
    return datetime.fromtimestamp(seconds, UTC)


def _event(record: dict[str, Any], line: str, opts: ParseOptions) -> FlowEvent:
    if "ts" not in record:
        raise FieldError("record has no ts: not a conn.log record", "ts")
    for name in ("id.orig_h", "id.resp_h", "proto"):
        if not isinstance(record.get(name), str):
            raise FieldError(f"record has no {name}: not a conn.log record", name)
    when = check_datetime(_time(record["ts"]), "ts", opts)
    duration = record.get("duration")
    seconds = None
    if duration is not None:
        try:
            seconds = float(duration)
        except (TypeError, ValueError):
            raise FieldError(f"duration is {str(duration)[:20]!r}, expected seconds",
                             "duration") from None  # fmt: skip
        if not 0 <= seconds < 1e9:
            raise FieldError(f"duration is {str(duration)[:20]!r}, not a duration", "duration")
    state = record.get("conn_state")
    if state is not None and not isinstance(state, str):
        raise FieldError("conn_state is not a word", "conn_state")
    message, types, disposition = STATES.get(state or "", (None, ["connection"], "unknown"))
    start = iso_datetime(when)
    end = start
    if seconds:
        end = iso_datetime(datetime.fromtimestamp(when.timestamp() + seconds, UTC))
    ev = base_event(FAMILY, start, disposition, line if opts.keep_original else None,  # type: ignore[arg-type]
                    start, end, opts.namespace)  # fmt: skip
    event = ev["event"]
    event["type"] = list(types)
    event["outcome"] = _OUTCOMES[disposition]
    if seconds is not None:
        event["duration"] = round(seconds * 1e9)
    proto, _ = protocol(record["proto"], "proto")
    icmp = proto in (1, 58)
    sport = _int(record, "id.orig_p", 65535)
    dport = _int(record, "id.resp_p", 65535)
    add_endpoints(ev, parse_ip(record["id.orig_h"], "id.orig_h"),
                  parse_ip(record["id.resp_h"], "id.resp_h"), proto, sport, dport,
                  icmp_type_code=True)  # fmt: skip
    counts = {name: _int(record, name, _MAX_COUNT) for name in _COUNTERS}
    add_counters(ev, counts["orig_ip_bytes"], counts["orig_pkts"], counts["resp_ip_bytes"],
                 counts["resp_pkts"])  # fmt: skip
    service = record.get("service")
    if isinstance(service, str) and service:
        ev["network"]["protocol"] = service.split(",")[0]
    connection: dict[str, Any] = {}
    if state:
        connection["state"] = state
        if message:
            connection["state_message"] = message
    for name in ("history",):
        if isinstance(record.get(name), str):
            connection[name] = record[name]
    local = (_bool(record, "local_orig"), _bool(record, "local_resp"))
    for name, value in zip(("local_orig", "local_resp"), local, strict=True):
        if value is not None:
            connection[name] = value
    if local[0] is not None and local[1] is not None:
        ev["network"]["direction"] = _DIRECTIONS[(local[0], local[1])]
    if counts["missed_bytes"] is not None:
        connection["missed_bytes"] = counts["missed_bytes"]
    if icmp and sport is not None:
        connection["icmp"] = {"type": sport, "code": dport if dport is not None else 0}
    for side, name in (("source", "orig_l2_addr"), ("destination", "resp_l2_addr")):
        mac = record.get(name)
        if isinstance(mac, str) and _MAC.match(mac):
            ev.setdefault(side, {})["mac"] = mac.upper().replace(":", "-")
    zeek: dict[str, Any] = {"connection": connection}
    uid = record.get("uid")
    if isinstance(uid, str) and uid:
        zeek["session_id"] = uid
    ev["zeek"] = zeek
    return ev
