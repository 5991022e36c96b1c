"""Cilium Hubble flows (``hubble observe -o json``, the Hubble exporter) -> ECS flow events.

A record is a flow object, either bare or wrapped as ``{"flow": {...},
"node_name": ..., "time": ...}``. The verdict (FORWARDED, DROPPED, AUDIT, ...)
gives ``event.action`` and allowed/denied; ``drop_reason_desc`` gives
``event.reason``. Endpoints' namespaces, pod names, workloads and ``k8s:``
labels land in ``source.kubernetes`` / ``destination.kubernetes`` like the
Calico family's, and namespace labels (``io.cilium.k8s.namespace.labels.*``)
in ``namespace_labels``. Everything Hubble-specific is under ``hubble.*``.

This module is the extension point's proof: one module plus one registry
entry in ``detector/parsers/__init__.py``.
"""

from __future__ import annotations

from typing import Any

from detector.errors import ParseError
from detector.parsers import _envelope
from detector.parsers._common import (
    FieldError,
    FlowEvent,
    ParseOptions,
    ParseResult,
    add_endpoints,
    base_event,
    check_datetime,
    check_raw,
    iso_datetime,
    parse_int,
    parse_ip,
    parse_rfc3339,
    to_bytes,
)

__all__ = ["HubbleParser"]

FAMILY = "hubble"
_VERDICTS = {
    "FORWARDED": "allowed", "AUDIT": "allowed", "REDIRECTED": "allowed",
    "TRANSLATED": "allowed", "TRACED": "allowed",
    "DROPPED": "denied", "ERROR": "denied",
}  # fmt: skip
_L4 = (("TCP", 6), ("UDP", 17), ("SCTP", 132), ("ICMPv4", 1), ("ICMPv6", 58))
_NS_LABEL = "io.cilium.k8s.namespace.labels."


class HubbleParser:
    """Parses Hubble flow JSON records; stateless."""

    family = FAMILY

    def __init__(self, options: ParseOptions | None = None) -> None:
        self.options = options or ParseOptions()

    def parse(self, raw: bytes | str) -> list[ParseResult]:
        """One raw record -> one event, none (blank line) or an error."""
        data = to_bytes(raw)
        text = check_raw(data, FAMILY, self.options)
        if isinstance(text, ParseError):
            return [text]
        if not text or text.isspace():
            return []
        try:
            return [_flow(_envelope.loads(text), text, self.options)]
        except _envelope.EnvelopeError as exc:
            return [ParseError(FAMILY, f"record {exc}", data)]
        except FieldError as exc:
            return [ParseError(FAMILY, exc.reason, data, exc.position)]


