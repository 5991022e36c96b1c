"""Risk scores and alerts.

Risk (0-100): the verdict's base and each piece of evidence combine as
independent signals (1 - Π(1 - s/100)), scaled by the destination zone's
sensitivity (low 0.7, medium 0.85, high 1.0, restricted 1.15) and by 0.7 for
zones in monitor mode. Every score keeps its reasons.

An alert is one finding about one initiator: its fingerprint is the rule (or the
strongest finding, or the verdict), the initiating host, the zone pair, and the
port when the finding is about one (a rare port, a new path). It gathers the
connections that made it — count, the hosts and ports they reached, how many the
network refused — with first/last seen, severity, the highest score, reasons and
a sample of event ids. It is sent when it opens and then at most every
``alert_update_seconds`` while it changes (:meth:`AlertBook.flush` sends what is
left); alerts are the evidence incidents are made of, and pages are per incident.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from detector.definitions import ECS_VERSION, stream_fields
from detector.detect.base import Context, Evidence
from detector.detect.rules import SEVERITIES, DetectionRule
from detector.events import iso_ms
from detector.model.schema import Zone

__all__ = ["VERDICT_RISK", "Alert", "AlertBook", "crossings", "risk", "severity_of"]

VERDICT_RISK = {
    "allowed": 0,
    "over_restrictive": 15,
    "unmanaged": 20,
    "blocked_attempt": 30,
    "violation": 55,
}
_SENSITIVITY = {"low": 0.7, "medium": 0.85, "high": 1.0, "restricted": 1.15}
_VERDICT_REASONS = {
    "violation": "the network let through a flow the model forbids",
    "blocked_attempt": "a flow the model forbids was attempted and blocked",
    "over_restrictive": "the network blocked a flow the model allows",
    "unmanaged": "an endpoint is in no zone",
}
_SAMPLE = 5
_MAX_REASONS = 8
_MAX_HOSTS = 256  # distinct destination hosts kept per alert
_MAX_SERVICES = 1024
_MAX_KEPT = 2000  # alerts kept in the state snapshot (the most recently seen)


def risk(
    verdict: str,
    evidence: list[Evidence],
    sensitivity: str,
    monitor: bool,
    rules: list[DetectionRule],
) -> tuple[int, list[str]]:
    """(score 0-100, reasons) for one event."""
    remaining = 1 - VERDICT_RISK.get(verdict, 0) / 100
    reasons = (
        [f"verdict {verdict}: {_VERDICT_REASONS[verdict]}"] if verdict in _VERDICT_REASONS else []
    )
    for found in evidence:
        remaining *= 1 - found.score / 100
        reasons.append(found.reason)
    for rule in rules:
        remaining *= 1 - rule.score / 100
        reasons.append(f"rule {rule.id}: {rule.title}")
    factor = _SENSITIVITY.get(sensitivity, 0.9) * (0.7 if monitor else 1.0)
    return min(100, round((1 - remaining) * 100 * factor)), reasons


def crossings(source: Zone | None, destination: Zone | None) -> list[str]:
    """The boundaries a connection crosses: ``environment`` (production and another),
    ``tenant`` (two different tenants)."""
    if source is None or destination is None:
        return []
    out = []
    a, b = source.tags.environment, destination.tags.environment
    if a is not None and b is not None and a != b:
        out.append("environment")
    a, b = source.tags.tenant, destination.tags.tenant
    if a is not None and b is not None and a != b:
        out.append("tenant")
    return out


def severity_of(score: int, boundary: bool) -> str:
    """An alert's severity from its risk: ``critical`` only for a finding at a boundary
    (into a restricted zone, across environments or tenants)."""
    if score >= 90:
        return "critical" if boundary else "high"
    if score >= 75:
        return "high"
    return "medium" if score >= 60 else "low"


@dataclass
class Alert:
    """One grouped finding about one initiating host."""

    fingerprint: str
    rule_id: str
    rule_name: str
    severity: str
    source_zone: str
    destination_zone: str
    port: int | None
    first_seen: float
    last_seen: float
    source_ip: str = ""
    count: int = 0
    denied: int = 0
    score: int = 0
    reasons: list[str] = field(default_factory=list)
    sample: list[str] = field(default_factory=list)
    hosts: dict[str, None] = field(default_factory=dict)  # destination hosts, in order
    services: dict[str, None] = field(default_factory=dict)  # "tcp/22", in order
    headline: str = ""  # the strongest finding's reason, as last seen
    runbook: str | None = None
    destination_sensitivity: str = "internet"
    crosses: list[str] = field(default_factory=list)
    active: float = 0.0  # the source's latest suspicious activity (>= last_seen)
    sent: float | None = None  # when it was last sent (emitted)
    dirty: bool = False  # changed since it was last sent
    model_version: str = ""
    quarantine: dict[str, Any] | None = None  # the containment an on-call person may apply

    def add(self, ctx: Context, score: int, reasons: list[str], event_id: str) -> None:
        self.count += 1
        self.denied += ctx.denied
        self.last_seen = max(self.last_seen, ctx.time)
        self.first_seen = min(self.first_seen, ctx.time)
        self.score = max(self.score, score)
        for reason in reasons:
            if reason not in self.reasons and len(self.reasons) < _MAX_REASONS:
                self.reasons.append(reason)
        if len(self.sample) < _SAMPLE:
            self.sample.append(event_id)
        if ctx.dst_ip and len(self.hosts) < _MAX_HOSTS:
            self.hosts[ctx.dst_ip] = None
        service = ctx.placement.service
        if service is not None and len(self.services) < _MAX_SERVICES:
            self.services[service] = None

    def to_document(self) -> dict[str, Any]:
        """The alert as an ECS-friendly document (``event.kind: alert``)."""
        hosts = list(self.hosts)
        doc: dict[str, Any] = {
            "@timestamp": iso_ms(self.last_seen),
            "event": {
                "kind": "alert",
                "category": ["network"],
                "type": ["info"],
                "severity": SEVERITIES.index(self.severity),
                "risk_score": self.score,
                "start": iso_ms(self.first_seen),
                "end": iso_ms(self.last_seen),
                "dataset": "segwatch.alerts",
                "module": "segwatch",
            },
            "ecs": {"version": ECS_VERSION},
            "data_stream": stream_fields("segwatch.alerts"),
            "rule": {"id": self.rule_id, "name": self.rule_name},
            "message": self.headline or (self.reasons[0] if self.reasons else self.rule_name),
            "segwatch": {
                "alert": {
                    "fingerprint": self.fingerprint,
                    "severity": self.severity,
                    "count": self.count,
                    "denied": self.denied,
                    "first_seen": iso_ms(self.first_seen),
                    "last_seen": iso_ms(self.last_seen),
                    "last_activity": iso_ms(max(self.active, self.last_seen)),
                    "reasons": self.reasons,
                    "headline": self.headline,
                    "sample_event_ids": self.sample,
                    "hosts": len(self.hosts),
                    "services": sorted(self.services, key=_service_order)[:50],
                    "service_count": len(self.services),
                }
            },
            "segmentation": {
                "source_zone": self.source_zone,
                "destination_zone": self.destination_zone,
                "destination_sensitivity": self.destination_sensitivity,
                "crosses": self.crosses,
                "model_version": self.model_version,
            },
            "source": {"ip": self.source_ip} if self.source_ip else {},
            "destination": {"ip": hosts[:20]} if hosts else {},
            "related": {"ip": ([self.source_ip] if self.source_ip else []) + hosts[:20]},
        }
        if self.port is not None:
            doc["destination"]["port"] = self.port
        if self.runbook:
            doc["rule"]["reference"] = self.runbook
        if self.quarantine:
            doc["segwatch"]["alert"]["quarantine"] = self.quarantine
        return doc

    def dump(self) -> dict[str, Any]:
        """JSON-ready state (``AlertBook.state``)."""
        out = dict(self.__dict__)
        out["hosts"], out["services"] = list(self.hosts), list(self.services)
        return out

    @classmethod
    def restore(cls, data: dict[str, Any]) -> Alert:
        values = dict(data)
        values["hosts"] = dict.fromkeys(values.get("hosts", ()))
        values["services"] = dict.fromkeys(values.get("services", ()))
        return cls(**values)


def _suggestion(ctx: Context) -> dict[str, Any] | None:
    """The quarantine of the connection's initiator (its pod when the log names it)."""
    if not ctx.src_ip:
        return None
    from detector.model.quarantine import suggestion

    initiator = ctx.event.get("destination" if ctx.reply else "source") or {}
    dataset = (ctx.event.get("event") or {}).get("dataset")
    return suggestion(ctx.src_ip, initiator.get("kubernetes"), dataset)


