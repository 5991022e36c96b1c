"""Risk scores and alerts.

Risk (0-100): the verdict's base and each piece of evidence combine as
independent signals (1 - Π(1 - s/100)), scaled by the destination zone's
sensitivity (low 0.7, medium 0.85, high 1.0, restricted 1.15) and by 0.7 for
zones in monitor mode. Every score keeps its reasons.

Alerts group events by a fingerprint — what the alert is about: the rule or
the strongest finding, the zone pair, and the port when the finding is about
one — with first/last seen, count, severity, the highest score, reasons and a
sample of event ids. A repeat within the suppression window is counted, not
sent again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from detector.detect.base import Context, Evidence
from detector.detect.rules import SEVERITIES, DetectionRule

__all__ = ["VERDICT_RISK", "Alert", "AlertBook", "risk"]

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


@dataclass
class Alert:
    """One grouped finding."""

    fingerprint: str
    rule_id: str
    rule_name: str
    severity: str
    source_zone: str
    destination_zone: str
    port: int | None
    first_seen: float
    last_seen: float
    count: int = 0
    score: int = 0
    reasons: list[str] = field(default_factory=list)
    sample: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    runbook: str | None = None
    sent: float | None = None  # when it was last sent (emitted)
    model_version: str = ""

    def add(self, ctx: Context, score: int, reasons: list[str], event_id: str) -> None:
        self.count += 1
        self.last_seen = max(self.last_seen, ctx.time)
        self.first_seen = min(self.first_seen, ctx.time)
        self.score = max(self.score, score)
        for reason in reasons:
            if reason not in self.reasons and len(self.reasons) < _MAX_REASONS:
                self.reasons.append(reason)
        if len(self.sample) < _SAMPLE:
            self.sample.append(event_id)
        if ctx.src_ip and ctx.src_ip not in self.sources and len(self.sources) < _SAMPLE:
            self.sources.append(ctx.src_ip)

    def to_document(self) -> dict[str, Any]:
        """The alert as an ECS-friendly document (``event.kind: alert``)."""
        doc: dict[str, Any] = {
            "@timestamp": _iso(self.last_seen),
            "event": {
                "kind": "alert",
                "category": ["network"],
                "type": ["info"],
                "severity": SEVERITIES.index(self.severity),
                "risk_score": self.score,
                "start": _iso(self.first_seen),
                "end": _iso(self.last_seen),
                "dataset": "segwatch.alerts",
                "module": "segwatch",
            },
            "rule": {"id": self.rule_id, "name": self.rule_name},
            "message": self.reasons[0] if self.reasons else self.rule_name,
            "segwatch": {
                "alert": {
                    "fingerprint": self.fingerprint,
                    "severity": self.severity,
                    "count": self.count,
                    "first_seen": _iso(self.first_seen),
                    "last_seen": _iso(self.last_seen),
                    "reasons": self.reasons,
                    "sample_event_ids": self.sample,
                }
            },
            "segmentation": {
                "source_zone": self.source_zone,
                "destination_zone": self.destination_zone,
                "model_version": self.model_version,
            },
            "source": {"ip": self.sources[0]} if self.sources else {},
        }
        if self.port is not None:
            doc["destination"] = {"port": self.port}
        if self.runbook:
            doc["rule"]["reference"] = self.runbook
        return doc


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class AlertBook:
    """Open alerts by fingerprint; decides which updates are sent."""

    def __init__(self, suppress_seconds: int) -> None:
        self.suppress = suppress_seconds
        self.alerts: dict[str, Alert] = {}
        self._sent: dict[str, float] = {}  # restored send times of alerts not seen since

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
        if rules:
            top = max(rules, key=lambda r: SEVERITIES.index(r.severity))
            rule_id, name, severity, suppress = top.id, top.title, top.severity, top.suppress
            runbook: str | None = top.runbook
            about_port = True
        else:
            strongest = max(evidence, key=lambda e: e.score) if evidence else None
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
            severity = "critical" if score >= 90 else "high" if score >= 75 else "medium"
            suppress, runbook = self.suppress, None
            about_port = strongest is None or strongest.key.startswith(("port/", "path/"))
        name = _TITLES.get(rule_id, name)
        port = ctx.port if about_port else None
        raw = f"{rule_id}|{ctx.src_zone}|{ctx.dst_zone}|{port}"
        fingerprint = hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()[:20]
        alert = self.alerts.get(fingerprint)
        if alert is None:
            alert = self.alerts[fingerprint] = Alert(
                fingerprint,
                rule_id,
                name,
                severity,
                ctx.src_zone,
                ctx.dst_zone,
                port,
                ctx.time,
                ctx.time,
                runbook=runbook,
                model_version=p.model_version,
                sent=self._sent.pop(fingerprint, None),
            )
        alert.add(ctx, score, reasons, event_id)
        if alert.sent is None or ctx.time - alert.sent >= suppress:
            alert.sent = ctx.time
            return alert
        return None

    def state(self) -> dict[str, Any]:
        """When each alert was last sent: what suppression needs after a restart."""
        sent = dict(self._sent)
        sent.update((f, a.sent) for f, a in self.alerts.items() if a.sent is not None)
        return {"sent": sent}

    def load(self, state: dict[str, Any]) -> None:
        self._sent = dict(state["sent"])


_TITLES = {
    "scan.scan": "Port scan or sweep",
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
