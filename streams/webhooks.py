"""On-call webhooks: signed JSON, Slack incoming webhooks, PagerDuty Events API v2.

They page per **incident** (``detector.incidents``): a ``trigger`` when it opens,
``update`` on escalation or at most every ``incidents.update_seconds``, ``resolve``
when it resolves. PagerDuty gets all three with ``dedup_key`` = the incident id (an
update is a trigger PagerDuty folds into the open incident); Slack one message per
incident, when it opens; signed JSON every page, carrying the whole incident.

Delivery retries with exponential backoff and full jitter on 429, 5xx and
connection errors, limits its rate per target (token bucket), and opens a
circuit per target after repeated failures. A page is never dropped: when a
target cannot take it now, :class:`RetryLater` says when to try again, and the
caller (the incident stage's outbox) keeps it until then.

**Signed JSON.** The body is the incident document with ``segwatch.page``
(``action``, ``why``, ``id``: the delivery id, the same on a repeat, for receivers
to deduplicate on; also in ``X-Segwatch-Delivery``). Headers:
``X-Segwatch-Timestamp`` (Unix seconds) and ``X-Segwatch-Signature``
(``v1=`` + hex HMAC-SHA256 of ``"{timestamp}.{body}"`` under the target's
secret). A receiver recomputes it, compares in constant time, and refuses
timestamps more than 5 minutes away (replay window) — :func:`verify` does
exactly that.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = [
    "Refused",
    "RetryLater",
    "WebhookSink",
    "WebhookTarget",
    "pagerduty_body",
    "receiver",
    "sign",
    "slack_body",
    "verify",
]

SIGNATURE_HEADER = "X-Segwatch-Signature"
DELIVERY_HEADER = "X-Segwatch-Delivery"
TIMESTAMP_HEADER = "X-Segwatch-Timestamp"
REPLAY_WINDOW = 300
_SEVERITIES = ("info", "low", "medium", "high", "critical")
_PD_SEVERITY = {"info": "info", "low": "warning", "medium": "warning", "high": "error",
                "critical": "critical"}  # fmt: skip


class WebhookTarget(BaseModel):
    """One receiver. Secrets come from the environment or a file, and never print."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    kind: Literal["json", "slack", "pagerduty"]
    url: str = Field(pattern=r"^https?://")
    secret: SecretStr | None = Field(
        default=None, description="HMAC key (json) or routing key (pagerduty)."
    )
    secret_file: Path | None = Field(default=None, description="Read the secret from this file.")
    min_severity: Literal["info", "low", "medium", "high", "critical"] = "low"
    timeout: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, description="Tries per delivery before RetryLater.")
    backoff_initial: float = Field(default=0.5, gt=0)
    backoff_max: float = Field(default=30.0, gt=0)
    rate_per_second: float = Field(default=5.0, gt=0)
    breaker_failures: int = Field(
        default=5, ge=1, description="Failed deliveries that open the circuit."
    )
    breaker_cooldown: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _needs_secret(self) -> WebhookTarget:
        if self.kind in ("json", "pagerduty") and self.secret is None and self.secret_file is None:
            what = "an HMAC secret" if self.kind == "json" else "a routing key"
            raise ValueError(
                f"webhook {self.name}: {self.kind} needs {what} (secret or secret_file)"
            )
        return self

    def secret_value(self) -> str:
        if self.secret is not None:
            return self.secret.get_secret_value()
        assert self.secret_file is not None
        return self.secret_file.read_text(encoding="utf-8").strip()

    def wants(self, document: dict[str, Any]) -> bool:
        severity = _incident(document).get("severity", "medium")
        return _SEVERITIES.index(severity) >= _SEVERITIES.index(self.min_severity)


def _incident(document: dict[str, Any]) -> dict[str, Any]:
    incident: dict[str, Any] = document.get("segwatch", {}).get("incident", {})
    return incident


Action = Literal["trigger", "update", "resolve"]