def _flow(doc: Any, text: str, opts: ParseOptions) -> FlowEvent:
    if not isinstance(doc, dict):
        raise FieldError("record is not a JSON object")
    flow = doc.get("flow", doc)
    if not isinstance(flow, dict) or "verdict" not in flow:
        raise FieldError("record has no flow.verdict: not a Hubble flow", "verdict")
    stamp = flow.get("time") or doc.get("time")
    if not isinstance(stamp, str):
        raise FieldError("flow has no time", "time")
    when = parse_rfc3339(stamp)
    if when is None:
        raise FieldError(f"time {stamp[:40]!r} is not an RFC 3339 timestamp", "time")
    check_datetime(when, "time", opts)
    verdict = str(flow["verdict"])
    disposition = _VERDICTS.get(verdict, "unknown")
    ev = base_event(
        FAMILY,
        iso_datetime(when),
        disposition,  # type: ignore[arg-type]
        text if opts.keep_original else None,
        namespace=opts.namespace,
    )
    ev["event"]["action"] = verdict.lower()
    reason = flow.get("drop_reason_desc")
    if reason:
        ev["event"]["reason"] = reason

    ip = flow.get("IP") or {}
    src_ip = ip.get("source")
    dst_ip = ip.get("destination")
    proto = sport = dport = None
    l4 = flow.get("l4") or {}
    for key, number in _L4:
        layer = l4.get(key)
        if isinstance(layer, dict):
            proto = number
            if number in (1, 58):
                sport = parse_int(str(layer.get("type", 0)), "type", 0, 255)
                dport = parse_int(str(layer.get("code", 0)), "code", 0, 255)
            else:
                sport = parse_int(str(layer.get("source_port", 0)), "source_port", 0, 65535)
                dport = parse_int(
                    str(layer.get("destination_port", 0)), "destination_port", 0, 65535
                )
            break
    add_endpoints(
        ev,
        parse_ip(src_ip, "IP.source") if src_ip else None,
        parse_ip(dst_ip, "IP.destination") if dst_ip else None,
        proto, sport, dport, icmp_type_code=True,
    )  # fmt: skip
    direction = flow.get("traffic_direction")
    if direction in ("INGRESS", "EGRESS"):
        ev.setdefault("network", {})["direction"] = direction.lower()
    for side in ("source", "destination"):
        k8s = _kubernetes(flow.get(side))
        if k8s:
            ev.setdefault(side, {})["kubernetes"] = k8s
    node = flow.get("node_name") or doc.get("node_name")
    if node:
        ev["observer"] = {"name": node}
    ev["hubble"] = _hubble_fields(flow, l4)
    return ev


def _kubernetes(endpoint: Any) -> dict[str, Any]:
    if not isinstance(endpoint, dict):
        return {}
    k8s: dict[str, Any] = {}
    if endpoint.get("namespace"):
        k8s["namespace"] = endpoint["namespace"]
    if endpoint.get("pod_name"):
        k8s["pod"] = {"name": endpoint["pod_name"]}
    workloads = endpoint.get("workloads")
    if isinstance(workloads, list) and workloads and isinstance(workloads[0], dict):
        k8s["workload"] = workloads[0].get("name")
    labels: dict[str, str] = {}
    ns_labels: dict[str, str] = {}
    for label in endpoint.get("labels") or []:
        source, _, kv = str(label).partition(":")
        if source != "k8s":
            continue
        key, _, value = kv.partition("=")
        if key.startswith(_NS_LABEL):
            ns_labels[key[len(_NS_LABEL) :]] = value
        elif not key.startswith("io.cilium.k8s.policy.") and key != "io.kubernetes.pod.namespace":
            labels[key] = value
    if labels:
        k8s["labels"] = labels
    if ns_labels:
        k8s["namespace_labels"] = ns_labels
    return k8s


def _hubble_fields(flow: dict[str, Any], l4: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"verdict": flow["verdict"]}
    for key in (
        "drop_reason_desc",
        "Type",
        "traffic_direction",
        "is_reply",
        "policy_match_type",
        "trace_observation_point",
        "Summary",
    ):
        if flow.get(key) not in (None, ""):
            out[key.lower()] = flow[key]
    for side in ("source", "destination"):
        endpoint = flow.get(side)
        if isinstance(endpoint, dict):
            ident = {k: endpoint[k] for k in ("identity", "ID", "cluster_name") if k in endpoint}
            reserved = [
                str(x) for x in endpoint.get("labels") or [] if str(x).startswith("reserved:")
            ]
            if reserved:
                ident["reserved"] = reserved
            if ident:
                out[side] = {k.lower(): v for k, v in ident.items()}
    tcp = l4.get("TCP")
    if isinstance(tcp, dict) and isinstance(tcp.get("flags"), dict):
        out["tcp_flags"] = sorted(k for k, v in tcp["flags"].items() if v)
    for key in ("ingress_allowed_by", "egress_allowed_by", "ingress_denied_by", "egress_denied_by"):
        policies = flow.get(key)
        if isinstance(policies, list) and policies:
            out[key] = [p.get("name") if isinstance(p, dict) else str(p) for p in policies]
    return out
