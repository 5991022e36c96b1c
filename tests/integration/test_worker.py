"""The worker end to end on the real stack: every family shipped with bad lines among
them -> exactly the good events in Elasticsearch, the bad records in the dead-letter
topic with reasons, alerts in the alerts index and, signed, at a webhook receiver."""

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
from pathlib import Path
from typing import Any, ClassVar

import pytest
from confluent_kafka import Consumer
from elasticsearch import Elasticsearch

from streams.settings import KafkaSettings
from streams.webhooks import verify

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "rules" / "models" / "retail_store.yaml"
SECRET = "hook-secret"


class _Hook(http.server.BaseHTTPRequestHandler):
    """A receiver that fails its first ``failures`` requests with 500, then accepts."""

    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    failures: ClassVar[list[int]] = [3]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Hook.failures[0] > 0:
            _Hook.failures[0] -= 1
            self.send_response(500)
        else:
            _Hook.received.append((dict(self.headers), body))
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


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
        "SEGWATCH_TOPICS__DLQ": f"{tag}.dlq",
        "SEGWATCH_TOPICS__MODEL": f"{tag}.model",
        "SEGWATCH_WORKER__APP_ID": f"segwatch-{tag}",
        "SEGWATCH_WORKER__WEB_PORT": str(_free_port()),
        "SEGWATCH_ELASTICSEARCH__EVENTS_STREAM": f"segwatch-events-{tag}",
        "SEGWATCH_ELASTICSEARCH__ALERTS_INDEX": f"segwatch-alerts-{tag}",
        **extra,
    }


def _start_worker(model: Path, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    """`segwatch worker` in the background, its (ECS JSON) log lines going to ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker", "-m", str(model), "--loglevel", "info"],
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
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
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
        events = f"segwatch-events-t{unique}"
        got = _wait_count(es, events, good)
        assert got == good, (tmp_path / "worker.log").read_text()[-4000:]
        dead = _count_topic(kafka, f"t{unique}.dlq", 6)
        assert len(dead) == 6
        assert {d["family"] for d in dead} == {"vpcflow", "calico", "iptables"}
        assert all(d["reason"] and d["source"]["topic"].startswith(f"t{unique}.raw.") for d in dead)
        alerts = f"segwatch-alerts-t{unique}"
        assert _wait_count(es, alerts, 1) >= 1
        hits = es.search(index=alerts, size=50)["hits"]["hits"]
        assert any(h["_source"]["rule"]["id"] == "violation-into-restricted" for h in hits)
        deadline = time.time() + 30
        while time.time() < deadline and not _Hook.received:
            time.sleep(0.5)
        assert _Hook.received and _Hook.failures[0] == 0  # delivered after the receiver's 500s
        assert all(verify(SECRET, headers, body) for headers, body in _Hook.received)
        delivered = {json.loads(b)["segwatch"]["alert"]["fingerprint"] for _, b in _Hook.received}
        assert {h["_id"] for h in hits} <= delivered  # every alert reached the receiver
    finally:
        _stop(worker)
        server.shutdown()
    assert worker.returncode is not None
    logged = [line for line in (tmp_path / "worker.log").read_text().splitlines() if line.strip()]
    assert logged and all(json.loads(line)["log"]["level"] for line in logged)  # ECS JSON


@pytest.mark.timeout(400)
def test_hot_reload_new_flows_get_the_new_verdicts_old_ones_keep_theirs(
    kafka: KafkaSettings, es: Elasticsearch, unique: str, tmp_path: Path
) -> None:
    import urllib.request

    port = _free_port()
    env = _env(f"r{unique}", SEGWATCH_WORKER__WEB_PORT=str(port))
    assert _segwatch("topics", "create", env=env).returncode == 0
    old = tmp_path / "old.yaml"
    old.write_text((ROOT / "rules" / "models" / "three_tier_vpc.yaml").read_text())
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

    def ready() -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return dict(json.loads(response.read()))

    worker = _start_worker(old, env, tmp_path / "worker.log")
    stream = f"segwatch-events-r{unique}"
    try:
        assert (
            _segwatch("ship", "-f", "vpcflow", str(batch("one.log", 20)), env=env).returncode == 0
        )
        assert _wait_count(es, stream, 20) == 20
        before = ready()
        published = _segwatch("model", "publish", str(new), env=env)
        assert published.returncode == 0, published.stderr
        deadline = time.time() + 60
        while time.time() < deadline and ready()["published_version"] in (
            None,
            before["model_version"],
        ):
            time.sleep(0.5)
        assert ready()["published_version"] not in (None, before["model_version"])
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
        assert (ready()["model_version"], "allowed") in verdicts
        assert len(verdicts) == 2 and first
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert "segwatch_records_in_total" in text and "segwatch_model_info" in text
        deadline = time.time() + 40  # the lag timer runs every 15 s
        while (
            time.time() < deadline
            and f'segwatch_consumer_lag{{partition="0",topic="r{unique}.raw.vpcflow"}}' not in text
        ):
            time.sleep(2)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
        lags = [
            line
            for line in text.splitlines()
            if line.startswith("segwatch_consumer_lag{") and f"r{unique}.raw.vpcflow" in line
        ]
        assert lags and all(float(line.rsplit(" ", 1)[1]) == 0 for line in lags), lags
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
def test_elasticsearch_stopped_mid_stream_and_restarted_loses_and_duplicates_nothing(
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
    stream = f"segwatch-events-e{unique}"
    worker = _start_worker(MODEL, env, tmp_path / "worker.log")
    try:
        assert _segwatch("ship", "-f", "vpcflow", str(logs[0]), env=env).returncode == 0
        first = len(logs[0].read_text().splitlines())
        assert _wait_count(es, stream, first) == first
        _stack("down", "--only", "elasticsearch")
        try:
            assert _segwatch("ship", "-f", "vpcflow", str(logs[1]), env=env).returncode == 0
            time.sleep(10)  # the indexer keeps retrying while the node is gone
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
        assert _wait_count(es, f"segwatch-events-d{unique}", 1000, seconds=120) >= 1000
    finally:
        demo.send_signal(signal.SIGINT)
        output, _ = demo.communicate(timeout=90)
    assert demo.returncode == 0, output[-2000:]
    assert "segwatch demo" in output and "latest alerts" in output
    with socket.socket() as probe:  # the demo's worker is gone with it
        assert probe.connect_ex(("127.0.0.1", port)) != 0
