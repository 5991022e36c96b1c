"""PagerDuty Events API v2 (kind ``pagerduty``): ``trigger`` (an update is a trigger
PagerDuty folds into the open incident) and ``resolve``, with ``dedup_key`` = the
incident id, so a repeated delivery changes nothing. The target's secret is the
routing key."""

from __future__ import annotations

from typing import Any

import orjson

from streams.sinks.base import register
from streams.sinks.http import WebhookSink
from streams.webhooks import Action, incident_of, reached_text, step_lines

__all__ = ["PagerDutySink", "pagerduty_body"]

_SEVERITY = {"info": "info", "low": "warning", "medium": "warning", "high": "error",
             "critical": "critical"}  # fmt: skip


def pagerduty_body(document: dict[str, Any], routing_key: str, action: Action = "trigger"
                   ) -> dict[str, Any]:  # fmt: skip
    """The event for one page of an incident."""
    incident = incident_of(document)
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "resolve" if action == "resolve" else "trigger",
        "dedup_key": incident["id"],
    }
    if action != "resolve":
        body["payload"] = {
            "summary": str(incident["summary"])[:1024],
            "source": "segwatch",
            "severity": _SEVERITY[incident["severity"]],
            "timestamp": incident["last_seen"],
            "component": str(incident.get("most_sensitive_zone") or incident["path"][-1]),
            "group": str(incident["attacker_zone"]),
            "class": incident["steps"][0]["finding"] if incident["steps"] else "segwatch",
            "custom_details": {"path": incident["path"], "steps": step_lines(incident, 20),
                               "reached": reached_text(incident), "hosts": incident["hosts"],
                               "risk_score": document["event"]["risk_score"],
                               "state": incident["state"], "alerts": incident["alerts"]},
        }  # fmt: skip
        quarantine = incident.get("quarantine")
        if isinstance(quarantine, dict) and quarantine.get("command"):
            body["payload"]["custom_details"]["quarantine"] = quarantine["command"]
    return body


@register("pagerduty")
class PagerDutySink(WebhookSink):
    def encode(self, page: dict[str, Any], delivery: str) -> tuple[bytes, dict[str, str]]:
        body = pagerduty_body(page["doc"], self.target.secret_value(), page["action"])
        return orjson.dumps(body), {"Content-Type": "application/json", "User-Agent": "segwatch"}
