"""Webhook sinks against a real local HTTP server: incident pages, signatures,
formats, retries, the circuit breaker, rate limits, and secrets that never print."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from detector.analyze import Analysis
from detector.detect import DetectorSettings, Engine, load_rules
from streams.webhooks import Refused, RetryLater, WebhookSink, WebhookTarget, verify

from .detect.conftest import MONDAY, RULES, event, example

SECRET = "s3cr3t-hmac-key"


class Receiver(http.server.ThreadingHTTPServer):
    """Records requests; answers with the next status in ``plan`` (then 200)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.plan: list[int] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        server: Receiver = self.server  # type: ignore[assignment]
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server.requests.append((dict(self.headers), body))
        status = server.plan.pop(0) if server.plan else 200
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def alert() -> dict[str, Any]:
    """An incident document: a restricted zone sending to the Internet."""
    model = example("retail_store.yaml")
    run = Analysis(model, Engine(model, DetectorSettings(), load_rules(RULES)))
    for i in range(3):
        run.process(event("10.50.30.5", "198.51.100.7", 443, MONDAY + i, sport=40000 + i), "f:1")
    run.finish()
    (incident,) = run.incident_documents()
    return incident


def sink(receiver: Receiver, kind: str = "json", **options: Any) -> WebhookSink:
    target = WebhookTarget(
        name="t", kind=kind, url=receiver.url, secret=SECRET if kind != "slack" else None, **options
    )  # type: ignore[arg-type]
    return WebhookSink(target, sleep=lambda _s: None)


def test_signed_json_verifies_and_rejects_tampering_and_replay(
    receiver: Receiver, alert: dict[str, Any]
) -> None:
    assert sink(receiver).deliver(alert, "trigger", "opened", "abc-1-trigger") is True
    ((headers, body),) = receiver.requests
    sent = json.loads(body)
    assert sent["segwatch"]["incident"] == alert["segwatch"]["incident"]  # the whole incident
    assert sent["segwatch"]["page"] == {"action": "trigger", "why": "opened", "id": "abc-1-trigger"}
    assert headers["X-Segwatch-Delivery"] == "abc-1-trigger"
    assert verify(SECRET, headers, body)
    assert not verify(SECRET, headers, body.replace(b"restricted", b"relaxed"))
    assert not verify("other-key", headers, body)
    assert not verify(SECRET, headers, body, now=int(headers["X-Segwatch-Timestamp"]) + 301)


def test_slack_and_pagerduty_formats(receiver: Receiver, alert: dict[str, Any]) -> None:
    assert sink(receiver, "slack").deliver(alert) is True
    assert sink(receiver, "slack").deliver(alert, action="update") is False  # one per incident
    sink(receiver, "pagerduty").deliver(alert)
    sink(receiver, "pagerduty").deliver(alert, action="update")
    sink(receiver, "pagerduty").deliver(alert, action="resolve")
    slack, trigger, update, resolve = (json.loads(b) for _, b in receiver.requests)
    incident = alert["segwatch"]["incident"]
    assert incident["severity"] == "high"  # out of a restricted zone: no boundary crossed
    assert slack["blocks"][0]["text"]["text"] == f"[HIGH] {incident['title']}"
    assert "db → internet" in slack["blocks"][1]["text"]["text"]
    assert incident["id"] in slack["blocks"][2]["elements"][0]["text"]
    assert trigger["event_action"] == "trigger" and trigger["dedup_key"] == incident["id"]
    assert trigger["routing_key"] == SECRET and trigger["payload"]["severity"] == "error"
    assert trigger["payload"]["summary"] == incident["summary"]
    assert trigger["payload"]["custom_details"]["path"] == ["db", "internet"]
    assert update["event_action"] == "trigger" and update["dedup_key"] == incident["id"]
    assert resolve == {
        "routing_key": SECRET,
        "event_action": "resolve",
        "dedup_key": incident["id"],
    }


