"""AWS VPC Flow Logs and Transit Gateway flow logs -> ECS flow events.

Field order comes from, in this order: the format given in the options (an
AWS format string ``${version} ${vpc-id} ...`` or plain field names); the
last header line seen (``version account-id ...``, as S3 delivery writes
it); otherwise the number of fields, with the layouts AWS and Elastic use:
14 (version 2 default), 29 (all v2-v5 fields), 39 (+ the v7 ECS fields),
40 (+ v8 ``reject-reason``), 36 (Transit Gateway default), and Elastic's 6,
17 and 21-field custom layouts.

``-`` means absent. ``NODATA`` / ``SKIPDATA`` records are not flows: they become
``event.kind: state`` documents with their log status, never placed or scored. JSON
envelopes (``{"message": ...}``, CloudWatch Logs subscription data, gzip+base64 from
Firehose) yield one event per line inside.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

from detector.communityid import community_id_packed
from detector.definitions import ECS_VERSION, IANA_PROTOCOLS, stream_fields
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
    check_epoch,
    check_raw,
    iso_datetime,
    iso_seconds,
    parse_int,
    parse_ip,
    to_bytes,
)
from detector.parsers._common import _iso_cache as _ISO_CACHE

__all__ = ["FIELDS", "VpcFlowParser", "compile_format"]

FAMILY = "vpcflow"

# Every field AWS documents, in the order of its "all fields" custom format.
FIELDS: tuple[str, ...] = (
    "version", "account-id", "interface-id", "srcaddr", "dstaddr", "srcport", "dstport",
    "protocol", "packets", "bytes", "start", "end", "action", "log-status",
    "vpc-id", "subnet-id", "instance-id", "tcp-flags", "type", "pkt-srcaddr", "pkt-dstaddr",
    "region", "az-id", "sublocation-type", "sublocation-id", "pkt-src-aws-service",
    "pkt-dst-aws-service", "flow-direction", "traffic-path",
    "ecs-cluster-arn", "ecs-cluster-name", "ecs-container-instance-arn",
    "ecs-container-instance-id", "ecs-container-id", "ecs-second-container-id",
    "ecs-service-name", "ecs-task-definition-arn", "ecs-task-arn", "ecs-task-id",
    "reject-reason",
)  # fmt: skip
TGW_FIELDS: tuple[str, ...] = (
    "version", "resource-type", "account-id", "tgw-id", "tgw-attachment-id",
    "tgw-src-vpc-account-id", "tgw-dst-vpc-account-id", "tgw-src-vpc-id", "tgw-dst-vpc-id",
    "tgw-src-subnet-id", "tgw-dst-subnet-id", "tgw-src-eni", "tgw-dst-eni", "tgw-src-az-id",
    "tgw-dst-az-id", "tgw-pair-attachment-id", "srcaddr", "dstaddr", "srcport", "dstport",
    "protocol", "packets", "bytes", "start", "end", "log-status", "type",
    "packets-lost-no-route", "packets-lost-blackhole", "packets-lost-mtu-exceeded",
    "packets-lost-ttl-expired", "tcp-flags", "region", "flow-direction",
    "pkt-src-aws-service", "pkt-dst-aws-service",
)  # fmt: skip
KNOWN: frozenset[str] = frozenset(FIELDS) | frozenset(TGW_FIELDS)

# Other spellings of the same fields (Vector's parse_aws_vpc_flow_log names).
_ALIASES = {"flow_direction": "flow-direction", "az_id": "az-id"}


def _canon(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n.replace("-", "_") for n in names)


# Layouts of records with no declared format, by field count.
_LAYOUTS: dict[int, tuple[str, ...]] = {
    14: _canon(FIELDS[:14]),
    29: _canon(FIELDS[:29]),
    39: _canon(FIELDS[:39]),
    40: _canon(FIELDS[:40]),
    36: _canon(TGW_FIELDS),
    6: ("instance_id", "interface_id", "srcaddr", "dstaddr", "pkt_srcaddr", "pkt_dstaddr"),
    17: _canon(
        ("version", "interface-id", "account-id", "vpc-id", "subnet-id", "instance-id",
         "srcaddr", "dstaddr", "srcport", "dstport", "protocol", "tcp-flags", "type",
         "pkt-srcaddr", "pkt-dstaddr", "action", "log-status")
    ),
    21: _canon(
        ("version", "vpc-id", "subnet-id", "instance-id", "interface-id", "account-id", "type",
         "srcaddr", "dstaddr", "srcport", "dstport", "pkt-srcaddr", "pkt-dstaddr", "protocol",
         "bytes", "packets", "start", "end", "action", "tcp-flags", "log-status")
    ),
}  # fmt: skip

# Fields copied as strings into aws.vpcflow.<key> (Elastic's key names).
_AWS_KEYS: dict[str, str] = {
    "version": "version", "account_id": "account_id", "interface_id": "interface_id",
    "action": "action", "log_status": "log_status", "vpc_id": "vpc_id",
    "subnet_id": "subnet_id", "instance_id": "instance_id", "tcp_flags": "tcp_flags",
    "type": "type", "pkt_srcaddr": "pkt_srcaddr", "pkt_dstaddr": "pkt_dstaddr",
    "pkt_src_aws_service": "pkt_src_service", "pkt_dst_aws_service": "pkt_dst_service",
    "traffic_path": "traffic_path", "resource_type": "resource_type",
    "ecs_container_id": "ecs_container_id", "ecs_second_container_id": "ecs_second_container_id",
    "ecs_task_definition_arn": "ecs_task_definition_arn", "ecs_task_arn": "ecs_task_arn",
    "ecs_task_id": "ecs_task_id",
    **{n: n for n in _canon(TGW_FIELDS) if n.startswith(("tgw_", "packets_lost_"))},
}  # fmt: skip

_TCP_FLAGS = ((0x01, "fin"), (0x02, "syn"), (0x04, "rst"), (0x08, "psh"), (0x10, "ack"),
              (0x20, "urg"))  # fmt: skip
_ACTIONS = {"ACCEPT": "allowed", "REJECT": "denied"}
_STATUSES = frozenset(("OK", "NODATA", "SKIPDATA"))
# Status records: no flow, the interface's state over the aggregation interval (AWS's
# words). They become event.kind "state" documents, counted and indexed, never placed.
_NOT_FLOWS = {
    "NODATA": "NODATA: no network traffic to or from the interface during the interval",
    "SKIPDATA": "SKIPDATA: some flow records were skipped during the interval (an internal "
    "capacity constraint or error at AWS)",
}
_INT_LIMITS = {
    "srcport": 65535, "dstport": 65535, "protocol": 255, "version": 255, "tcp_flags": 255,
    "traffic_path": 255, "packets": 2**63 - 1, "bytes": 2**63 - 1,
    **{n: 2**63 - 1 for n in _canon(TGW_FIELDS) if n.startswith("packets_lost_")},
}  # fmt: skip


def compile_format(spec: str) -> tuple[str, ...]:
    """Field names from an AWS format string or a header line.

    Accepts ``${vpc-id}``, ``vpc-id`` and ``vpc_id`` spellings.

    :raises FieldError: an unknown or repeated field name.
    """
    names: list[str] = []
    for token in spec.split():
        name = token.removeprefix("${").removesuffix("}").strip().lower()
        name = _ALIASES.get(name, name.replace("_", "-"))
        if name not in KNOWN:
            raise FieldError(f"unknown field {token!r} in the format", token)
        if name.replace("-", "_") in names:
            raise FieldError(f"field {token!r} appears twice in the format", token)
        names.append(name.replace("-", "_"))
    if not names:
        raise FieldError("the format names no fields")
    return tuple(names)


def is_header(record: bytes) -> bool:
    """Whether a record is a header line (``version account-id ...``)."""
    first = record.split(None, 1)[0].decode("ascii", "replace").lower() if record.strip() else ""
    return first in KNOWN or first.replace("_", "-") in KNOWN


class VpcFlowParser:
    """Parses VPC and Transit Gateway flow-log records; remembers header lines.

    One instance per input stream (file or partition): a header line changes
    the layout of the lines after it.
    """

    family = FAMILY

    def __init__(self, options: ParseOptions | None = None) -> None:
        self.options = options or ParseOptions()
        self._declared = (
            compile_format(self.options.vpc_format) if self.options.vpc_format else None
        )
        self._header: tuple[str, ...] | None = None

    def layout(self) -> tuple[str, ...] | None:
        """The layout the last header line declared (None: none seen)."""
        return self._header

    def use_layout(self, layout: tuple[str, ...] | None) -> None:
        """Parse what follows with ``layout`` (a header of this producer seen before; None:
        no header). The stream keeps one per producer, a file run one per file."""
        self._header = layout

    def parse(self, raw: bytes | str) -> list[ParseResult]:
        """One raw record -> its events (several for an envelope, none for a header)."""
        opts = self.options
        if type(raw) is bytes and len(raw) <= opts.max_record_bytes and raw[:1].isdigit():
            # the hot path: a plain record (no envelope) as Kafka and files deliver it
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                if "\0" not in text:
                    return self._parse_line(text, None)
        data = to_bytes(raw)
        if _envelope.looks_compressed(data):
            try:
                data = _envelope.decompress(data, opts.max_envelope_bytes)
            except _envelope.EnvelopeError as exc:
                return [ParseError(FAMILY, f"envelope {exc}", to_bytes(raw))]
        limit = opts.max_envelope_bytes if data[:1] == b"{" else opts.max_record_bytes
        checked = check_raw(data, FAMILY, opts, limit)
        if isinstance(checked, ParseError):
            return [checked]
        if checked[:1] == "{":
            return self._parse_envelope(checked, data)
        return self._parse_line(checked, None)

    def _parse_envelope(self, text: str, data: bytes) -> list[ParseResult]:
        try:
            inners = _envelope.unwrap_json(_envelope.loads(text))
        except _envelope.EnvelopeError as exc:
            return [ParseError(FAMILY, f"JSON envelope {exc}", data)]
        if inners is None:
            return [ParseError(FAMILY, "JSON record has no 'message' or 'logEvents'", data)]
        out: list[ParseResult] = []
        for inner in inners:
            for result in self._parse_line(inner.text, inner):
                if isinstance(result, ParseError) and inner.where:  # which entry of the envelope
                    result.position = f"{inner.where} {result.position or ''}".rstrip()
                out.append(result)
        return out

    def _parse_line(self, line: str, inner: _envelope.Inner | None) -> list[ParseResult]:
        if inner is None and self._declared is None and self._header is None:
            fast = _fast_v2(line, self.options)
            if fast is not None:
                return [fast]
        tokens = line.split()
        if not tokens:
            return []
        first = tokens[0].lower()
        if first in KNOWN or first.replace("_", "-") in KNOWN:
            try:
                self._header = compile_format(line)
            except FieldError as exc:
                return [ParseError(FAMILY, f"header line: {exc.reason}", line.encode())]
            return []
        names = self._declared or self._header or _LAYOUTS.get(len(tokens))
        if names is None:
            return [ParseError(
                FAMILY,
                f"{len(tokens)} fields and no format: declare one (--format / vpc_format) or "
                "send the header line; without one, 14, 29, 39, 40 (VPC) or 36 (TGW) fields "
                "are understood",
                line.encode(),
            )]  # fmt: skip
        if len(names) != len(tokens):
            return [ParseError(
                FAMILY,
                f"record has {len(tokens)} fields, the format declares {len(names)}",
                line.encode(),
            )]  # fmt: skip
        rec = dict(zip(names, tokens, strict=True))
        try:
            return [_build(rec, line, self.options, inner)]
        except FieldError as exc:
            name = exc.position or ""
            position = (
                f"field {names.index(name) + 1} '{name.replace('_', '-')}'" if name in rec else None
            )
            return [ParseError(FAMILY, exc.reason, line.encode(), position)]


_V2 = _LAYOUTS[14]
_INET, _INET6, _pton, _ntop = socket.AF_INET, socket.AF_INET6, socket.inet_pton, socket.inet_ntop
_MAX_COUNTER = 2**63 - 1


def _fast_v2(line: str, opts: ParseOptions) -> FlowEvent | None:
    """The common case, straight-line; None hands the record to the general path.

    Builds the same event as :func:`_build` (the golden and conformance tests
    run both paths); anything unusual (``-`` fields, out-of-range values, bad
    addresses, signs or underscores that ``int()`` would take but the general
    path refuses) goes the general way, which explains what is wrong.
    """
    fields = line.split()  # the general path splits the same way
    if len(fields) != 14 or fields[13] != "OK" or not line.isascii() or "+" in line or "_" in line:
        return None
    (
        ver,
        account,
        eni,
        src,
        dst,
        sport_s,
        dport_s,
        proto_s,
        pk_s,
        by_s,
        st_s,
        en_s,
        action,
        status,
    ) = fields
    if (action != "ACCEPT" and action != "REJECT") or status != "OK" or not account.isdigit():
        return None
    try:  # ASCII, unsigned (a '-' gives a negative number): what parse_int accepts
        sport, dport, proto = int(sport_s), int(dport_s), int(proto_s)
        start, end, packets, nbytes = int(st_s), int(en_s), int(pk_s), int(by_s)
        if not 0 <= int(ver) <= 255:
            return None
    except ValueError:
        return None
    limit = opts.reference_time + opts.max_future_seconds
    # one test per bound: a bitwise or is negative if any is, and >= the largest
    if (
        (sport | dport | proto | start | end | packets | nbytes) < 0
        or (sport | dport) > 65535
        or proto > 255
        or start > limit
        or end > limit
        or (packets | nbytes) > _MAX_COUNTER
    ):
        return None
    v6 = ":" in src
    try:
        src_b = _pton(_INET6 if v6 else _INET, src)
        dst_b = _pton(_INET6 if ":" in dst else _INET, dst)
    except OSError:
        return None
    if v6 or ":" in dst:  # RFC 5952 text, as parse_ip writes it
        src = _ntop(_INET6 if v6 else _INET, src_b)
        dst = _ntop(_INET6 if len(dst_b) == 16 else _INET, dst_b)
    cid = (
        community_id_packed(src_b, dst_b, proto, sport, dport) if len(src_b) == len(dst_b) else None
    )
    start_iso = _ISO_CACHE.get(start) or iso_seconds(start)
    end_iso = _ISO_CACHE.get(end) or iso_seconds(end)
    allowed = action == "ACCEPT"
    event: dict[str, Any] = {
        "kind": "event", "category": ["network"],
        "type": ["connection", "allowed" if allowed else "denied"],
        "outcome": "success" if allowed else "failure",
        "dataset": "segwatch.vpcflow", "module": "segwatch", "start": start_iso, "end": end_iso,
    }  # fmt: skip
    if opts.keep_original:
        event["original"] = line
    event["action"] = action
    network: dict[str, Any] = {
        "type": "ipv6" if v6 else "ipv4",
        "iana_number": str(proto),
        "transport": IANA_PROTOCOLS.get(proto) or str(proto),
    }
    if cid is not None:
        network["community_id"] = cid
    network["bytes"] = nbytes
    network["packets"] = packets
    return {
        "@timestamp": end_iso,
        "event": event,
        "ecs": {"version": ECS_VERSION},
        "data_stream": stream_fields("segwatch.vpcflow", opts.namespace),
        "source": {"ip": src, "address": src, "port": sport, "bytes": nbytes, "packets": packets},
        "destination": {"ip": dst, "address": dst, "port": dport},
        "network": network,
        "related": {"ip": [src, dst] if src != dst else [src]},
        "aws": {
            "vpcflow": {
                "version": ver,
                "account_id": account,
                "interface_id": eni,
                "action": action,
                "log_status": status,
            }
        },
        "cloud": {"provider": "aws", "account": {"id": account}},
    }


def _int(rec: dict[str, str], name: str) -> int | None:
    value = rec.get(name)
    if value is None or value == "-":
        return None
    return parse_int(value, name.replace("_", "-"), 0, _INT_LIMITS.get(name, 2**63 - 1))


def _build(
    rec: dict[str, str], line: str, opts: ParseOptions, inner: _envelope.Inner | None
) -> FlowEvent:
    get = rec.get
    start = _int(rec, "start")
    end = _int(rec, "end")
    if start is not None:
        check_epoch(start, "start", opts)
    if end is not None:
        check_epoch(end, "end", opts)
    action = get("action", "-")
    disposition = _ACTIONS.get(action, "unknown")
    if action != "-" and disposition == "unknown":
        raise FieldError(f"action is {action[:20]!r}, expected ACCEPT, REJECT or -", "action")
    status = get("log_status", "-")
    if status != "-" and status not in _STATUSES:
        raise FieldError(
            f"log-status is {status[:20]!r}, expected OK, NODATA, SKIPDATA or -", "log_status"
        )
    start_iso = iso_seconds(start) if start is not None else None
    end_iso = iso_seconds(end) if end is not None else None
    timestamp = end_iso or start_iso
    if timestamp is None:  # a custom format without start/end: the envelope's time, or now
        when = inner.timestamp if inner is not None else None
        timestamp = iso_datetime(when or datetime.fromtimestamp(opts.reference_time, UTC))
    ev = base_event(
        FAMILY, timestamp, disposition,  # type: ignore[arg-type]
        line if opts.keep_original else None, start_iso, end_iso, opts.namespace,
    )  # fmt: skip
    event = ev["event"]
    if status in _NOT_FLOWS:  # the interface's state in the interval, not a flow
        event.update(kind="state", type=["info"], reason=_NOT_FLOWS[status])
        event.pop("outcome", None)
    if action != "-":
        event["action"] = action
    reason = get("reject_reason", "-")
    if reason != "-":
        event["reason"] = reason

    src_ip = get("srcaddr", "-")
    dst_ip = get("dstaddr", "-")
    proto = _int(rec, "protocol")
    add_endpoints(
        ev,
        parse_ip(src_ip, "srcaddr") if src_ip != "-" else None,
        parse_ip(dst_ip, "dstaddr") if dst_ip != "-" else None,
        proto,
        _int(rec, "srcport"),
        _int(rec, "dstport"),
    )
    add_counters(ev, _int(rec, "bytes"), _int(rec, "packets"))
    direction = get("flow_direction", "-")
    if direction != "-":
        if direction not in ("ingress", "egress"):
            raise FieldError(
                f"flow-direction is {direction[:20]!r}, expected ingress, egress or -",
                "flow_direction",
            )
        ev.setdefault("network", {})["direction"] = direction

    aws: dict[str, Any] = {}
    for name, value in rec.items():
        key = _AWS_KEYS.get(name)
        if key is not None and value != "-":
            aws[key] = value
    for name in ("pkt_srcaddr", "pkt_dstaddr"):
        if name in aws:
            aws[name] = parse_ip(aws[name], name.replace("_", "-"))
    for name in ("version", "traffic_path"):
        if name in aws:
            _int(rec, name)
    if "tcp_flags" in aws:
        flags = _int(rec, "tcp_flags") or 0
        aws["tcp_flags_array"] = [word for bit, word in _TCP_FLAGS if flags & bit]
    sub_type, sub_id = get("sublocation_type", "-"), get("sublocation_id", "-")
    if sub_type != "-" or sub_id != "-":
        aws["sublocation"] = {k: v for k, v in (("type", sub_type), ("id", sub_id)) if v != "-"}
    ev["aws"] = {"vpcflow": aws}

    cloud: dict[str, Any] = {"provider": "aws"}
    account = aws.get("account_id") or (inner.account_id if inner else None)
    if account:
        cloud["account"] = {"id": account}
    if "instance_id" in aws:
        cloud["instance"] = {"id": aws["instance_id"]}
    for name, key in (("region", "region"), ("az_id", "availability_zone")):
        value = get(name, "-")
        if value != "-":
            cloud[key] = value
    ev["cloud"] = cloud
    if "ecs_cluster_arn" in rec:
        _add_ecs(ev, rec)
    return ev


def _add_ecs(ev: FlowEvent, rec: dict[str, str]) -> None:
    """The v7 ECS fields: orchestrator.* and service.name."""
    pairs = (
        ("ecs_cluster_arn", "cluster", "id"),
        ("ecs_cluster_name", "cluster", "name"),
        ("ecs_container_instance_arn", "resource", "name"),
        ("ecs_container_instance_id", "resource", "id"),
    )
    orchestrator: dict[str, dict[str, str]] = {}
    for name, group, key in pairs:
        value = rec.get(name, "-")
        if value != "-":
            orchestrator.setdefault(group, {})[key] = value
    if orchestrator:
        ev["orchestrator"] = orchestrator
    service = rec.get("ecs_service_name", "-")
    if service != "-":
        ev["service"] = {"name": service}
