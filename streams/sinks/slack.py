"""Slack incoming webhooks (kind ``slack``): one message per incident, when it opens."""

from __future__ import annotations

from typing import Any

import orjson

from streams.sinks.base import register
from streams.sinks.http import WebhookSink
from streams.webhooks import incident_of, reached_text, step_lines

__all__ = ["SlackSink", "slack_body"]


def slack_body(document: dict[str, Any]) -> dict[str, Any]:
    """The message for an incident: severity and title, path, risk, how far it got,
    the first steps, the incident id."""
    incident = incident_of(document)
    title = f"[{incident['severity'].upper()}] {incident['title']}"
    path = " → ".join(incident["path"])
    steps = "\n".join(f"• {line}" for line in step_lines(incident))
    quarantine = incident.get("quarantine")
    contain = (f"\ncontain (a person decides): `{quarantine['command']}`"
               if isinstance(quarantine, dict) and quarantine.get("command") else "")  # fmt: skip
    return {
        "text": f"{title}: {path}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": (
                f"*{path}*  risk {document['event']['risk_score']}, {reached_text(incident)}, "
                f"since {incident['first_seen']}\n{steps}{contain}")}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": (
                f"incident `{incident['id']}` · {incident['step_count']} step(s) · "
                f"alerts {', '.join(incident['alerts'][:3])}")}]},
        ],
    }  # fmt: skip


@register("slack")
class SlackSink(WebhookSink):
    def encode(self, page: dict[str, Any], delivery: str) -> tuple[bytes, dict[str, str]] | None:
        if page["action"] != "trigger":
            return None  # one message per incident
        return orjson.dumps(slack_body(page["doc"])), {"Content-Type": "application/json",
                                                       "User-Agent": "segwatch"}  # fmt: skip
