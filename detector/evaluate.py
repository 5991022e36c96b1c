"""``segwatch evaluate``: run the analysis over simulated traffic and hold it against
the ground truth — per scenario, whether it was detected, how fast, and why;
and how many alerts benign traffic raised after the learning period (audit
alerts, severity info, are counted apart: they record allowed access on purpose)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from detector.analyze import Analysis
from detector.detect import event_time

__all__ = ["Evaluation", "ScenarioResult", "evaluate"]


@dataclass
class ScenarioResult:
    scenario: str
    description: str
    start: float
    detected: bool = False
    detected_at: float | None = None
    reasons: list[str] = field(default_factory=list)
    expect: str = ""
    expected_reason_found: bool = False

    @property
    def time_to_detect(self) -> float | None:
        return None if self.detected_at is None else max(self.detected_at - self.start, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "description": self.description,
                "detected": self.detected, "time_to_detect_s": self.time_to_detect,
                "expected_reason": self.expect, "expected_reason_found": self.expected_reason_found,
                "reasons": self.reasons}  # fmt: skip


@dataclass
class Evaluation:
    scenarios: list[ScenarioResult]
    flows: int
    benign_flows_after_learning: int
    benign_alerts: int
    benign_alert_samples: list[dict[str, Any]]
    audit_alerts: int = 0  # severity info: records kept on purpose, not pages

    @property
    def benign_rate_per_100k(self) -> float:
        return 100_000 * self.benign_alerts / max(self.benign_flows_after_learning, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "flows": self.flows,
            "scenarios": [s.to_dict() for s in self.scenarios],
            "benign_flows_after_learning": self.benign_flows_after_learning,
            "benign_alerts": self.benign_alerts,
            "benign_alerts_per_100k_flows": round(self.benign_rate_per_100k, 3),
            "benign_alert_samples": self.benign_alert_samples,
            "audit_alerts": self.audit_alerts,
        }


def evaluate(run: Analysis, events: Iterable[tuple[str, dict[str, Any]]],
             labels: list[dict[str, Any]]) -> Evaluation:  # fmt: skip
    """Process ``(id "FILE:LINE", event)`` pairs; ``labels`` as the simulator wrote them."""
    results = [ScenarioResult(lb["scenario"], lb["description"], lb["start"],
                              expect=lb.get("expect", "")) for lb in labels]  # fmt: skip
    by_line: dict[int, ScenarioResult] = {}
    for label, result in zip(labels, results, strict=True):
        for line in label["lines"]:
            by_line[line] = result
    settings = run.engine.settings
    learned_from: float | None = None
    flows = benign_after = benign_alerts = audit = 0
    samples: list[dict[str, Any]] = []
    for event_id, event in events:
        flows += 1
        line = int(event_id.rsplit(":", 1)[1])
        _, score, alert = run.process(event, event_id)
        when = event_time(event)
        learned_from = when if learned_from is None else learned_from
        scenario = by_line.get(line)
        seg = event.get("segmentation") or {}
        alerting = score >= settings.alert_score or bool(seg.get("detections"))
        if scenario is not None:
            if alerting and not scenario.detected:
                scenario.detected, scenario.detected_at = True, when
            if alerting:
                for reason in [*seg.get("reasons", []),
                               *(f"rule {d}" for d in seg.get("detections", []))]:  # fmt: skip
                    if scenario.expect and scenario.expect in reason:
                        scenario.expected_reason_found = True
                    if reason not in scenario.reasons and len(scenario.reasons) < 12:
                        scenario.reasons.append(reason)
            continue
        if when - learned_from >= settings.learning_seconds:
            benign_after += 1
            if alert is not None and alert.severity == "info":
                audit += 1
            elif alert is not None:
                benign_alerts += 1
                if len(samples) < 10:
                    samples.append({"event_id": event_id, "alert": alert.rule_name,
                                    "reasons": alert.reasons[:3]})  # fmt: skip
    return Evaluation(results, flows, benign_after, benign_alerts, samples, audit)