def sign(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The signature headers for a body."""
    stamp = str(int(time.time() if now is None else now))
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: f"v1={digest}"}


def verify(secret: str, headers: dict[str, str], body: bytes, now: float | None = None,
           window: int = REPLAY_WINDOW) -> bool:  # fmt: skip
    """What a receiver does: the signature matches and the timestamp is recent."""
    lowered = {k.lower(): v for k, v in headers.items()}
    stamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
    given = lowered.get(SIGNATURE_HEADER.lower(), "")
    if not stamp.isdigit() or abs((time.time() if now is None else now) - int(stamp)) > window:
        return False
    expected = sign(secret, body, int(stamp))[SIGNATURE_HEADER]
    return hmac.compare_digest(expected, given)


def _steps(incident: dict[str, Any], limit: int = 5) -> list[str]:
    return [f"{s['time'][11:19]} {s['from_ip']} ({s['from_zone']}) -> {s['to_zone']}: "
            f"{s['description']}" for s in incident.get("steps", [])[:limit]]  # fmt: skip


def _reached(incident: dict[str, Any]) -> str:
    zone, seconds = incident.get("most_sensitive_zone"), incident.get("time_to_most_sensitive_s")
    if zone is None or seconds is None:
        return "reached no zone (every step refused)"
    return f"reached {zone} {seconds / 60:.0f} min after its first step"


def slack_body(document: dict[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message for an incident (sent once, when it opens)."""
    incident = _incident(document)
    title = f"[{incident['severity'].upper()}] {incident['title']}"
    path = " → ".join(incident["path"])
    steps = "\n".join(f"• {line}" for line in _steps(incident))
    return {
        "text": f"{title}: {path}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": (
                f"*{path}*  risk {document['event']['risk_score']}, {_reached(incident)}, "
                f"since {incident['first_seen']}\n{steps}")}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": (
                f"incident `{incident['id']}` · {incident['step_count']} step(s) · "
                f"alerts {', '.join(incident['alerts'][:3])}")}]},
        ],
    }  # fmt: skip


def pagerduty_body(document: dict[str, Any], routing_key: str, action: Action = "trigger"
                   ) -> dict[str, Any]:  # fmt: skip
    """A PagerDuty Events API v2 event; the dedup key is the incident's id. An update is
    a trigger PagerDuty folds into the open incident."""
    incident = _incident(document)
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "resolve" if action == "resolve" else "trigger",
        "dedup_key": incident["id"],
    }
    if action != "resolve":
        body["payload"] = {
            "summary": str(incident["summary"])[:1024],
            "source": "segwatch",
            "severity": _PD_SEVERITY[incident["severity"]],
            "timestamp": incident["last_seen"],
            "component": str(incident.get("most_sensitive_zone") or incident["path"][-1]),
            "group": str(incident["attacker_zone"]),
            "class": incident["steps"][0]["finding"] if incident["steps"] else "segwatch",
            "custom_details": {"path": incident["path"], "steps": _steps(incident, 20),
                               "reached": _reached(incident), "hosts": incident["hosts"],
                               "risk_score": document["event"]["risk_score"],
                               "state": incident["state"], "alerts": incident["alerts"]},
        }  # fmt: skip
    return body


class Refused(Exception):
    """The target answered 4xx (not 429): it will not take this page."""

    def __init__(self, target: str, reason: str) -> None:
        self.target, self.reason = target, reason
        super().__init__(f"webhook {target} refused the page: {reason}")


class RetryLater(Exception):
    """The target cannot take the page now; try again after ``at`` (epoch seconds)."""

    def __init__(self, target: str, at: float, reason: str) -> None:
        self.target, self.at, self.reason = target, at, reason
        when = time.strftime("%H:%M:%S", time.gmtime(at))
        super().__init__(f"webhook {target}: {reason}; retry after {when} UTC")


@dataclass
class _Breaker:
    failures: int = 0
    open_until: float = 0.0


