"""On-call webhooks: the targets' settings, signing, and a receiver to try them with.

They page per **incident** (``detector.incidents``): a ``trigger`` when it opens,
``update`` on escalation or at most every ``incidents.update_seconds``, ``resolve``
when it resolves. PagerDuty gets all three with ``dedup_key`` = the incident id (an
update is a trigger PagerDuty folds into the open incident); Slack one message per
incident, when it opens; signed JSON every page, carrying the whole incident. The
sinks that send them are in :mod:`streams.sinks` (one module per kind); each
target has its own stage and consumer group, retried by the worker's one retry
policy, so a target that is down holds only its own pages.

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
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = [
    "SEVERITIES",
    "WebhookTarget",
    "incident_of",
    "reached_text",
    "receiver",
    "sign",
    "step_lines",
    "verify",
]

SIGNATURE_HEADER = "X-Segwatch-Signature"
DELIVERY_HEADER = "X-Segwatch-Delivery"
TIMESTAMP_HEADER = "X-Segwatch-Timestamp"
REPLAY_WINDOW = 300
MAX_BODY_BYTES = 4 * 1024 * 1024  # what the receiver reads of a request, at most
RECEIVER_TIMEOUT = 10.0  # seconds a receiver's connection may sit idle
SEVERITIES = ("info", "low", "medium", "high", "critical")


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
    timeout: float = Field(default=10.0, gt=0, description="Seconds per request.")
    rate_per_second: float = Field(default=5.0, gt=0, description="Pages per second, at most.")

    @model_validator(mode="after")
    def _needs_secret(self) -> WebhookTarget:
        needs = self.kind in ("json", "pagerduty")
        what = "an HMAC secret" if self.kind == "json" else "a routing key"
        if needs and self.secret is None and self.secret_file is None:
            raise ValueError(f"webhook {self.name}: {self.kind} needs {what} (secret or "
                             "secret_file)")  # fmt: skip
        if self.secret is not None and not self.secret.get_secret_value().strip():
            raise ValueError(f"webhook {self.name}: the secret is empty")
        if self.secret is None and self.secret_file is not None:
            try:
                text = self.secret_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"webhook {self.name}: secret_file {self.secret_file} cannot "
                                 f"be read ({type(exc).__name__})") from None  # fmt: skip
            if not text:
                raise ValueError(
                    f"webhook {self.name}: secret_file {self.secret_file} is "
                    "empty (an empty key verifies what anyone signs with it)"
                )
        return self

    def secret_value(self) -> str:
        if self.secret is not None:
            return self.secret.get_secret_value()
        assert self.secret_file is not None
        return self.secret_file.read_text(encoding="utf-8").strip()


def incident_of(document: dict[str, Any]) -> dict[str, Any]:
    """The ``segwatch.incident`` part of an incident document ({} if none)."""
    part = document.get("segwatch")
    incident = part.get("incident") if isinstance(part, dict) else None
    return incident if isinstance(incident, dict) else {}


def step_lines(incident: dict[str, Any], limit: int = 5) -> list[str]:
    """The first steps of an incident, a line each."""
    return [f"{s['time'][11:19]} {s['from_ip']} ({s['from_zone']}) -> {s['to_zone']}: "
            f"{s['description']}" for s in incident.get("steps", [])[:limit]]  # fmt: skip


def reached_text(incident: dict[str, Any]) -> str:
    """How far it got, in words."""
    zone, seconds = incident.get("most_sensitive_zone"), incident.get("time_to_most_sensitive_s")
    if zone is None or seconds is None:
        return "reached no zone (every step refused)"
    return f"reached {zone} {seconds / 60:.0f} min after its first step"


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


def _fresh(headers: dict[str, str], now: float | None = None) -> bool:
    """Signature headers present and a timestamp inside the replay window."""
    lowered = {k.lower(): v for k, v in headers.items()}
    stamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
    if SIGNATURE_HEADER.lower() not in lowered or not stamp.isdigit() or len(stamp) > 12:
        return False
    return abs((time.time() if now is None else now) - int(stamp)) <= REPLAY_WINDOW


def receiver(secret: str | None, emit: Callable[[str], None]) -> type[BaseHTTPRequestHandler]:
    """A request handler that takes pages as a signed-JSON target sends them: with a
    secret, an unsigned, mis-signed or stale request gets 401; each accepted page is
    passed to ``emit`` as one JSON line (what `segwatch webhooks receive` prints)."""

    class Receiver(BaseHTTPRequestHandler):
        timeout = RECEIVER_TIMEOUT  # an idle connection is closed, not held forever

        def do_POST(self) -> None:
            length = self.headers.get("Content-Length", "")
            if not length.isdigit():
                self._answer(411, b'{"error": "Content-Length required"}')
                return
            if int(length) > MAX_BODY_BYTES:  # refused before a byte of it is read
                self._answer(413, b'{"error": "body too large"}')
                return
            if secret is not None and not _fresh(dict(self.headers)):
                self._refuse()  # unsigned or stale: refused before the body is read
                return
            body = self.rfile.read(int(length))
            if secret is not None and not verify(secret, dict(self.headers), body):
                self._refuse()
                return
            try:
                document = orjson.loads(body)
            except orjson.JSONDecodeError:
                self._answer(400, b'{"error": "not JSON"}')
                return
            if not isinstance(document, dict):
                self._answer(400, b'{"error": "not a JSON object"}')
                return
            incident = incident_of(document)
            part = document.get("segwatch")
            page = part.get("page") if isinstance(part, dict) else None
            page = page if isinstance(page, dict) else {}
            path = incident.get("path")
            path = " -> ".join(map(str, path)) if isinstance(path, list) else None
            emit(orjson.dumps({
                "verified": secret is not None, "action": page.get("action"),
                "delivery": page.get("id"), "severity": incident.get("severity"),
                "incident": incident.get("id"), "title": incident.get("title"),
                "path": path, "state": incident.get("state"),
            }, default=str).decode())  # fmt: skip
            self._answer(200, b'{"ok": true}')

        def _refuse(self) -> None:
            self._answer(401, b'{"error": "bad or stale signature"}')
            emit(orjson.dumps({"refused": "bad or stale signature",
                               "from": self.client_address[0]}).decode())  # fmt: skip

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass  # the emitted lines are the log

    return Receiver
