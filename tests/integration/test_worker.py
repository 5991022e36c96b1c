"""The worker end to end on the real stack: every family shipped with bad lines among
them -> exactly the good events in Elasticsearch, the bad records in the dead-letter
topic with reasons, alerts in the alerts index, incidents in the incidents index and,
signed, paged once each at a webhook receiver."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

import pytest
from confluent_kafka import Consumer
from elasticsearch import ApiError, Elasticsearch

from detector.connection import key_partition
from streams.metrics import CONTENT_TYPE_LATEST, scrape
from streams.settings import KafkaSettings
from streams.webhooks import verify
from tests.integration.conftest import events_index

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "detector" / "assets" / "models" / "retail_store.yaml"
SECRET = "hook-secret"


class _Hook(http.server.BaseHTTPRequestHandler):
    """A receiver that fails its first ``failures`` requests with 500, then accepts."""

    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    failures: ClassVar[list[int]] = [3]

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        if len(body) < length:  # the sender was killed mid-request: nothing was delivered
            self.close_connection = True
            return
        if _Hook.failures[0] > 0:
            _Hook.failures[0] -= 1
            self.send_response(500)
        else:
            _Hook.received.append((dict(self.headers), body))
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _triggers(received: list[tuple[dict[str, str], bytes]]) -> dict[str, set[str]]:
    """Incident id -> the delivery ids of its trigger pages (a receiver deduplicates on
    them: a delivery repeated after a crash keeps its id)."""
    out: dict[str, set[str]] = {}
    for _, body in received:
        doc = json.loads(body)
        if doc["segwatch"]["page"]["action"] == "trigger":
            out.setdefault(doc["segwatch"]["incident"]["id"], set()).add(
                doc["segwatch"]["page"]["id"]
            )
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tag: str, **extra: str) -> dict[str, str]:
    """Settings for one test's own topics, consumer group, indices and web port."""
    return {
        **os.environ,
        "SEGWATCH_TOPICS__RAW_PREFIX": f"{tag}.raw.",
        "SEGWATCH_TOPICS__NORMALIZED": f"{tag}.normalized",
        "SEGWATCH_TOPICS__EVENTS": f"{tag}.events",
        "SEGWATCH_TOPICS__ALERTS": f"{tag}.alerts",
        "SEGWATCH_TOPICS__INCIDENTS": f"{tag}.incidents",
        "SEGWATCH_TOPICS__DLQ": f"{tag}.dlq",
        "SEGWATCH_TOPICS__MODEL": f"{tag}.model",
        "SEGWATCH_WORKER__APP_ID": f"segwatch-{tag}",
        "SEGWATCH_WORKER__WEB_PORT": str(_free_port()),
        "SEGWATCH_ELASTICSEARCH__NAMESPACE": tag,  # logs-segwatch.<dataset>-<tag>
        **extra,
    }


def _start_worker(model: Path, env: dict[str, str], log: Path,
                  processes: int = 1) -> subprocess.Popen[str]:  # fmt: skip
    """`segwatch worker` (over ``processes``) in the background, its (ECS JSON) log
    lines going to ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker", "-m", str(model), "--loglevel", "info",
         "--processes", str(processes)],
        env=env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM (a graceful stop), then SIGKILL after a minute."""
    process.send_signal(signal.SIGTERM)
    try:
        process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def _segwatch(
    *args: str, env: dict[str, str], timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=input,
    )


