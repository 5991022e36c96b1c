"""Calico flow logs and deny logs -> ECS flow events.

Three record shapes:

- **Flow-log JSON** (Calico Enterprise / Cloud ``flows.log``): ``start_time``,
  ``end_time``, ``source_ip``/``dest_ip`` (``-`` when aggregated), names,
  namespaces, labels (``{"labels": ["k=v", ...]}``), endpoint types,
  ``proto``, ``action``, ``reporter``, ``policies``, bytes/packets in/out.
- **Felix syslog deny records** (``calico-felix[pid]: ... action="deny"
  srcIP=".." dstIP=".." ...``), as a non-cluster host endpoint writes them.
- **Open-source deny logs**: kernel LOG lines with the ``calico-packet``
  prefix that a policy's ``Log`` action emits; parsed as iptables records
  under the ``calico`` dataset.

Kubernetes identity lands in ``source.kubernetes`` / ``destination.kubernetes``
(``namespace``, ``pod.name``, ``workload`` for aggregated names, ``labels`` as a
mapping, ``endpoint_type``), so the segmentation model can place pods by label.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
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
    check_epoch,
    check_raw,
    iso_datetime,
    iso_seconds,
    parse_bsd_time,
    parse_int,
    parse_ip,
    protocol,
    to_bytes,
)
from detector.parsers.iptables import kernel_event

__all__ = ["CalicoParser"]

FAMILY = "calico"
_ACTIONS = {"allow": "allowed", "deny": "denied"}
_CALICO_KEYS = (
    "reporter", "source_type", "dest_type", "num_flows", "num_flows_started",
    "num_flows_completed", "dest_service_name", "dest_service_namespace",
)  # fmt: skip
# the deny log's words -> calico.* (snake_case, as ECS names fields)
_FELIX_FIELDS = (("policy", "policy"), ("tier", "tier"), ("rule", "rule"),
                 ("ruleDir", "rule_direction"), ("trafficDir", "traffic_direction"))  # fmt: skip
_PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmp6": 58, "icmpv6": 58, "sctp": 132}
_FELIX_PAIR = re.compile(r'(\w+)=(?:"([^"]*)"|(\S+))')
_FELIX_HEAD = re.compile(
    r"^(?:<\d{1,3}>)?(?P<bsd>[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}) (?P<host>\S+) "
)


class CalicoParser:
    """Parses Calico flow-log JSON, felix deny syslog records and calico-packet LOG lines."""

    family = FAMILY

    def __init__(self, options: ParseOptions | None = None) -> None:
        self.options = options or ParseOptions()

    def parse(self, raw: bytes | str) -> list[ParseResult]:
        """One raw record -> one event, none (blank line) or an error."""
        opts = self.options
        data = to_bytes(raw)
        text = check_raw(data, FAMILY, opts)
        if isinstance(text, ParseError):
            return [text]
        if not text or text.isspace():
            return []
        try:
            if text[:1] == "{":
                return [_flow_log(_envelope.loads(text), text, opts)]
            if "calico-felix" in text and 'action="' in text:
                return [_felix(text, opts)]
            if "IN=" in text:
                return [kernel_event(text, opts, FAMILY)]
        except FieldError as exc:
            return [ParseError(FAMILY, exc.reason, data, exc.position)]
        except _envelope.EnvelopeError as exc:
            return [ParseError(FAMILY, f"flow-log JSON {exc}", data)]
        return [ParseError(
            FAMILY,
            "not a Calico record: expected flow-log JSON, a calico-felix deny record or a "
            "calico-packet LOG line",
            data,
        )]  # fmt: skip


def _flow_log(doc: Any, text: str, opts: ParseOptions) -> FlowEvent:
    if not isinstance(doc, dict):
        raise FieldError("flow-log record is not a JSON object")
    if "start_time" not in doc and "end_time" not in doc:
        raise FieldError("flow-log record has no start_time/end_time", "end_time")
    start = _epoch(doc, "start_time", opts)
    end = _epoch(doc, "end_time", opts)
    action = str(doc.get("action") or "").lower()
    disposition = _ACTIONS.get(action)
    if disposition is None:
        raise FieldError(f"action is {action[:20]!r}, expected allow or deny", "action")
    end_iso = iso_seconds(end if end is not None else start or 0)
    ev = base_event(
        FAMILY,
        end_iso,
        disposition,  # type: ignore[arg-type]
        text if opts.keep_original else None,
        iso_seconds(start) if start is not None else None,
        end_iso,
        opts.namespace,
    )
    ev["event"]["action"] = action

    proto_value = doc.get("proto")
    proto = _PROTOCOLS.get(proto_value) if type(proto_value) is str else None
    if proto is None and _given(proto_value):
        if type(proto_value) is not str and type(proto_value) is not int:
            raise FieldError(f"proto is {proto_value!r:.40}, expected a name or number", "proto")
        proto = protocol(proto_value)[0]
    add_endpoints(
        ev,
        _ip(doc, "source_ip"),
        _ip(doc, "dest_ip"),
        proto,
        _num(doc, "source_port", 65535),
        _num(doc, "dest_port", 65535),
    )
    in_b, out_b = _num(doc, "bytes_in"), _num(doc, "bytes_out")
    in_p, out_p = _num(doc, "packets_in"), _num(doc, "packets_out")
    # counters are the reporter's view: "in" is what the reporting endpoint received
    if doc.get("reporter") == "src":
        add_counters(ev, out_b, out_p, in_b, in_p)
    else:
        add_counters(ev, in_b, in_p, out_b, out_p)
    for side, prefix in (("source", "source_"), ("destination", "dest_")):
        k8s = _kubernetes(doc, prefix)
        if k8s:
            ev.setdefault(side, {})["kubernetes"] = k8s
    policies = _policies(doc.get("policies"))
    calico: dict[str, Any] = {}
    for key in _CALICO_KEYS:
        value = doc.get(key)
        if value is not None and value != "-" and value != "":
            calico[key] = value
    if policies:
        calico["policies"] = policies
        enforcing = next((p for p in policies if p["action"] == action), policies[-1])
        ev["rule"] = {"name": enforcing["name"], "ruleset": enforcing["tier"]}
    ev["calico"] = calico
    return ev


def _epoch(doc: dict[str, Any], key: str, opts: ParseOptions) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if type(value) is not int:  # bool is an int subclass, and not a time
        raise FieldError(f"{key} is {value!r:.40}, expected epoch seconds", key)
    if not 0 <= value <= 253402300799:
        raise FieldError(f"{key} is {value}, expected epoch seconds 0-253402300799", key)
    return check_epoch(value, key, opts)


def _ip(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is None or value == "-" or value == "":
        return None
    if type(value) is not str:
        raise FieldError(f"{key} is {value!r:.40}, expected an IP address", key)
    return parse_ip(value, key)


def _num(doc: dict[str, Any], key: str, hi: int = 2**63 - 1) -> int | None:
    value = doc.get(key)
    if type(value) is int and 0 <= value <= hi:  # the common case, first
        return value
    if value in (None, "-", ""):
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise FieldError(f"{key} is {value!r:.40}, expected an integer 0-{hi}", key)
    return parse_int(str(value), key, 0, hi)


_K8S_KEYS = {
    side: tuple(side + key for key in ("namespace", "name", "name_aggr", "labels", "type"))
    for side in ("source_", "dest_")
}


def _given(value: Any) -> bool:
    """Calico writes ``-`` (or nothing) for what it does not know."""
    return value is not None and value != "-" and value != ""


def _kubernetes(doc: dict[str, Any], prefix: str) -> dict[str, Any]:
    ns_key, name_key, aggr_key, labels_key, type_key = _K8S_KEYS[prefix]
    k8s: dict[str, Any] = {}
    # "-" or nothing: Calico does not know (tested inline: this runs twice a record)
    namespace = doc.get(ns_key)
    if namespace is not None and namespace != "-" and namespace != "":
        k8s["namespace"] = namespace
    name, aggr = doc.get(name_key), doc.get(aggr_key)
    if (_given(name) and name != aggr) or (name and aggr and "*" not in str(aggr)):
        k8s["pod"] = {"name": name}
    if aggr is not None and aggr != "-" and aggr != "":
        k8s["workload"] = aggr
    labels = doc.get(labels_key)
    if type(labels) is dict:
        labels = labels.get("labels")
    if type(labels) is list:
        k8s["labels"] = _labels(labels)
    etype = doc.get(type_key)
    if etype is not None and etype != "-" and etype != "":
        k8s["endpoint_type"] = etype
    return k8s


def _labels(items: list[Any]) -> dict[str, str]:
    """``["k=v", ...]`` as a mapping (a fresh one: events are the caller's to change)."""
    try:
        return dict(_labels_cached(tuple(items)))
    except TypeError:  # an unhashable item (a JSON object): nothing to cache
        return _label_pairs(items)


def _label_pairs(items: Iterable[Any]) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in map(str, items))


