"""``segwatch evaluate``: run the analysis over simulated traffic and hold it against
the ground truth. Per scenario: the incidents it made (one is right), the pages
they would send, the time from the scenario's start to the first page, and
whether the expected reason was found. For benign traffic after the learning
period: alerts and incidents per 100k flows (audit records, severity info, are
counted apart: they record allowed access on purpose). And the risk of every
finding, benign against attack, in steps of ten: how well severity separates them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from detector.analyze import Analysis
from detector.detect import event_time
from detector.events import parse_stamp

__all__ = ["Evaluation", "ScenarioResult", "evaluate"]


@dataclass
class ScenarioResult:
    scenario: str
    description: str
    start: float
    detected: bool = False
    detected_at: float | None = None  # the first alerting event
    reasons: list[str] = field(default_factory=list)
    expect: str = ""
    expected_reason_found: bool = False
    incidents: list[str] = field(default_factory=list)
    pages: int = 0  # notifications that reach a person: triggers and escalations
    updates: int = 0  # other changes sent to the receivers
    paged_at: float | None = None  # the first page
    severity: str | None = None  # of its (worst) incident
    path: list[str] = field(default_factory=list)

    @property
    def time_to_detect(self) -> float | None:
        """Seconds from the scenario's start to its first page (else its first alert)."""
        when = self.paged_at if self.paged_at is not None else self.detected_at
        return None if when is None else max(when - self.start, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "description": self.description,
                "detected": self.detected, "time_to_detect_s": self.time_to_detect,
                "incidents": len(self.incidents), "incident_ids": self.incidents,
                "pages": self.pages, "updates": self.updates, "severity": self.severity,
                "path": self.path, "expected_reason": self.expect,
                "expected_reason_found": self.expected_reason_found,
                "reasons": self.reasons}  # fmt: skip


@dataclass
class Evaluation:
    scenarios: list[ScenarioResult]
    flows: int
    benign_flows_after_learning: int
    benign_alerts: int  # alerts benign traffic opened
    benign_alert_samples: list[dict[str, Any]]
    audit_alerts: int = 0  # severity info: records kept on purpose, not pages
    benign_incidents: int = 0
    benign_incident_samples: list[dict[str, Any]] = field(default_factory=list)
    replies: int = 0
    reply_alerts: int = 0  # alerts opened by a reply record: must stay 0
    risk: dict[str, list[int]] = field(default_factory=dict)  # benign|attack -> 10 buckets
    severities: dict[str, dict[str, int]] = field(default_factory=dict)  # of incidents

    @property
    def benign_rate_per_100k(self) -> float:
        return 100_000 * self.benign_alerts / max(self.benign_flows_after_learning, 1)

    @property
    def benign_incidents_per_100k(self) -> float:
        return 100_000 * self.benign_incidents / max(self.benign_flows_after_learning, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "flows": self.flows,
            "replies": self.replies,
            "scenarios": [s.to_dict() for s in self.scenarios],
            "benign_flows_after_learning": self.benign_flows_after_learning,
            "benign_alerts": self.benign_alerts,
            "benign_alerts_per_100k_flows": round(self.benign_rate_per_100k, 3),
            "benign_alert_samples": self.benign_alert_samples,
            "benign_incidents": self.benign_incidents,
            "benign_incidents_per_100k_flows": round(self.benign_incidents_per_100k, 3),
            "benign_incident_samples": self.benign_incident_samples,
            "audit_alerts": self.audit_alerts,
            "reply_alerts": self.reply_alerts,
            "risk_of_findings": self.risk,
            "incident_severities": self.severities,
        }


class _Label(BaseModel):
    """One scenario of a labels file, as ``segwatch simulate`` writes it."""

    model_config = ConfigDict(extra="ignore")

    scenario: str
    description: str
    start: float
    end: float
    lines: list[int]
    expect: str = ""


_LABELS = TypeAdapter(list[_Label])
LABELS_SHAPE = ("a JSON array of {scenario, description, start, end, lines: [line numbers], "
                "expect}, as `segwatch simulate` writes it next to the flows")  # fmt: skip


