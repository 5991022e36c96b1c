"""Webhook sinks against a real local HTTP server: incident pages, signatures,
formats, the retry policy (what is retried, how long it waits, that it never gives
up until the worker stops), rate limits, and secrets that never print."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from detector.analyze import Analysis
from detector.detect import DetectorSettings, Engine, load_rules
from streams import webhooks
from streams.metrics import METRICS
from streams.retry import RetryPolicy, RetrySettings, Stopped, Waiting
from streams.sinks import Item, deliver, make_sink
from streams.sinks.http import WebhookSink
from streams.webhooks import WebhookTarget, sign, verify

from .detect.conftest import MONDAY, RULES, event, example

SECRET = "s3cr3t-hmac-key"


class Receiver(http.server.ThreadingHTTPServer):
    """Records requests; answers with the next status in ``plan`` (then 200)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.plan: list[int | tuple[int, dict[str, str]]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        server: Receiver = self.server  # type: ignore[assignment]
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server.requests.append((dict(self.headers), body))
        planned = server.plan.pop(0) if server.plan else 200
        status, headers = planned if isinstance(planned, tuple) else (planned, {})
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
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
    made = make_sink(kind, target, sleep=lambda _s: None)
    assert isinstance(made, WebhookSink)
    return made


def page(doc: dict[str, Any], action: str = "trigger", why: str = "opened",
         delivery: str = "abc-1-trigger") -> Item:  # fmt: skip
    return Item(delivery, {"incident": "abc", "action": action, "why": why, "doc": doc})


def policy(waits: list[float] | None = None) -> RetryPolicy:
    """The worker's retry policy, its waits recorded instead of slept."""
    return RetryPolicy(RetrySettings(), sleep=(waits if waits is not None else []).append)


def send(s: WebhookSink, *items: Item, waits: list[float] | None = None
         ) -> tuple[list[tuple[Item, str]], int]:  # fmt: skip
    return deliver(s, list(items), policy(waits))


def test_signed_json_verifies_and_rejects_tampering_and_replay(
    receiver: Receiver, alert: dict[str, Any]
) -> None:
    assert send(sink(receiver), page(alert)) == ([], 0)
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
    assert send(sink(receiver, "slack"), page(alert)) == ([], 0)
    assert send(sink(receiver, "slack"), page(alert, "update")) == ([], 1)  # one per incident
    for action in ("trigger", "update", "resolve"):
        send(sink(receiver, "pagerduty"), page(alert, action))
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
    command = incident["quarantine"]["command"]  # the attacker's containment, not applied
    assert "--host 10.50.30.5" in command
    assert trigger["payload"]["custom_details"]["quarantine"] == command
    assert f"`{command}`" in slack["blocks"][1]["text"]["text"]
    assert update["event_action"] == "trigger" and update["dedup_key"] == incident["id"]
    assert resolve == {
        "routing_key": SECRET,
        "event_action": "resolve",
        "dedup_key": incident["id"],
    }


def _retries(name: str) -> float:
    return METRICS.retries.labels(name)._value.get()  # type: ignore[attr-defined,no-any-return]


def test_a_failing_receiver_is_retried_until_it_answers_each_try_counted(
    receiver: Receiver, alert: dict[str, Any]
) -> None:
    receiver.plan = [500, 503, 429, 408]
    before = _retries("t")
    waits: list[float] = []
    s = sink(receiver)
    assert send(s, page(alert), waits=waits) == ([], 0)
    assert len(receiver.requests) == 5 and s.sent == 1 and len(waits) == 4
    assert _retries("t") == before + 4
    assert all(verify(SECRET, h, b) for h, b in receiver.requests)  # signed afresh each time


def test_the_wait_grows_with_full_jitter_up_to_the_ceiling_and_honours_retry_after(
    receiver: Receiver, alert: dict[str, Any]
) -> None:
    receiver.plan = [500] * 12
    waits: list[float] = []
    send(sink(receiver), page(alert), waits=waits)
    assert len(waits) == 12 and all(0 <= w <= 30 for w in waits)
    assert max(waits[6:]) > max(waits[:2])  # exponential, not flat
    receiver.plan = [(429, {"Retry-After": "120"})]
    waits.clear()
    send(sink(receiver), page(alert), waits=waits)
    assert waits and waits[0] >= 120  # longer than the backoff: the server said so


def test_a_batch_is_delivered_in_order_each_page_once_across_a_failure(
    receiver: Receiver, alert: dict[str, Any]
) -> None:
    receiver.plan = [200, 503, 503, 200, 200]
    items = [page(alert, delivery=f"d-{i}") for i in range(3)]
    assert send(sink(receiver), *items) == ([], 0)
    taken = [h["X-Segwatch-Delivery"] for h, _ in receiver.requests]
    assert taken == ["d-0", "d-1", "d-1", "d-1", "d-2"]  # d-0 is not sent again


def test_a_refusal_is_not_retried_and_comes_back_with_the_reason(
    receiver: Receiver, alert: dict[str, Any]
) -> None:
    receiver.plan = [400, 200]
    refused, _ = send(sink(receiver), page(alert, delivery="bad"), page(alert, delivery="good"))
    ((item, why),) = refused
    assert item.id == "bad" and "refused the page: HTTP 400" in why
    assert len(receiver.requests) == 2


def test_a_target_that_never_answers_is_retried_until_the_worker_stops(
    alert: dict[str, Any],
) -> None:
    target = WebhookTarget(name="gone", kind="json", url="http://127.0.0.1:9/", secret=SECRET,
                           timeout=0.2)  # fmt: skip
    stop = threading.Event()
    tries: list[float] = []

    def sleep(seconds: float) -> None:
        tries.append(seconds)
        if len(tries) == 5:
            stop.set()

    waiting = Waiting()
    with pytest.raises(Stopped, match="waiting for webhook gone"):
        deliver(make_sink("json", target), [page(alert)],
                RetryPolicy(RetrySettings(), stop, sleep), waiting)  # fmt: skip
    assert len(tries) == 5
    report = waiting.report()
    assert report is not None and report["on"] == "webhook gone" and report["retries"] == 5
    assert "ConnectError" in report["reason"]


def test_rate_limit_and_severity_filter(receiver: Receiver, alert: dict[str, Any]) -> None:
    waits: list[float] = []
    s = sink(receiver, rate_per_second=2)
    s.sleep = waits.append
    send(s, *(page(alert, delivery=f"d-{i}") for i in range(5)))
    assert len(waits) >= 2 and all(w > 0 for w in waits)
    quiet = sink(receiver, min_severity="critical")
    assert send(quiet, page(alert)) == ([], 1)  # high: below what it wants


def test_secrets_come_from_a_file_and_never_print_and_empty_ones_are_refused(
    tmp_path: Any,
) -> None:
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
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        WebhookTarget(name="j", kind="json", url="http://x", secret_file=empty)
    with pytest.raises(ValueError, match="the secret is empty"):
        WebhookTarget(name="j", kind="json", url="http://x", secret=" ")
    with pytest.raises(ValueError, match="cannot be read"):
        WebhookTarget(name="j", kind="json", url="http://x", secret_file=tmp_path / "missing")


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
        assert send(make_sink("json", target), page(alert, delivery="d-1")) == ([], 0)  # signed
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


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, list[str]]]:
    """`segwatch webhooks receive`'s handler with a secret, in this process; idle
    connections time out after half a second."""
    monkeypatch.setattr(webhooks, "RECEIVER_TIMEOUT", 0.5)
    lines: list[str] = []
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), webhooks.receiver(SECRET, lines.append)
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], lines
    server.shutdown()