def _count_topic(
    kafka: KafkaSettings, topic: str, expected: int, seconds: float = 60
) -> list[dict[str, Any]]:
    consumer = Consumer(
        {**kafka.client_config(), "group.id": f"count-{topic}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    out: list[dict[str, Any]] = []
    deadline = time.time() + seconds
    try:
        while time.time() < deadline and len(out) < expected:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                out.append(json.loads(msg.value()))
        end = time.time() + 3  # and nothing more
        while time.time() < end:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(json.loads(msg.value()))
    finally:
        consumer.close()
    return out


def _wait_count(es: Elasticsearch, index: str, expected: int, seconds: float = 90) -> int:
    deadline = time.time() + seconds
    count = -1
    while time.time() < deadline:
        if es.indices.exists(index=index):
            es.indices.refresh(index=index)
            count = es.count(index=index)["count"]
            if count >= expected:
                time.sleep(3)  # nothing more may come
                es.indices.refresh(index=index)
                return int(es.count(index=index)["count"])
        time.sleep(1)
    return count


@pytest.mark.timeout(400)
def test_end_to_end_exact_counts_dead_letters_alerts_and_webhooks(
    kafka: KafkaSettings, es: Elasticsearch, unique: str, tmp_path: Path
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = _env(
        f"t{unique}",
        SEGWATCH_WEBHOOKS=json.dumps(
            [
                {
                    "name": "oncall",
                    "kind": "json",
                    "secret": SECRET,
                    "url": f"http://127.0.0.1:{server.server_address[1]}/h",
                }
            ]
        ),
    )
    assert _segwatch("topics", "create", env=env).returncode == 0
    good = 0
    files = {}
    for family in ("vpcflow", "calico", "iptables"):
        path = tmp_path / f"{family}.log"
        made = _segwatch(
            "simulate",
            "-m",
            str(MODEL),
            "-o",
            str(path),
            "--family",
            family,
            "--duration",
            "1h",
            "--rate",
            "1",
            "--attack",
            "port-scan",
            "--start",
            "2026-11-25",
            env=env,
        )
        assert made.returncode == 0, made.stderr
        lines = path.read_text().splitlines()
        good += len(lines)
        path.write_text("\n".join([*lines, "not a flow record", "2 1 eni-1 x y"]) + "\n")
        files[family] = path
    worker = _start_worker(MODEL, env, tmp_path / "worker.log")
    try:
        for family, path in files.items():
            shipped = _segwatch("ship", "-f", family, str(path), env=env)
            assert shipped.returncode == 0, shipped.stderr
        # a stranger's message on the internal topic is dead-lettered, not fatal
        stranger = _segwatch("ship", "-f", "vpcflow", "--topic", f"t{unique}.normalized", "-",
                             env=env, input="{not events}\n")  # fmt: skip
        assert stranger.returncode == 0, stranger.stderr
        events = events_index(f"t{unique}")
        got = _wait_count(es, events, good)
        assert got == good, (tmp_path / "worker.log").read_text()[-4000:]
        dead = _count_topic(kafka, f"t{unique}.dlq", 7)
        assert len(dead) == 7
        (odd,) = [d for d in dead if d["stage"] == "score"]
        assert odd["raw"] == "{not events}" and "not a JSON array of events" in odd["reason"]
        dead.remove(odd)
        assert {d["family"] for d in dead} == {"vpcflow", "calico", "iptables"}
        assert all(d["reason"] and d["source"]["topic"].startswith(f"t{unique}.raw.") for d in dead)
        alerts = f"logs-segwatch.alerts-t{unique}"
        assert _wait_count(es, alerts, 1) >= 1
        hits = es.search(index=alerts, size=50)["hits"]["hits"]
        assert any(h["_source"]["rule"]["id"] == "violation-into-restricted" for h in hits)
        incidents = f"logs-segwatch.incidents-t{unique}"
        assert _wait_count(es, incidents, 1) >= 1
        found = [h["_source"] for h in es.search(index=incidents, size=50)["hits"]["hits"]]
        paged = {d["segwatch"]["incident"]["id"] for d in found
                 if d["segwatch"]["incident"]["severity"] != "info"}  # fmt: skip
        deadline = time.time() + 30
        while time.time() < deadline and len(_triggers(_Hook.received)) < len(paged):
            time.sleep(0.5)
        assert _Hook.failures[0] == 0  # delivered after the receiver's 500s
        assert all(verify(SECRET, headers, body) for headers, body in _Hook.received)
        triggers = _triggers(_Hook.received)
        assert set(triggers) == paged and all(len(ids) == 1 for ids in triggers.values())
        # every alert is the evidence of an incident
        owned = {f for d in found for f in d["segwatch"]["incident"]["alerts"]}
        assert {h["_id"] for h in hits} <= owned
    finally:
        _stop(worker)
        server.shutdown()
    assert worker.returncode is not None
    logged = [line for line in (tmp_path / "worker.log").read_text().splitlines() if line.strip()]
    assert logged and all(json.loads(line)["log.level"] for line in logged)  # ECS JSON


@pytest.mark.timeout(400)
def test_hot_reload_new_flows_get_the_new_verdicts_old_ones_keep_theirs(
    kafka: KafkaSettings, es: Elasticsearch, unique: str, tmp_path: Path
) -> None:
    port = _free_port()
    env = _env(f"r{unique}", SEGWATCH_WORKER__WEB_PORT=str(port))
    assert _segwatch("topics", "create", env=env).returncode == 0
    old = tmp_path / "old.yaml"
    old.write_text((ROOT / "detector" / "assets" / "models" / "three_tier_vpc.yaml").read_text())
    new = tmp_path / "new.yaml"
    new.write_text(
        old.read_text().replace("ports: [5432]", "ports: [5432, 6432]")
        + "  - {id: dmz-to-db-exception, from: dmz, to: db, ports: [5432]}\n"
    )
    t = int(time.time()) - 600

    def batch(name: str, n: int) -> Path:
        path = tmp_path / name
        path.write_text(
            "".join(
                f"2 123456789012 eni-1 10.0.1.10 10.0.3.30 {40000 + i} 5432 6 1 60 "
                f"{t} {t + 30} ACCEPT OK\n"
                for i in range(n)
            )
        )
        return path

    worker = _start_worker(old, env, tmp_path / "worker.log")
    stream = events_index(f"r{unique}")
    try:
        assert (
            _segwatch("ship", "-f", "vpcflow", str(batch("one.log", 20)), env=env).returncode == 0
        )
        assert _wait_count(es, stream, 20) == 20
        before = _readyz(port)
        published = _segwatch("model", "publish", str(new), env=env)
        assert published.returncode == 0, published.stderr
        deadline = time.time() + 60
        while time.time() < deadline and _readyz(port)["published_version"] in (
            None,
            before["model_version"],
        ):
            time.sleep(0.5)
        assert _readyz(port)["published_version"] not in (None, before["model_version"])
        bad = tmp_path / "bad.yaml"
        bad.write_text("apiVersion: segwatch/v1\nmetadata: {name: x}\nzones: []\n")
        refused = _segwatch("model", "publish", str(bad), env=env)
        assert refused.returncode == 2 and "zones" in refused.stderr
        assert (
            _segwatch("ship", "-f", "vpcflow", str(batch("two.log", 20)), env=env).returncode == 0
        )
        assert _wait_count(es, stream, 40) == 40
        docs = [h["_source"] for h in es.search(index=stream, size=100)["hits"]["hits"]]
        first = [
            d
            for d in docs
            if d["source"]["port"] < 40020
            and d["event"]["id"].startswith(f"r{unique}.raw.vpcflow-")
        ]
        verdicts = {
            (d["segmentation"]["model_version"], d["segmentation"]["verdict"]) for d in docs
        }
        assert (before["model_version"], "violation") in verdicts
        assert (_readyz(port)["model_version"], "allowed") in verdicts
        assert len(verdicts) == 2 and first
        names = {sample.name for sample in scrape(port)}
        assert "segwatch_records_in_total" in names and "segwatch_model_info" in names
        # the client's standard collectors, in the exposition format's content type
        assert {"process_cpu_seconds_total", "python_info"} <= names
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST

        def lags() -> list[float]:
            return [
                sample.value
                for sample in scrape(port)
                if sample.name == "segwatch_consumer_lag"
                and sample.labels["topic"] == f"r{unique}.raw.vpcflow"
            ]

        deadline = time.time() + 40  # the lag timer runs every 15 s
        while time.time() < deadline and not lags():
            time.sleep(2)
        found = lags()
        assert found and all(lag == 0 for lag in found), found
    finally:
        _stop(worker)


def _stack(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "local" / "stack.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.timeout(600)
def test_elasticsearch_killed_mid_stream_and_restarted_loses_and_duplicates_nothing(
    kafka: KafkaSettings, es: Elasticsearch, unique: str, tmp_path: Path
) -> None:
    env = _env(f"e{unique}")
    assert _segwatch("topics", "create", env=env).returncode == 0
    logs = []
    for name in ("one", "two"):
        path = tmp_path / f"{name}.log"
        made = _segwatch(
            "simulate",
            "-m",
            str(MODEL),
            "-o",
            str(path),
            "--duration",
            "1h",
            "--rate",
            "2",
            "--start",
            "2026-11-25",
            "--seed",
            str(len(logs) + 3),
            env=env,
        )
        assert made.returncode == 0, made.stderr
        logs.append(path)
    expected = sum(len(p.read_text().splitlines()) for p in logs)
    stream = events_index(f"e{unique}")
    worker = _start_worker(MODEL, env, tmp_path / "worker.log")
    try:
        assert _segwatch("ship", "-f", "vpcflow", str(logs[0]), env=env).returncode == 0
        first = len(logs[0].read_text().splitlines())
        assert _wait_count(es, stream, first) == first
        _stack("down", "--only", "elasticsearch", "--kill")
        try:
            assert _segwatch("ship", "-f", "vpcflow", str(logs[1]), env=env).returncode == 0
            time.sleep(10)  # the indexer keeps retrying while the node is gone
            assert worker.poll() is None
        finally:
            _stack("up", "--only", "elasticsearch")
        got = _wait_count(es, stream, expected, seconds=180)
        assert got == expected, (tmp_path / "worker.log").read_text()[-3000:]
        twice = es.search(
            index=stream,
            size=0,
            aggs={"d": {"terms": {"field": "event.id", "min_doc_count": 2, "size": 10}}},
        )  # exact, unlike cardinality
        assert twice["aggregations"]["d"]["buckets"] == []  # no event written twice
        assert worker.poll() is None  # the same worker, never restarted
        print(f"Elasticsearch SIGKILLed mid-stream: {got} of {expected} events, none twice")
    finally:
        _stop(worker)


@pytest.mark.timeout(300)
def test_demo_runs_the_whole_pipeline_and_stops_on_ctrl_c(es: Elasticsearch, unique: str) -> None:
    port = _free_port()
    env = _env(f"d{unique}", SEGWATCH_WORKER__WEB_PORT=str(port))
    demo = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "demo", "--cycle", "5"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert _wait_count(es, events_index(f"d{unique}"), 1000, seconds=120) >= 1000
    finally:
        demo.send_signal(signal.SIGINT)
        output, _ = demo.communicate(timeout=90)
    assert demo.returncode == 0, output[-2000:]
    assert "cycle 1: shipped" in output  # off a terminal: a line per cycle
    with socket.socket() as probe:  # the demo's worker is gone with it
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_demo_ships_to_a_worker_that_runs_elsewhere(
    es: Elasticsearch, unique: str, tmp_path: Path
) -> None:
    """As in the compose file: the worker is its own service, the demo only ships and
    reports what that worker's metrics say."""
    port = _free_port()
    env = _env(f"e{unique}", SEGWATCH_WORKER__WEB_PORT=str(port))
    assert _segwatch("topics", "create", env=env).returncode == 0
    worker = _start_worker(ROOT / "detector" / "assets" / "models" / "retail_store.yaml", env,
                           tmp_path / "worker.log")  # fmt: skip
    demo = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "demo", "--cycle", "3",
         "--worker-url", f"http://127.0.0.1:{port}"],
        env={**env, "SEGWATCH_WORKER__WEB_PORT": str(_free_port())}, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert _wait_count(es, events_index(f"e{unique}"), 1000, seconds=120) >= 1000
        time.sleep(4)  # another cycle, which reads the worker's counters
    finally:
        demo.send_signal(signal.SIGINT)
        output, _ = demo.communicate(timeout=90)
        alive = worker.poll() is None
        _stop(worker)
    assert demo.returncode == 0, output[-2000:]
    assert alive  # the demo leaves a worker it did not start alone
    indexed = [int(line.split("worker: ")[1].split(" indexed")[0].replace(",", ""))
               for line in output.splitlines() if "worker: " in line]  # fmt: skip
    assert indexed and max(indexed) > 0, output[-2000:]


# -- detector state across restarts, workers and broker restarts ---------------------------

TIERS = ROOT / "detector" / "assets" / "models" / "three_tier_vpc.yaml"
DMZ, APP, DB, DNS, NET = "10.0.1.10", "10.0.2.20", "10.0.3.30", "10.0.0.2", "203.0.113.5"
# learning starts per partition, at the first event it sees: every source zone learns
LEARNED = [(DMZ, APP, 8080, 6), (APP, DB, 5432, 6), (DB, DNS, 53, 17), (NET, DMZ, 443, 6)]
NEW = [  # paths first seen after learning, from every source zone
    (APP, DNS, 53, 17), (DMZ, DNS, 53, 17), (APP, DB, 22, 6), (NET, DMZ, 80, 6), (DB, APP, 9100, 6),
]  # fmt: skip
LATER = [(DMZ, DB, 5432, 6), (NET, APP, 8080, 6)]  # first seen only after the fault
STATE_ENV = {
    "SEGWATCH_DETECTORS__LEARNING_SECONDS": "600",
    "SEGWATCH_WORKER__SNAPSHOT_SECONDS": "1",
    "SEGWATCH_WORKER__SESSION_TIMEOUT_SECONDS": "10",
}
ZONE = {DMZ: "dmz", APP: "app", DB: "db", DNS: "vpc-dns", NET: "internet"}


def _flows(path: Path, paths: list[tuple[str, str, int, int]], start: int, n: int) -> int:
    """``n`` VPC records cycling through ``paths``, one second apart from ``start``."""
    with path.open("w") as out:
        for i in range(n):
            src, dst, port, proto = paths[i % len(paths)]
            t = start + i
            out.write(f"2 123456789012 eni-1 {src} {dst} {40000 + i % 20000} {port} {proto} "
                      f"1 60 {t} {t + 1} ACCEPT OK\n")  # fmt: skip
    return n


def _count(es: Elasticsearch, stream: str) -> int:
    if not es.indices.exists(index=stream):
        return 0
    try:
        es.indices.refresh(index=stream)
        return int(es.count(index=stream)["count"])
    except ApiError as exc:  # a backing index the worker has just made: its shard starting
        if exc.meta.status == 503:
            return 0
        raise


def _new_path_events(es: Elasticsearch, stream: str) -> dict[str, int]:
    """How many events carry each "new path ..." reason."""
    es.indices.refresh(index=stream)
    found = es.search(
        index=stream, size=1000, query={"match_phrase": {"segmentation.reasons": "new path"}}
    )
    counts: dict[str, int] = {}
    for hit in found["hits"]["hits"]:
        for reason in hit["_source"]["segmentation"]["reasons"]:
            if reason.startswith("new path"):
                name = reason.split(" (")[0]
                counts[name] = counts.get(name, 0) + 1
    return counts


def _expected_paths(paths: list[tuple[str, str, int, int]]) -> dict[str, int]:
    return {f"new path {ZONE[s]} -> {ZONE[d]} {'tcp' if p == 6 else 'udp'}/{port}": 1
            for s, d, port, p in paths}  # fmt: skip


def _no_duplicates(es: Elasticsearch, stream: str) -> None:
    twice = es.search(index=stream, size=0, aggs={
        "d": {"terms": {"field": "event.id", "min_doc_count": 2, "size": 10}}})  # fmt: skip
    assert twice["aggregations"]["d"]["buckets"] == []


def _learn_then_open(
    tmp_path: Path, env: dict[str, str], start: int, es: Elasticsearch, stream: str
) -> int:
    """Ship the learning period, then, once it is scored and indexed, the first use of
    every path in NEW. (Shipped together, the opening records may be read first from
    their raw partition: Kafka orders records within a partition only.)"""
    learning = _flows(tmp_path / "learn.log", LEARNED, start, 700)
    assert _segwatch("ship", "-f", "vpcflow", str(tmp_path / "learn.log"), env=env).returncode == 0
    assert _wait_count(es, stream, learning) == learning
    opened = _flows(tmp_path / "open.log", NEW, start + 700, len(NEW))
    assert _segwatch("ship", "-f", "vpcflow", str(tmp_path / "open.log"), env=env).returncode == 0
    return learning + opened


def _reopen(tmp_path: Path, env: dict[str, str], start: int) -> int:
    """Ship the paths in NEW once more, after a worker with a fresh memory would have
    learnt for as long as learning lasts (so it would call them new), then LATER."""
    n = _flows(tmp_path / "warm.log", LEARNED, start, 700)
    n += _flows(tmp_path / "reopen.log", NEW + LATER, start + 700, 50)
    for name in ("warm.log", "reopen.log"):
        assert _segwatch("ship", "-f", "vpcflow", str(tmp_path / name), env=env).returncode == 0
    return n


@pytest.mark.timeout(500)
@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_worker_killed_mid_stream_recovers_its_state(
    es: Elasticsearch, unique: str, tmp_path: Path, store: str
) -> None:
    env = _env(f"k{unique}", **STATE_ENV, SEGWATCH_WORKER__STORE=store,
               SEGWATCH_WORKER__DATA_DIR=str(tmp_path / "data"))  # fmt: skip
    assert _segwatch("topics", "create", env=env).returncode == 0
    stream = events_index(f"k{unique}")
    start = int(time.time()) - 3 * 3600
    worker = _start_worker(TIERS, env, tmp_path / "worker-1.log")
    try:
        shipped = _learn_then_open(tmp_path, env, start, es, stream)
        assert _wait_count(es, stream, shipped) == shipped
        assert _new_path_events(es, stream) == _expected_paths(NEW)
        # the learned paths again, many times; killed while they are being processed
        shipped += _flows(tmp_path / "again.log", LEARNED, start + 800, 20_000)
        assert (
            _segwatch("ship", "-f", "vpcflow", str(tmp_path / "again.log"), env=env).returncode == 0
        )
        deadline = time.time() + 120
        while time.time() < deadline and _count(es, stream) < shipped - 15_000:
            time.sleep(0.2)
        worker.kill()  # SIGKILL: no flush, no commit, no goodbye
        worker.wait()
        assert _count(es, stream) < shipped  # it really was mid-stream
    finally:
        if worker.poll() is None:
            worker.kill()
    worker = _start_worker(TIERS, env, tmp_path / "worker-2.log")
    try:
        shipped += _reopen(tmp_path, env, start + 30_000)
        got = _wait_count(es, stream, shipped, seconds=240)
        assert got == shipped, (tmp_path / "worker-2.log").read_text()[-3000:]
        _no_duplicates(es, stream)
        # no path is new twice, and the paths first seen after the restart still are new
        assert _new_path_events(es, stream) == _expected_paths(NEW + LATER)
    finally:
        _stop(worker)


def _readyz(port: int) -> dict[str, Any]:
    import urllib.error

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:  # not ready (503): a stage waits, it says on what
        return dict(json.loads(exc.read()))
    except OSError:
        return {}  # not up yet


def _records_in(port: int) -> dict[str, float]:
    """A worker's segwatch_records_in_total, by topic."""
    return {
        sample.labels["topic"]: sample.value
        for sample in scrape(port)
        if sample.name == "segwatch_records_in_total"
    }


def _where_stuck(env: dict[str, str], log: Path) -> str:
    """What a worker that fell short says about itself: records in and lag per stage's
    topic, its readiness (each stage's state and wait), and its log's last lines."""
    port = int(env["SEGWATCH_WORKER__WEB_PORT"])
    counts = {f"{s.name}{sorted(s.labels.items())}": s.value for s in scrape(port)
              if s.name in ("segwatch_records_in_total", "segwatch_consumer_lag")}  # fmt: skip
    return f"{counts}\n/readyz: {_readyz(port)}\n{log.read_text()[-3000:]}"


@pytest.mark.timeout(500)
def test_two_workers_share_the_partitions_and_the_state(
    es: Elasticsearch, unique: str, tmp_path: Path
) -> None:
    tag = f"w{unique}"
    env = _env(tag, **STATE_ENV)
    assert _segwatch("topics", "create", env=env).returncode == 0
    stream = events_index(f"{tag}")
    start = int(time.time()) - 3 * 3600
    ports = [_free_port(), _free_port()]
    workers = [_start_worker(TIERS, {**env, "SEGWATCH_WORKER__WEB_PORT": str(ports[0])},
                             tmp_path / "worker-1.log")]  # fmt: skip
    try:
        shipped = _learn_then_open(tmp_path, env, start, es, stream)
        assert _wait_count(es, stream, shipped) == shipped
        # a second worker joins: partitions (and their state) move to it
        workers.append(_start_worker(TIERS, {**env, "SEGWATCH_WORKER__WEB_PORT": str(ports[1])},
                                     tmp_path / "worker-2.log"))  # fmt: skip
        deadline = time.time() + 90
        while time.time() < deadline and not _readyz(ports[1]).get("partitions"):
            time.sleep(1)
        shipped += _reopen(tmp_path, env, start + 30_000)
        got = _wait_count(es, stream, shipped, seconds=240)
        assert got == shipped, (tmp_path / "worker-2.log").read_text()[-3000:]
        _no_duplicates(es, stream)
        assert _new_path_events(es, stream) == _expected_paths(NEW + LATER)
        scored = [_records_in(port).get(f"{tag}.normalized", 0) for port in ports]
        assert all(n > 0 for n in scored), scored  # both workers scored events
    finally:
        for worker in workers:
            _stop(worker)


def _host_of(partitions: set[int], total: int, taken: set[str]) -> str:
    """A DMZ address the normalize stage keys to one of ``partitions`` (of ``total``)."""
    for last in range(11, 255):
        ip = f"10.0.1.{last}"
        if ip not in taken and key_partition(ip.encode(), total) in partitions:
            return ip
    raise AssertionError(f"no DMZ address keyed to {partitions}")


@pytest.mark.timeout(400)
def test_a_path_one_worker_learnt_is_not_new_to_another(
    es: Elasticsearch, unique: str, tmp_path: Path
) -> None:
    """Keyed by initiator, two hosts of one zone are scored by two workers: the path one
    of them used while learning is known to the other worker (read from the
    detector-state changelog) when the other host opens it; a path neither saw is new."""
    tag = f"x{unique}"
    env = _env(tag, **STATE_ENV)
    assert _segwatch("topics", "create", env=env).returncode == 0
    stream = events_index(tag)
    start = int(time.time()) - 3 * 3600
    ports = [_free_port(), _free_port()]
    workers = [_start_worker(TIERS, {**env, "SEGWATCH_WORKER__WEB_PORT": str(port)},
                             tmp_path / f"worker-{i}.log") for i, port in enumerate(ports)]  # fmt: skip
    try:
        deadline = time.time() + 120
        owned: list[set[int]] = [set(), set()]
        while time.time() < deadline:
            owned = [set(_readyz(port).get("partitions") or ()) for port in ports]
            if all(owned) and not owned[0] & owned[1]:
                break
            time.sleep(1)
        assert all(owned) and not owned[0] & owned[1], owned
        total = len(owned[0] | owned[1])
        first = _host_of(owned[0], total, set())
        second = _host_of(owned[1], total, {first})
        # learning: only the first host uses dmz -> app tcp/8080; the second one's worker
        # learns too (from its DNS lookups)
        learning = _flows(tmp_path / "learn.log", [(first, APP, 8080, 6), (second, DNS, 53, 17),
                                                   (APP, DB, 5432, 6)], start, 700)  # fmt: skip
        assert _segwatch("ship", "-f", "vpcflow", str(tmp_path / "learn.log"),
                         env=env).returncode == 0  # fmt: skip
        assert _wait_count(es, stream, learning) == learning
        shipped = learning + _flows(tmp_path / "open.log", [(second, APP, 8080, 6),
                                                            (second, DB, 5432, 6)],
                                    start + 700, 10)  # fmt: skip
        assert _segwatch("ship", "-f", "vpcflow", str(tmp_path / "open.log"),
                         env=env).returncode == 0  # fmt: skip
        assert _wait_count(es, stream, shipped) == shipped
        assert _new_path_events(es, stream) == {"new path dmz -> db tcp/5432": 1}
        assert [set(_readyz(port).get("partitions") or ()) for port in ports] == owned
    finally:
        for worker in workers:
            _stop(worker)


@pytest.mark.timeout(400)
def test_stages_split_over_two_processes_give_the_same_result(
    es: Elasticsearch, unique: str, tmp_path: Path
) -> None:
    """The layout the README recommends on one host: normalize in a process of its own
    (worker.roles), score, index and alert in another."""
    tag = f"r{unique}"
    env = _env(tag, **STATE_ENV)
    assert _segwatch("topics", "create", env=env).returncode == 0
    stream = events_index(f"{tag}")
    ports = [_free_port(), _free_port()]
    roles = ['["normalize"]', '["score","index","alert"]']
    workers = [
        _start_worker(TIERS, {**env, "SEGWATCH_WORKER__WEB_PORT": str(port),
                              "SEGWATCH_WORKER__ROLES": role}, tmp_path / f"worker-{i}.log")
        for i, (port, role) in enumerate(zip(ports, roles, strict=True))
    ]  # fmt: skip
    try:
        shipped = _learn_then_open(tmp_path, env, int(time.time()) - 3 * 3600, es, stream)
        got = _wait_count(es, stream, shipped)
        assert got == shipped, (tmp_path / "worker-1.log").read_text()[-3000:]
        _no_duplicates(es, stream)
        assert _new_path_events(es, stream) == _expected_paths(NEW)
        normalizer, scorer = (_records_in(port) for port in ports)
        assert normalizer.get(f"{tag}.raw.vpcflow") == shipped  # every record, once
        assert f"{tag}.normalized" not in normalizer  # it does not score ...
        assert scorer.get(f"{tag}.normalized") == shipped  # ... the other one does
        assert f"{tag}.raw.vpcflow" not in scorer
    finally:
        for worker in workers:
            _stop(worker)


@pytest.mark.timeout(500)
def test_a_worker_group_runs_the_stages_over_processes_and_starts_a_dead_one_again(
    es: Elasticsearch, unique: str, tmp_path: Path
) -> None:
    """`segwatch worker --processes 2`: normalize in one process, the rest in the other;
    the group's endpoints cover both; a child SIGKILLed is started again by the group,
    and nothing is lost, repeated or new twice."""
    tag = f"g{unique}"
    port = _free_port()
    env = _env(tag, **STATE_ENV, SEGWATCH_WORKER__WEB_PORT=str(port))
    assert _segwatch("topics", "create", env=env).returncode == 0
    stream = events_index(tag)
    start = int(time.time()) - 3 * 3600
    log = tmp_path / "group.log"
    group = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker", "-m", str(TIERS), "--processes", "2",
         "--loglevel", "info"],
        env=env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        shipped = _learn_then_open(tmp_path, env, start, es, stream)
        got = _wait_count(es, stream, shipped)
        assert got == shipped, log.read_text()[-3000:]
        ready = _readyz(port)
        assert ready["ready"] is True, ready
        assert [p["roles"] for p in ready["processes"]] == [
            ["normalize"],
            ["score", "index", "alert"],
        ]
        by_process: dict[tuple[str, str], float] = {
            (sample.labels["worker_process"], sample.labels["topic"]): sample.value
            for sample in scrape(port) if sample.name == "segwatch_records_in_total"
        }  # fmt: skip
        assert by_process[("0", f"{tag}.raw.vpcflow")] == shipped  # normalized once, there
        assert by_process[("1", f"{tag}.normalized")] == shipped  # scored once, there
        assert ("0", f"{tag}.normalized") not in by_process
        os.kill(ready["processes"][1]["pid"], signal.SIGKILL)  # the scorer dies
        deadline = time.time() + 120
        while time.time() < deadline:
            now = _readyz(port)
            if now.get("ready") and now["processes"][1]["restarts"] == 1:
                break
            time.sleep(1)
        assert now["processes"][1]["restarts"] == 1 and now["ready"], now
        assert now["processes"][0]["restarts"] == 0
        shipped += _reopen(tmp_path, env, start + 30_000)
        got = _wait_count(es, stream, shipped, seconds=240)
        assert got == shipped, log.read_text()[-3000:]
        _no_duplicates(es, stream)
        assert _new_path_events(es, stream) == _expected_paths(NEW + LATER)
        assert group.poll() is None
    finally:
        group.send_signal(signal.SIGTERM)
        try:
            status = group.wait(timeout=120)
        except subprocess.TimeoutExpired:
            group.kill()
            raise
    assert status == 0, log.read_text()[-3000:]  # every child drained on SIGTERM


@pytest.mark.timeout(500)
@pytest.mark.parametrize("processes", [1, 2])
def test_kafka_restarted_mid_stream_the_pipeline_resumes_by_itself(
    es: Elasticsearch, unique: str, tmp_path: Path, processes: int
) -> None:
    """The broker stopped and started again mid-stream: the same worker (one process,
    or a group of two) goes on by itself, and every event is indexed once."""
    env = _env(f"b{unique}", **STATE_ENV)
    assert _segwatch("topics", "create", env=env).returncode == 0
    stream = events_index(f"b{unique}")
    start = int(time.time()) - 3 * 3600
    worker = _start_worker(TIERS, env, tmp_path / "worker.log", processes)
    try:
        shipped = _flows(tmp_path / "one.log", LEARNED, start, 60_000)
        assert (
            _segwatch("ship", "-f", "vpcflow", str(tmp_path / "one.log"), env=env).returncode == 0
        )
        deadline = time.time() + 120
        while time.time() < deadline and _count(es, stream) < 2_000:
            time.sleep(0.2)
        before = _count(es, stream)
        _stack("down", "--only", "kafka")
        try:
            time.sleep(5)
        finally:
            _stack("up", "--only", "kafka")
        assert before < shipped  # the broker went away mid-stream
        shipped += _flows(tmp_path / "two.log", LEARNED, start + 60_000, 5_000)
        assert (
            _segwatch("ship", "-f", "vpcflow", str(tmp_path / "two.log"), env=env).returncode == 0
        )
        got = _wait_count(es, stream, shipped, seconds=240)
        assert got == shipped, _where_stuck(env, tmp_path / "worker.log")
        _no_duplicates(es, stream)
        assert worker.poll() is None  # the same worker, still running
    finally:
        _stop(worker)


@pytest.mark.timeout(500)
def test_a_killed_worker_leaves_each_incident_paged_once(
    es: Elasticsearch, unique: str, tmp_path: Path
) -> None:
    """Attacks among benign traffic; the worker SIGKILLed once the first incident was
    paged, and started again: every incident is paged, each exactly once (by delivery
    id), and the events are all there, once."""
    _Hook.received.clear()
    _Hook.failures[0] = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = {"name": "oncall", "kind": "json", "secret": SECRET,
            "url": f"http://127.0.0.1:{server.server_address[1]}/h"}  # fmt: skip
    env = _env(f"p{unique}", **STATE_ENV, SEGWATCH_WEBHOOKS=json.dumps([hook]),
               SEGWATCH_INCIDENTS__UPDATE_SECONDS="60")  # fmt: skip
    assert _segwatch("topics", "create", env=env).returncode == 0
    log = tmp_path / "week.log"
    attacks = ["port-scan", "vendor-pivot", "dev-to-prod", "blocked-series", "slow-scan"]
    made = _segwatch("simulate", "-m", str(MODEL), "-o", str(log), "--duration", "4h", "--rate",
                     "4", "--start", "2026-11-25", *(f"--attack={a}" for a in attacks), env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    shipped = len(log.read_text().splitlines())
    stream, incidents = events_index(f"p{unique}"), f"logs-segwatch.incidents-p{unique}"
    worker = _start_worker(MODEL, env, tmp_path / "worker-1.log")
    try:
        assert _segwatch("ship", "-f", "vpcflow", str(log), env=env).returncode == 0
        deadline = time.time() + 120
        while time.time() < deadline and not _triggers(_Hook.received):
            time.sleep(0.1)
        assert _triggers(_Hook.received), (tmp_path / "worker-1.log").read_text()[-3000:]
        worker.kill()
        worker.wait()
        assert _count(es, stream) < shipped  # mid-stream
    finally:
        if worker.poll() is None:
            worker.kill()
    worker = _start_worker(MODEL, env, tmp_path / "worker-2.log")
    try:
        got = _wait_count(es, stream, shipped, seconds=240)
        assert got == shipped, (tmp_path / "worker-2.log").read_text()[-3000:]
        _no_duplicates(es, stream)
        deadline = time.time() + 60
        found: list[dict[str, Any]] = []
        while time.time() < deadline:
            _wait_count(es, incidents, 1)
            found = [h["_source"] for h in es.search(index=incidents, size=100)["hits"]["hits"]]
            paged = {d["segwatch"]["incident"]["id"] for d in found
                     if d["segwatch"]["incident"]["severity"] != "info"}  # fmt: skip
            if paged and set(_triggers(_Hook.received)) == paged:
                break
            time.sleep(2)
        triggers = _triggers(_Hook.received)
        assert set(triggers) == paged, (triggers, paged)
        assert all(len(ids) == 1 for ids in triggers.values()), triggers
        assert len(paged) >= len(attacks), [d["segwatch"]["incident"]["title"] for d in found]
        assert all(verify(SECRET, headers, body) for headers, body in _Hook.received)
    finally:
        _stop(worker)
        server.shutdown()