def parse_labels(data: bytes, where: str) -> list[dict[str, Any]]:
    """The labels in ``data`` (the text of a labels file named ``where``).

    :raises ValueError: it is not JSON of that shape; the message says where and what
        shape is expected.
    """
    try:
        labels = _LABELS.validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        place = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        raise ValueError(f"{where}: labels{place}: {first['msg']} ({exc.error_count()} "
                         f"problem(s)); expected {LABELS_SHAPE}") from None  # fmt: skip
    return [label.model_dump() for label in labels]


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
    flows = benign_after = benign_alerts = audit = replies = reply_alerts = 0
    samples: list[dict[str, Any]] = []
    owner: dict[str, ScenarioResult] = {}  # alert fingerprint -> the scenario that fed it
    risk = {"benign": [0] * 10, "attack": [0] * 10}
    for event_id, event in events:
        flows += 1
        line = int(event_id.rsplit(":", 1)[1])
        placement, score, _ = run.process(event, event_id)
        if placement is None:  # not a flow (a VPC NODATA interval)
            continue
        when = event_time(event)
        learned_from = when if learned_from is None else learned_from
        if placement.reply:
            replies += 1
            reply_alerts += run.touched is not None
            continue
        scenario = by_line.get(line)
        seg = event.get("segmentation") or {}
        if placement.verdict != "allowed" or seg.get("anomalies") or seg.get("detections"):
            risk["attack" if scenario is not None else "benign"][min(score // 10, 9)] += 1
        alerting = score >= settings.alert_score or bool(seg.get("detections"))
        if scenario is not None:
            if run.touched is not None:
                owner.setdefault(run.touched.fingerprint, scenario)
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
            opened = run.touched
            if opened is None or opened.count > 1 or opened.fingerprint in owner:
                continue  # only alerts benign traffic opened count as its own
            if opened.severity == "info":
                audit += 1
            else:
                benign_alerts += 1
                if len(samples) < 10:
                    samples.append({"event_id": event_id, "alert": opened.rule_name,
                                    "reasons": opened.reasons[:3]})  # fmt: skip
    run.finish()
    evaluation = Evaluation(results, flows, benign_after, benign_alerts, samples, audit,
                            replies=replies, reply_alerts=reply_alerts, risk=risk)  # fmt: skip
    _incidents(run, evaluation, owner, learned_from or 0.0)
    return evaluation


def _incidents(run: Analysis, evaluation: Evaluation, owner: dict[str, ScenarioResult],
               learned_from: float) -> None:  # fmt: skip
    """Each incident to the scenarios whose alerts it holds; the rest are benign."""
    pages = Counter(p.incident_id for p in run.pages if p.page)
    updates = Counter(p.incident_id for p in run.pages if p.action == "update" and not p.page)
    first_page: dict[str, float] = {}
    for page in run.pages:
        if page.page:
            first_page.setdefault(page.incident_id, page.time)
    severities: dict[str, Counter[str]] = {"benign": Counter(), "attack": Counter()}
    learning = run.engine.settings.learning_seconds
    for doc in run.incident_documents():
        incident = doc["segwatch"]["incident"]
        ident = incident["id"]
        mine = list({id(owner[f]): owner[f] for f in incident["alerts"] if f in owner}.values())
        severities["attack" if mine else "benign"][incident["severity"]] += 1
        for scenario in mine:
            scenario.incidents.append(ident)
            scenario.pages += pages[ident]
            scenario.updates += updates[ident]
            if ident in first_page:
                at = first_page[ident]
                scenario.paged_at = at if scenario.paged_at is None else min(scenario.paged_at, at)
            scenario.severity = scenario.severity or incident["severity"]
            scenario.path = scenario.path or incident["path"]
        if mine or incident["severity"] == "info":
            continue
        if parse_stamp(incident["first_seen"]) - learned_from < learning:
            continue
        evaluation.benign_incidents += 1
        if len(evaluation.benign_incident_samples) < 10:
            evaluation.benign_incident_samples.append(
                {
                    "id": ident,
                    "title": incident["title"],
                    "severity": incident["severity"],
                    "steps": [s["description"] for s in incident["steps"][:3]],
                }
            )
    evaluation.severities = {k: dict(v) for k, v in severities.items()}