# a workload logs the same labels and policies again and again
_labels_cached = lru_cache(maxsize=4096)(_label_pairs)


def _policies(value: Any) -> list[dict[str, Any]]:
    """``"<index>|<tier>|<name>|<action>|<rule>"`` entries as dicts, in index order."""
    entries = value.get("all_policies") if isinstance(value, dict) else None
    if not entries or not isinstance(entries, list):
        return []
    try:
        parsed = _policies_cached(tuple(entries))
    except TypeError:  # an unhashable entry
        parsed = _policy_entries(entries)
    return [dict(p) for p in parsed]


def _policy_entries(entries: Iterable[Any]) -> tuple[dict[str, Any], ...]:
    out = []
    for entry in entries:
        parts = str(entry).split("|")
        if len(parts) != 5:
            raise FieldError(
                f"policies entry {str(entry)[:80]!r} is not index|tier|name|action|rule", "policies"
            )
        index, tier, name, action, rule = parts
        out.append(
            {
                "index": int(index) if index.isascii() and index.isdigit() else index,
                "tier": tier,
                "name": name,
                "action": action,
                "rule": rule,
            }
        )
    return tuple(sorted(out, key=lambda p: p["index"] if isinstance(p["index"], int) else 0))


_policies_cached = lru_cache(maxsize=4096)(_policy_entries)