def _raw_request(port: int, head: bytes, wait: float = 5.0) -> bytes:
    """Send ``head`` (request line and headers, no body) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as conn:
        conn.sendall(head)
        return conn.recv(4096)


def test_the_receiver_refuses_huge_and_unsigned_bodies_before_reading_them(
    served: tuple[int, list[str]],
) -> None:
    port, lines = served
    started = time.monotonic()
    huge = _raw_request(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n")
    assert huge.startswith(b"HTTP/1.0 413")
    # unsigned, with a body announced and never sent: refused at once, not read
    unsigned = _raw_request(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
    assert unsigned.startswith(b"HTTP/1.0 401")
    assert time.monotonic() - started < 2  # neither waited for a body
    nolength = _raw_request(port, b"POST / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert nolength.startswith(b"HTTP/1.0 411")
    assert lines == [lines[0]] and json.loads(lines[0])["refused"] == "bad or stale signature"


def test_the_receiver_closes_an_idle_connection(served: tuple[int, list[str]]) -> None:
    port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"POST / HTTP/1.1\r\n")  # and then nothing
        started = time.monotonic()
        assert conn.recv(4096) == b""  # the server hung up
        assert time.monotonic() - started < 3


def test_the_receiver_takes_only_json_objects(served: tuple[int, list[str]]) -> None:
    port, lines = served
    for body, status in ((b"[1, 2]", 400), (b'{"segwatch": [1]}', 200), (b"nope", 400)):
        headers = {"Content-Type": "application/json", **sign(SECRET, body)}
        answer = httpx.post(f"http://127.0.0.1:{port}/", content=body, headers=headers)
        assert answer.status_code == status, body
    assert json.loads(lines[-1])["incident"] is None  # a page of no incident, printed as such