@dataclass
class WebhookSink:
    """Delivers incident pages to one target."""

    target: WebhookTarget
    client: httpx.Client = field(default_factory=httpx.Client)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    breaker: _Breaker = field(default_factory=_Breaker)
    sent: int = 0
    failed_attempts: int = 0
    _tokens: float = 0.0
    _refilled: float | None = None

    def encode(self, document: dict[str, Any], action: Action = "trigger", why: str = "",
               delivery: str = "") -> tuple[bytes, dict[str, str]]:  # fmt: skip
        kind = self.target.kind
        headers = {"Content-Type": "application/json", "User-Agent": "segwatch"}
        if delivery:
            headers[DELIVERY_HEADER] = delivery
        if kind == "slack":
            return orjson.dumps(slack_body(document)), headers
        if kind == "pagerduty":
            return orjson.dumps(
                pagerduty_body(document, self.target.secret_value(), action)
            ), headers
        page = {"action": action, "why": why, "id": delivery}
        body = {**document, "segwatch": {**document.get("segwatch", {}), "page": page}}
        return orjson.dumps(body), headers  # json: signed per attempt, fresh timestamp

    def deliver(self, document: dict[str, Any], action: Action = "trigger", why: str = "",
                delivery: str = "") -> bool:  # fmt: skip
        """Send one page of an incident; True when the target accepted it, False when it
        does not want it (below ``min_severity``; Slack: anything but the opening).

        :raises RetryLater: the circuit is open, or every attempt failed.
        :raises Refused: the target answered 4xx (not 429).
        """
        if self.target.kind == "slack" and action != "trigger":
            return False  # one message per incident
        if not self.target.wants(document):
            return False
        now = self.clock()
        if self.breaker.open_until > now:
            raise RetryLater(self.target.name, time.time() + self.breaker.open_until - now,
                             "circuit open after repeated failures")  # fmt: skip
        body, headers = self.encode(document, action, why, delivery)
        delay = self.target.backoff_initial
        reason = ""
        for attempt in range(1, self.target.max_attempts + 1):
            self._take_token()
            if self.target.kind == "json":
                headers.update(sign(self.target.secret_value(), body))
            try:
                response = self.client.post(self.target.url, content=body, headers=headers,
                                            timeout=self.target.timeout)  # fmt: skip
                if response.status_code < 300:
                    self.sent += 1
                    self.breaker.failures = 0
                    return True
                reason = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code != 429:
                    # the receiver refuses this alert: retrying will not change its mind
                    raise Refused(self.target.name, f"{reason}: {response.text[:200]}")
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            self.failed_attempts += 1
            if attempt < self.target.max_attempts:
                self.sleep(self.rng.uniform(0, min(delay, self.target.backoff_max)))
                delay *= 2
        self.breaker.failures += 1
        wait = self.target.backoff_max
        if self.breaker.failures >= self.target.breaker_failures:
            self.breaker.open_until = self.clock() + self.target.breaker_cooldown
            wait = self.target.breaker_cooldown
        raise RetryLater(self.target.name, time.time() + wait, f"{reason} after "
                         f"{self.target.max_attempts} attempt(s)")  # fmt: skip

    def _take_token(self) -> None:
        rate = self.target.rate_per_second
        now = self.clock()
        if self._refilled is None:
            self._refilled, self._tokens = now, rate
        self._tokens = min(rate, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens < 1:
            self.sleep((1 - self._tokens) / rate)
            self._tokens = 1
            self._refilled = self.clock()
        self._tokens -= 1


def receiver(secret: str | None, emit: Callable[[str], None]) -> type[BaseHTTPRequestHandler]:
    """A request handler that takes pages as a signed-JSON target sends them: with a
    secret, an unsigned, mis-signed or stale request gets 401; each accepted page is
    passed to ``emit`` as one JSON line (what `segwatch webhooks receive` prints)."""

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if secret is not None and not verify(secret, dict(self.headers), body):
                self._answer(401, b'{"error": "bad or stale signature"}')
                emit(orjson.dumps({"refused": "bad or stale signature",
                                   "from": self.client_address[0]}).decode())  # fmt: skip
                return
            try:
                document = orjson.loads(body)
            except orjson.JSONDecodeError:
                self._answer(400, b'{"error": "not JSON"}')
                return
            incident = _incident(document)
            page = document.get("segwatch", {}).get("page", {})
            emit(orjson.dumps({
                "verified": secret is not None, "action": page.get("action"),
                "delivery": page.get("id"), "severity": incident.get("severity"),
                "incident": incident.get("id"), "title": incident.get("title"),
                "path": " -> ".join(incident.get("path", [])), "state": incident.get("state"),
            }).decode())  # fmt: skip
            self._answer(200, b'{"ok": true}')

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass  # the emitted lines are the log

    return Receiver