def _felix(text: str, opts: ParseOptions) -> FlowEvent:
    head = _FELIX_HEAD.match(text)
    pairs = {m[1]: m[2] if m[2] is not None else m[3] for m in _FELIX_PAIR.finditer(text)}
    for key in ("srcIP", "dstIP", "action"):
        if key not in pairs:
            raise FieldError(f"felix record has no {key}", key)
    when = None
    if head:
        when = parse_bsd_time(head["bsd"], opts)
    stamp = iso_datetime(when or datetime.fromtimestamp(opts.reference_time, UTC))
    action = pairs["action"].lower()
    disposition = _ACTIONS.get(action)
    if disposition is None:
        raise FieldError(f"action is {action[:20]!r}, expected allow or deny", "action")
    ev = base_event(
        FAMILY,
        stamp,
        disposition,  # type: ignore[arg-type]
        text if opts.keep_original else None,
        namespace=opts.namespace,
    )
    ev["event"]["action"] = action
    proto = protocol(pairs["proto"], "proto")[0] if pairs.get("proto") else None
    add_endpoints(
        ev,
        parse_ip(pairs["srcIP"], "srcIP"),
        parse_ip(pairs["dstIP"], "dstIP"),
        proto,
        parse_int(pairs["srcPort"], "srcPort", 0, 65535) if "srcPort" in pairs else None,
        parse_int(pairs["dstPort"], "dstPort", 0, 65535) if "dstPort" in pairs else None,
    )
    counters = {
        k: parse_int(pairs[k], k, 0, 2**63 - 1)
        for k in ("inBytes", "inPackets", "outBytes", "outPackets")
        if k in pairs
    }
    outbound = pairs.get("trafficDir") == "outbound"
    mine, theirs = ("out", "in") if outbound else ("in", "out")
    add_counters(
        ev,
        counters.get(f"{mine}Bytes"),
        counters.get(f"{mine}Packets"),
        counters.get(f"{theirs}Bytes"),
        counters.get(f"{theirs}Packets"),
    )
    ev.setdefault("network", {})["direction"] = "egress" if outbound else "ingress"
    if head:
        ev["observer"] = {"name": head["host"]}
    if "policy" in pairs:
        ev["rule"] = {"name": pairs["policy"], "ruleset": pairs.get("tier", "")}
    ev["calico"] = {name: pairs[key] for key, name in _FELIX_FIELDS if key in pairs}
    return ev