def _service_order(service: str) -> tuple[str, int]:
    transport, _, port = service.partition("/")
    return transport, int(port) if port.isdigit() else -1


class AlertBook:
    """Open alerts by fingerprint; decides which changes are sent and when."""

    def __init__(self, update_seconds: int, zones: dict[str, Zone] | None = None) -> None:
        self.update_seconds = update_seconds
        self.zones = zones or {}
        self.alerts: dict[str, Alert] = {}
        self.touched: Alert | None = None  # the alert the last recorded event went into
        self._dirty: dict[str, Alert] = {}  # alerts with changes not sent yet
        self._latest: dict[str, str] = {}  # initiating host -> its latest alert's fingerprint

    def record(
        self,
        ctx: Context,
        score: int,
        reasons: list[str],
        evidence: list[Evidence],
        rules: list[DetectionRule],
        event_id: str,
    ) -> Alert | None:
        """Add an alerting event; return the alert if it is to be sent now."""
        p = ctx.placement
        strongest = max(evidence, key=lambda e: e.score) if evidence else None
        source = self.zones.get(ctx.src_zone)
        target = self.zones.get(ctx.dst_zone)
        sensitivity = target.tags.sensitivity if target is not None else "internet"
        crosses = crossings(source, target)
        if rules:
            top = max(rules, key=lambda r: SEVERITIES.index(r.severity))
            rule_id, name, severity = top.id, top.title, str(top.severity)
            runbook: str | None = top.runbook
            about_port = False
        else:
            rule_id = (
                f"{strongest.detector}.{strongest.key.split('/')[0]}"
                if strongest
                else f"verdict.{p.verdict}"
            )
            name = (
                strongest.reason.split(":")[0]
                if strongest
                else f"{p.verdict} {p.source_zone} -> {p.destination_zone}"
            )
            severity = severity_of(score, sensitivity == "restricted" or bool(crosses))
            runbook = None
            about_port = strongest is not None and "/" in strongest.key
        name = _TITLES.get(rule_id, name)
        port = ctx.port if about_port else None
        raw = f"{rule_id}|{ctx.src_ip}|{ctx.src_zone}|{ctx.dst_zone}|{port}"
        fingerprint = hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()[:20]
        alert = self.alerts.get(fingerprint)
        if alert is None:
            if len(self.alerts) >= 4 * _MAX_KEPT:
                self._forget()
            alert = self.alerts[fingerprint] = Alert(
                fingerprint, rule_id, name, severity, ctx.src_zone, ctx.dst_zone, port,
                ctx.time, ctx.time, source_ip=ctx.src_ip, runbook=runbook,
                destination_sensitivity=sensitivity, crosses=crosses,
                model_version=p.model_version, quarantine=_suggestion(ctx),
            )  # fmt: skip
        elif SEVERITIES.index(severity) > SEVERITIES.index(alert.severity):
            alert.severity = severity
        alert.add(ctx, score, reasons, event_id)
        alert.active = max(alert.active, ctx.time)
        self.touched = alert
        if len(self._latest) >= 4 * _MAX_KEPT:
            self._latest = {h: f for h, f in self._latest.items() if f in self.alerts}
        self._latest[ctx.src_ip] = fingerprint
        if strongest is not None and strongest.score >= 50:
            alert.headline = strongest.reason
        elif not alert.headline:
            alert.headline = reasons[-1] if reasons else name
        return self._changed(alert, ctx.time)

    def active(self, ctx: Context, window: float) -> Alert | None:
        """A suspicious connection below the alert threshold (a refused probe, a
        violation) from a host with an alert seen within ``window``: the host is still
        at work, so its latest alert (and the incident it is in) stays alive. Returns
        the alert if its update is to be sent now."""
        fingerprint = self._latest.get(ctx.src_ip)
        alert = self.alerts.get(fingerprint) if fingerprint is not None else None
        if alert is None or ctx.time - alert.active > window or ctx.time <= alert.active:
            return None
        alert.active = ctx.time
        return self._changed(alert, ctx.time)

    def _changed(self, alert: Alert, now: float) -> Alert | None:
        if alert.sent is None or now - alert.sent >= self.update_seconds:
            alert.sent, alert.dirty = now, False
            self._dirty.pop(alert.fingerprint, None)
            return alert
        alert.dirty = True
        self._dirty[alert.fingerprint] = alert
        return None

    def flush(self, now: float | None = None) -> list[Alert]:
        """The alerts with changes not sent yet whose update is due at ``now`` (all of
        them without it), now marked sent; oldest change first."""
        interval = self.update_seconds
        due = sorted(
            (a for a in self._dirty.values()
             if now is None or a.sent is None or now - a.sent >= interval),
            key=lambda a: a.last_seen,
        )  # fmt: skip
        for alert in due:
            alert.sent, alert.dirty = (
                max(alert.active, alert.last_seen) if now is None else now,
                False,
            )
            del self._dirty[alert.fingerprint]
        return due

    def _forget(self) -> None:
        """Keep the most recently seen alerts."""
        kept = sorted(self.alerts.values(), key=lambda a: a.last_seen)[-_MAX_KEPT:]
        self.alerts = {a.fingerprint: a for a in kept}
        self._dirty = {f: a for f, a in self._dirty.items() if f in self.alerts}

    def state(self) -> dict[str, Any]:
        """The open alerts (the most recently seen), so a restart goes on counting them."""
        kept = sorted(self.alerts.values(), key=lambda a: a.last_seen)[-_MAX_KEPT:]
        return {"alerts": [a.dump() for a in kept]}

    def load(self, state: dict[str, Any]) -> None:
        self.alerts = {a["fingerprint"]: Alert.restore(a) for a in state.get("alerts", ())}
        self._dirty = {f: a for f, a in self.alerts.items() if a.dirty}
        self._latest = {a.source_ip: f for f, a in
                        sorted(self.alerts.items(), key=lambda kv: kv[1].last_seen)}  # fmt: skip


_TITLES = {
    "scan.vertical": "Vertical port scan",
    "scan.horizontal": "Horizontal sweep",
    "scan.slow": "Slow sweep",
    "scan.denied": "Burst of denied flows",
    "blocked_series.blocked_series": "Blocked attempts into a guarded zone",
    "lateral.lateral": "Lateral movement inside a zone",
    "dns.dns": "Unusual DNS volume to outside resolvers",
    "odd_port.port": "Rare destination port",
    "off_hours.off_hours": "Activity outside business hours",
    "new_path.path": "New network path",
    "pivot.pivot": "New paths into several zones (pivoting)",
    "volume.volume": "Bulk transfer",
    "ml.ml": "Unusual source behaviour (learned model)",
    "verdict.violation": "Segmentation violation",
    "verdict.blocked_attempt": "Blocked attempt",
    "verdict.over_restrictive": "Over-restrictive policy",
    "verdict.unmanaged": "Unmanaged endpoint",
}
