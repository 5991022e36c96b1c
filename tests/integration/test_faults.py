"""Dependency faults on the real stack, the worker left alone through each: it never
exits, the stages that do not need the missing dependency go on, and once it is back
everything arrives, exactly once.

- Elasticsearch down when the worker starts: events are scored and incidents paged
  meanwhile; indexing catches up, exactly, once the node is back.
- The broker down when the worker starts: it waits (healthy, not ready, saying so),
  then runs; every event arrives once.
- One webhook target failing for a while: the other target's pages are not delayed;
  the failed one gets every page once when it answers again.

(Elasticsearch SIGKILLed mid-stream and the broker restarted are in test_worker.)
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch

from detector.connection import key_partition
from streams.settings import KafkaSettings
from tests.integration.conftest import events_index
from tests.integration.test_worker import (
    MODEL,
    SECRET,
    _count,
    _env,
    _no_duplicates,
    _segwatch,
    _stack,
    _start_worker,
    _stop,
    _wait_count,
)


class Receiver(http.server.ThreadingHTTPServer):
    """A webhook receiver: answers 500 while ``failing`` is set, else 200; records each
    page it accepted (receipt time, delivery id, action) and how many it failed."""

    def __init__(self, failing: bool = False) -> None:
        self.accepted: list[tuple[float, str, str]] = []
        self.failed = 0
        self.failing = threading.Event()
        if failing:
            self.failing.set()
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def hook(self, name: str) -> dict[str, Any]:
        return {"name": name, "kind": "json", "secret": SECRET,
                "url": f"http://127.0.0.1:{self.server_address[1]}/h"}  # fmt: skip

    def deliveries(self) -> list[str]:
        return [delivery for _, delivery, _ in self.accepted]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        server: Receiver = self.server  # type: ignore[assignment]
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        if len(body) < length:  # the sender was killed mid-request: nothing was delivered
            self.close_connection = True
            return
        if server.failing.is_set():
            server.failed += 1
            self.send_response(500)
        else:
            page = json.loads(body)["segwatch"]["page"]
            server.accepted.append((time.time(), page["id"], page["action"]))
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of the worker's endpoint; (0, {}) while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        return exc.code, dict(json.loads(exc.read()))
    except OSError:
        return 0, {}


def _written_at(kafka: KafkaSettings, topic: str, seconds: float = 20) -> dict[str, float]:
    """Delivery id -> when the incident stage wrote that page to ``topic`` (the Kafka
    timestamp, seconds), for the pages a target with the default ``min_severity`` takes."""
    consumer = Consumer({**kafka.client_config(), "group.id": f"read-{topic}-{time.time()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe([topic])
    out: dict[str, float] = {}
    deadline = time.time() + seconds
    idle = 0
    try:
        while time.time() < deadline and idle < 3:
            message = consumer.poll(1.0)
            if message is None:
                idle += 1 if out else 0
                continue
            if message.error() is None:
                change = json.loads(message.value())
                severity = change["doc"]["segwatch"]["incident"]["severity"]
                if change["action"] != "index" and severity != "info":  # info: not paged
                    out.setdefault(change["id"], message.timestamp()[1] / 1000)
    finally:
        consumer.close()
    return out


def _simulate(tmp_path: Path, env: dict[str, str], attacks: list[str], hours: int = 2) -> Path:
    log = tmp_path / "traffic.log"
    made = _segwatch("simulate", "-m", str(MODEL), "-o", str(log), "--duration", f"{hours}h",
                     "--rate", "2", "--start", "2026-11-25", *(f"--attack={a}" for a in attacks),
                     env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    return log


def _wait(condition: Any, seconds: float, step: float = 0.5) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


@pytest.mark.timeout(600)
def test_a_worker_started_while_elasticsearch_is_down_scores_pages_and_then_indexes_exactly(
    kafka: KafkaSettings, es: Elasticsearch, unique: str, tmp_path: Path
) -> None:
    hook = Receiver()
    env = _env(f"fd{unique}", SEGWATCH_WEBHOOKS=json.dumps([hook.hook("oncall")]),
               SEGWATCH_RETRY__MAX_SECONDS="5")  # fmt: skip
    port = int(env["SEGWATCH_WORKER__WEB_PORT"])
    assert _segwatch("topics", "create", env=env).returncode == 0
    log = _simulate(tmp_path, env, ["port-scan", "dev-to-prod"])
    shipped = len(log.read_text().splitlines())
    stream, incidents = events_index(f"fd{unique}"), f"logs-segwatch.incidents-fd{unique}"
    worker_log = tmp_path / "worker.log"
    _stack("down", "--only", "elasticsearch", "--kill")
    try:
        worker = _start_worker(MODEL, env, worker_log)
        assert _segwatch("ship", "-f", "vpcflow", str(log), env=env).returncode == 0
        # scored and paged without Elasticsearch
        assert _wait(lambda: hook.accepted, 180), worker_log.read_text()[-3000:]
        status, ready = _get(port, "/readyz")
        assert status == 503 and ready["ready"] is False
        stages = ready["stages"]
        for name in ("index", "alerts-index", "incidents-index", "templates"):
            assert stages[name]["state"] == "waiting", stages
            assert "elasticsearch" in stages[name]["waiting"]["on"], stages[name]
        assert stages["normalize"]["state"] == stages["page-oncall"]["state"] == "running"
        assert stages["incidents"]["state"] == "running" and stages["incidents"]["active"]
        assert _get(port, "/healthz") == (200, {"status": "ok"})  # a wait is not a failure
        assert worker.poll() is None
        paged_while_down = len(hook.accepted)
    finally:
        _stack("up", "--only", "elasticsearch")
    back = time.time()
    try:
        got = _wait_count(es, stream, shipped, seconds=240)
        caught_up = time.time() - back
        assert got == shipped, worker_log.read_text()[-3000:]
        _no_duplicates(es, stream)
        paged = {d for _, d, action in hook.accepted if action == "trigger"}
        assert _wait(lambda: _count(es, incidents) >= len(paged), 60)
        assert _wait(lambda: _get(port, "/readyz")[0] == 200, 60), _get(port, "/readyz")
        assert worker.poll() is None  # the same process throughout
        assert len(hook.deliveries()) == len(set(hook.deliveries()))  # each page once
        written = _written_at(kafka, env["SEGWATCH_TOPICS__INCIDENTS"])
        assert set(hook.deliveries()) == set(written)
        latency = [at - written[d] for at, d, _ in hook.accepted]
        print(
            f"Elasticsearch down at start: {shipped} events indexed exactly once "
            f"{caught_up:.0f} s after it came back; {paged_while_down} page(s) while it was "
            f"down, {len(latency)} in all, page latency worst {max(latency):.3f} s"
        )
    finally:
        _stop(worker)
        hook.shutdown()
    text = worker_log.read_text()
    assert "Crashed" not in text and "We experienced a crash" not in text


@pytest.mark.timeout(600)
def test_a_worker_started_while_the_broker_is_down_waits_for_it_then_runs(
    kafka: KafkaSettings, es: Elasticsearch, unique: str, tmp_path: Path
) -> None:
    env = _env(f"fb{unique}", SEGWATCH_RETRY__MAX_SECONDS="3")
    port = int(env["SEGWATCH_WORKER__WEB_PORT"])
    assert _segwatch("topics", "create", env=env).returncode == 0
    log = _simulate(tmp_path, env, ["port-scan"], hours=1)
    shipped = len(log.read_text().splitlines())
    worker_log = tmp_path / "worker.log"
    _stack("down", "--only", "kafka")
    try:
        worker = _start_worker(MODEL, env, worker_log)
        assert _wait(lambda: _get(port, "/healthz")[0] == 200, 60), worker_log.read_text()[-2000:]
        status, ready = _get(port, "/readyz")
        assert status == 503 and ready["stages"]["startup"]["waiting"]["on"] == "kafka"
        time.sleep(5)
        assert worker.poll() is None  # waiting, not gone
    finally:
        _stack("up", "--only", "kafka")
    try:
        assert _segwatch("ship", "-f", "vpcflow", str(log), env=env).returncode == 0
        got = _wait_count(es, events_index(f"fb{unique}"), shipped, seconds=240)
        assert got == shipped, worker_log.read_text()[-3000:]
        _no_duplicates(es, events_index(f"fb{unique}"))
        assert worker.poll() is None
        print(
            f"broker down at start: the worker waited, then {got} of {shipped} events, none twice"
        )
    finally:
        _stop(worker)


@pytest.mark.timeout(600)
def test_a_failing_target_delays_no_other_and_gets_every_page_once_when_back(
    kafka: KafkaSettings, es: Elasticsearch, unique: str, tmp_path: Path
) -> None:
    broken, healthy = Receiver(failing=True), Receiver()
    hooks = [broken.hook("broken"), healthy.hook("healthy")]
    env = _env(f"ft{unique}", SEGWATCH_WEBHOOKS=json.dumps(hooks),
               SEGWATCH_RETRY__MAX_SECONDS="5", SEGWATCH_INCIDENTS__UPDATE_SECONDS="60")  # fmt: skip
    assert _segwatch("topics", "create", env=env).returncode == 0
    log = _simulate(tmp_path, env, ["port-scan", "dev-to-prod", "blocked-series"])
    worker_log = tmp_path / "worker.log"
    worker = _start_worker(MODEL, env, worker_log)
    try:
        assert _segwatch("ship", "-f", "vpcflow", str(log), env=env).returncode == 0
        shipped = len(log.read_text().splitlines())
        assert _wait_count(es, events_index(f"ft{unique}"), shipped, 240) == shipped
        # every page reached the healthy target while the broken one kept failing
        assert _wait(lambda: len(healthy.accepted) >= 3, 60), worker_log.read_text()[-3000:]
        time.sleep(5)  # and nothing more is coming
        written = _written_at(kafka, env["SEGWATCH_TOPICS__INCIDENTS"])
        assert set(healthy.deliveries()) == set(written)
        assert broken.failed >= 2 and not broken.accepted
        latency = [at - written[d] for at, d, _ in healthy.accepted]
        print(
            f"healthy target: {len(latency)} pages while the other failed "
            f"{broken.failed} times; page latency worst {max(latency):.3f} s, "
            f"median {sorted(latency)[len(latency) // 2]:.3f} s"
        )
        assert max(latency) < 2.0  # not held behind the failing target's retries
        broken.failing.clear()
        assert _wait(lambda: set(broken.deliveries()) == set(written), 60), (
            broken.deliveries(),
            written,
        )
        time.sleep(3)
        assert sorted(broken.deliveries()) == sorted(set(broken.deliveries()))  # once each
        order = [d for _, d, _ in healthy.accepted]
        assert broken.deliveries() == order  # in the same order
        assert worker.poll() is None
    finally:
        _stop(worker)
        broken.shutdown()
        healthy.shutdown()


def _normalized(kafka: KafkaSettings, topic: str, seconds: float = 15) -> list[tuple[int, str]]:
    """(partition, model version header) of every message of the normalized topic."""
    consumer = Consumer({**kafka.client_config(), "group.id": f"read-{topic}-{time.time()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe([topic])
    out: list[tuple[int, str]] = []
    deadline, idle = time.time() + seconds, 0
    try:
        while time.time() < deadline and idle < 3:
            message = consumer.poll(1.0)
            if message is None:
                idle += 1 if out else 0
            elif message.error() is None:
                headers = dict(message.headers() or [])
                version = (headers.get("segwatch-model") or b"").decode()
                out.append((message.partition(), version))
    finally:
        consumer.close()
    return out


@pytest.mark.timeout(500)
def test_a_published_model_moves_keying_and_verdicts_together_across_workers(
    kafka: KafkaSettings, es: Elasticsearch, unique: str, tmp_path: Path
) -> None:
    """A normalize-only worker and a worker for the other stages; a published model
    moves 10.0.1.10 from dmz to a new zone allowed into the database: after the switch
    its flows are keyed by the new model (which tells their initiator) and judged by
    it."""
    from tests.integration.test_worker import ROOT, _free_port

    tag = f"fm{unique}"
    env = _env(tag)
    assert _segwatch("topics", "create", env=env).returncode == 0
    old = tmp_path / "old.yaml"
    old.write_text((ROOT / "detector" / "assets" / "models" / "three_tier_vpc.yaml").read_text())
    new = tmp_path / "new.yaml"
    jump = "  - name: jump\n    cidrs: [10.0.1.10/32]\n    within: dmz\n    tags: {sensitivity: medium}\n"
    new.write_text(
        old.read_text().replace("zones:\n", "zones:\n" + jump, 1)
        + "  - {id: jump-to-db, from: jump, to: db, protocol: tcp, ports: [5432]}\n"
    )
    t = int(time.time()) - 600

    def batch(name: str, first: int) -> Path:
        path = tmp_path / name
        path.write_text("".join(f"2 123456789012 eni-1 10.0.1.10 10.0.3.30 {first + i} 5432 6 1 "
                                f"60 {t} {t + 30} ACCEPT OK\n" for i in range(20)))  # fmt: skip
        return path

    ports = [_free_port(), _free_port()]
    roles = ['["normalize"]', '["score","index","alert"]']
    workers = [_start_worker(old, {**env, "SEGWATCH_WORKER__WEB_PORT": str(port),
                                   "SEGWATCH_WORKER__ROLES": role}, tmp_path / f"w{i}.log")
               for i, (port, role) in enumerate(zip(ports, roles, strict=True))]  # fmt: skip
    stream = events_index(f"{tag}")
    try:
        assert _segwatch("ship", "-f", "vpcflow", str(batch("one.log", 40000)),
                         env=env).returncode == 0  # fmt: skip
        assert _wait_count(es, stream, 20) == 20
        published = _segwatch("model", "publish", str(new), env=env)
        assert published.returncode == 0, published.stderr
        version = published.stdout.split(" version ")[1].split()[0]
        for port in ports:  # both workers have read it
            assert _wait(lambda p=port: _get(p, "/readyz")[1].get("published_version")
                         == version, 60)  # fmt: skip
        assert _segwatch("ship", "-f", "vpcflow", str(batch("two.log", 50000)),
                         env=env).returncode == 0  # fmt: skip
        assert _wait_count(es, stream, 40) == 40
        docs = [h["_source"] for h in es.search(index=stream, size=100)["hits"]["hits"]]
        judged = {(d["source"]["port"] >= 50000, d["segmentation"]["source_zone"],
                   d["segmentation"]["verdict"], d["segmentation"]["model_version"] == version)
                  for d in docs}  # fmt: skip
        assert judged == {(False, "dmz", "violation", False), (True, "jump", "allowed", True)}
        topic = env["SEGWATCH_TOPICS__NORMALIZED"]
        keyed = _normalized(kafka, topic)
        admin = AdminClient(kafka.client_config())
        initiator = key_partition(
            b"10.0.1.10", len(admin.list_topics(topic).topics[topic].partitions)
        )
        assert {(p, v == version) for p, v in keyed} == {(initiator, False), (initiator, True)}
        assert all(v for _, v in keyed)  # every message names the model it was keyed by
        assert all(w.poll() is None for w in workers)
    finally:
        for worker in workers:
            _stop(worker)