def test_a_failing_receiver_is_retried_until_it_answers(
    receiver: Receiver, alert: dict[str, Any]
) -> None:
    receiver.plan = [500, 503, 429]
    s = sink(receiver)
    assert s.deliver(alert) is True
    assert len(receiver.requests) == 4 and s.failed_attempts == 3 and s.sent == 1
    assert all(verify(SECRET, h, b) for h, b in receiver.requests)


def test_the_circuit_opens_and_the_alert_is_kept_not_dropped(
    receiver: Receiver, alert: dict[str, Any]
) -> None:
    receiver.plan = [500] * 50
    s = sink(receiver, max_attempts=2, breaker_failures=2, breaker_cooldown=60)
    for _ in range(2):
        with pytest.raises(RetryLater, match="HTTP 500 after 2 attempt"):
            s.deliver(alert)
    before = len(receiver.requests)
    with pytest.raises(RetryLater, match="circuit open"):
        s.deliver(alert)
    assert len(receiver.requests) == before  # no request while the circuit is open
    s.breaker.open_until = 0  # the cooldown has passed
    receiver.plan = []
    assert s.deliver(alert) is True


def test_a_refusal_is_not_retried(receiver: Receiver, alert: dict[str, Any]) -> None:
    receiver.plan = [400]
    with pytest.raises(Refused, match="refused the page: HTTP 400"):
        sink(receiver).deliver(alert)
    assert len(receiver.requests) == 1


def test_rate_limit_and_severity_filter(receiver: Receiver, alert: dict[str, Any]) -> None:
    waits: list[float] = []
    s = sink(receiver, rate_per_second=2)
    s.sleep = waits.append
    for _ in range(5):
        s.deliver(alert)
    assert len(waits) >= 2 and all(w > 0 for w in waits)
    quiet = sink(receiver, min_severity="critical")
    info = json.loads(json.dumps(alert))
    info["segwatch"]["incident"]["severity"] = "info"
    assert quiet.deliver(info) is False


def test_secrets_come_from_a_file_and_never_print(tmp_path: Any) -> None:
    path = tmp_path / "key"
    path.write_text(SECRET + "\n")
    target = WebhookTarget(
        name="pd", kind="pagerduty", url="https://events.pagerduty.com/v2/enqueue", secret_file=path
    )
    assert target.secret_value() == SECRET
    inline = WebhookTarget(name="j", kind="json", url="http://x", secret=SECRET)
    assert SECRET not in repr(inline) and SECRET not in inline.model_dump_json()
    with pytest.raises(ValueError, match="needs an HMAC secret"):
        WebhookTarget(name="j", kind="json", url="http://x")


def test_the_receive_command_prints_verified_alerts_and_refuses_bad_signatures(
    alert: dict[str, Any],
) -> None:
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    receive = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "webhooks", "receive", "--port", str(port)],
        env={**os.environ, "SEGWATCH_RECEIVER_SECRET": SECRET},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        target = WebhookTarget(
            name="r", kind="json", url=f"http://127.0.0.1:{port}/", secret=SECRET
        )
        assert WebhookSink(target).deliver(alert, "trigger", "opened", "d-1")  # signed
        forged = httpx.post(f"http://127.0.0.1:{port}/", content=json.dumps(alert),
                            headers={"X-Segwatch-Timestamp": str(int(time.time())),
                                     "X-Segwatch-Signature": "v1=00"})  # fmt: skip
        assert forged.status_code == 401
    finally:
        receive.terminate()
        out, err = receive.communicate(timeout=20)
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["verified"] is True and first["action"] == "trigger"
    assert first["incident"] == alert["segwatch"]["incident"]["id"] and first["delivery"] == "d-1"
    assert first["severity"] == alert["segwatch"]["incident"]["severity"]
    assert second["refused"] == "bad or stale signature"
    assert "signatures checked" in err and SECRET not in out + err
