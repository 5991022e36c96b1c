"""On-call webhooks: signed JSON, Slack incoming webhooks, PagerDuty Events API v2.

Delivery retries with exponential backoff and full jitter on 429, 5xx and
connection errors, limits its rate per target (token bucket), and opens a
circuit per target after repeated failures. An alert is never dropped: when a
target cannot take it now, :class:`RetryLater` says when to try again, and the
caller (the alerts consumer) keeps the alert and its offset until then.

**Signed JSON.** The body is the alert document. Headers:
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
        severity = document.get("segwatch", {}).get("alert", {}).get("severity", "medium")
        return _SEVERITIES.index(severity) >= _SEVERITIES.index(self.min_severity)


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


def slack_body(document: dict[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message for an alert."""
    alert = document["segwatch"]["alert"]
    seg = document.get("segmentation", {})
    reasons = "\n".join(f"• {r}" for r in alert["reasons"][:5])
    title = f"[{alert['severity'].upper()}] {document['rule']['name']}"
    return {
        "text": f"{title}: {seg.get('source_zone')} → {seg.get('destination_zone')}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": (
                f"*{seg.get('source_zone')} → {seg.get('destination_zone')}*  risk "
                f"{document['event']['risk_score']}, {alert['count']} event(s) since "
                f"{alert['first_seen']}\n{reasons}")}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": (
                f"rule `{document['rule']['id']}` · fingerprint `{alert['fingerprint']}`"
                + (f" · <{document['rule']['reference']}|runbook>"
                   if document["rule"].get("reference") else ""))}]},
        ],
    }  # fmt: skip


def pagerduty_body(
    document: dict[str, Any], routing_key: str, action: Literal["trigger", "resolve"] = "trigger"
) -> dict[str, Any]:
    """A PagerDuty Events API v2 event; the dedup key is the alert's fingerprint."""
    alert = document["segwatch"]["alert"]
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": alert["fingerprint"],
    }
    if action == "trigger":
        seg = document.get("segmentation", {})
        body["payload"] = {
            "summary": f"{document['rule']['name']}: {seg.get('source_zone')} -> "
                       f"{seg.get('destination_zone')}"[:1024],
            "source": "segwatch",
            "severity": _PD_SEVERITY[alert["severity"]],
            "timestamp": alert["last_seen"],
            "component": str(seg.get("destination_zone")),
            "class": document["rule"]["id"],
            "custom_details": {"reasons": alert["reasons"], "count": alert["count"],
                               "risk_score": document["event"]["risk_score"],
                               "sample_event_ids": alert["sample_event_ids"]},
        }  # fmt: skip
        if document["rule"].get("reference"):
            body["links"] = [{"href": document["rule"]["reference"], "text": "runbook"}]
    return body


class Refused(Exception):
    """The target answered 4xx (not 429): it will not take this alert."""

    def __init__(self, target: str, reason: str) -> None:
        self.target, self.reason = target, reason
        super().__init__(f"webhook {target} refused the alert: {reason}")


class RetryLater(Exception):
    """The target cannot take the alert now; try again after ``at`` (epoch seconds)."""

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
    """Delivers alert documents to one target."""

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

    def encode(self, document: dict[str, Any], action: Literal["trigger", "resolve"] = "trigger"
               ) -> tuple[bytes, dict[str, str]]:  # fmt: skip
        kind = self.target.kind
        headers = {"Content-Type": "application/json", "User-Agent": "segwatch"}
        if kind == "slack":
            return orjson.dumps(slack_body(document)), headers
        if kind == "pagerduty":
            return orjson.dumps(
                pagerduty_body(document, self.target.secret_value(), action)
            ), headers
        return orjson.dumps(document), headers  # json: signed per attempt, fresh timestamp

    def deliver(self, document: dict[str, Any],
                action: Literal["trigger", "resolve"] = "trigger") -> bool:  # fmt: skip
        """Send one alert; True when the target accepted it, False when it does not want it
        (below ``min_severity``).

        :raises RetryLater: the circuit is open, or every attempt failed.
        :raises Refused: the target answered 4xx (not 429).
        """
        if not self.target.wants(document):
            return False
        now = self.clock()
        if self.breaker.open_until > now:
            raise RetryLater(self.target.name, time.time() + self.breaker.open_until - now,
                             "circuit open after repeated failures")  # fmt: skip
        body, headers = self.encode(document, action)
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
    """A request handler that takes alerts as a signed-JSON target sends them: with a
    secret, an unsigned, mis-signed or stale request gets 401; each accepted alert is
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
            alert = document.get("segwatch", {}).get("alert", {})
            seg = document.get("segmentation", {})
            emit(orjson.dumps({
                "verified": secret is not None, "severity": alert.get("severity"),
                "rule": document.get("rule", {}).get("name"), "count": alert.get("count"),
                "zones": f"{seg.get('source_zone')} -> {seg.get('destination_zone')}",
                "fingerprint": alert.get("fingerprint"),
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
