"""The index stage on the real stack: events from a flows.events topic into the data
stream; a document Elasticsearch refuses goes to the dead-letter topic with the
reason; offsets are committed once both are done; a replay writes nothing twice."""

from __future__ import annotations

import http.client
import http.server
import os
import threading
import time
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from elasticsearch import Elasticsearch

from streams.deliver import TemplateGate
from streams.index import IndexLoop, index_group
from streams.settings import Settings, load_settings
from streams.topics import ensure_topics, pipeline_topics
from tests.integration.test_worker import (
    MODEL,
    _count_topic,
    _env,
    _start_worker,
    _stop,
    _wait_count,
)


def _settings(tag: str) -> Settings:
    """The settings a worker gets from test_worker's environment for ``tag``."""
    with mock.patch.dict(os.environ, _env(tag)):
        return load_settings()


def _event(i: int, port: object = 443) -> dict[str, object]:
    return {"@timestamp": "2026-11-25T10:00:00.000Z",
            "event": {"id": f"t-0-{i}-0", "dataset": "segwatch.vpcflow"},
            "source": {"ip": "10.0.0.1"}, "destination": {"ip": "10.0.0.2", "port": port}}  # fmt: skip


def _committed(settings: Settings) -> int:
    consumer = Consumer({**settings.kafka.client_config(), "group.id": index_group(settings)})
    try:
        parts = consumer.committed(
            [TopicPartition(settings.topics.events, p) for p in range(settings.topics.partitions)],
            timeout=10,
        )
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in parts)


def test_events_are_indexed_refused_ones_dead_lettered_and_offsets_committed(
    es: Elasticsearch, unique: str
) -> None:
    settings = _settings(f"ix{unique}")
    ensure_topics(settings.kafka, pipeline_topics(settings.topics))
    producer = Producer(settings.kafka.client_config())
    batches = [[_event(i) for i in range(j * 100, j * 100 + 100)] for j in range(5)]
    batches[2][7] = _event(207, port="https")  # the mapping refuses a text port
    for batch in batches:
        producer.produce(settings.topics.events, orjson.dumps(batch), key=b"zone")
    producer.produce(settings.topics.events, b'{"not": "a batch"}', key=b"zone")  # a stranger's
    producer.flush(10)
    stream = settings.elasticsearch.events_target("segwatch.vpcflow")
    gate = TemplateGate(settings)
    gate.start()
    loop = IndexLoop(settings, gate)
    loop.start()
    try:
        assert _wait_count(es, stream, 499) == 499
        deadline = time.time() + 30
        while time.time() < deadline and _committed(settings) < len(batches) + 1:
            time.sleep(0.5)
        assert _committed(settings) == len(batches) + 1
    finally:
        loop.stop()
    assert loop.failed is None
    letters = _count_topic(settings.kafka, settings.topics.dlq, 2)
    (refused,) = [x for x in letters if "refused" in x["reason"]]
    assert refused["stage"] == "index" and "destination.port" in refused["reason"]
    assert orjson.loads(refused["raw"])["event"]["id"] == "t-0-207-0"
    (stranger,) = [x for x in letters if "not a JSON array of events" in x["reason"]]
    assert stranger["raw"] == '{"not": "a batch"}'
    assert len(letters) == 2
    # read again from the start (a replay after a crash): nothing is written twice
    again = _settings_with_group(settings, f"segwatch-ix{unique}-again")
    replay = IndexLoop(again, gate)
    replay.start()
    try:
        deadline = time.time() + 30
        while time.time() < deadline and _committed(again) < len(batches) + 1:
            time.sleep(0.5)
        assert _committed(again) == len(batches) + 1  # it did read everything again
    finally:
        replay.stop()
    es.indices.refresh(index=stream)
    assert es.count(index=stream)["count"] == 499


def _settings_with_group(settings: Settings, app_id: str) -> Settings:
    return settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"app_id": app_id})}
    )


class _SlowTemplates(http.server.BaseHTTPRequestHandler):
    """A proxy to Elasticsearch that holds index-template writes for a few seconds and
    notes when each request was answered."""

    upstream: ClassVar[tuple[str, int]] = ("127.0.0.1", 9200)
    answered: ClassVar[list[tuple[float, str, str]]] = []  # (time, method, path)

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.command == "PUT" and self.path.startswith("/_index_template/"):
            time.sleep(6)
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(self.command, self.path, body=body or None, headers=headers)
        response = conn.getresponse()
        data = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()
        _SlowTemplates.answered.append((time.time(), self.command, self.path))

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    def log_message(self, *args: Any) -> None:
        pass


def test_a_worker_writes_no_event_before_its_templates_are_in(
    es: Elasticsearch, unique: str, tmp_path: Path
) -> None:
    """Events already waiting when a worker starts are written only after its index
    templates: a write before them would make the stream a plain index, for good."""
    tag = f"it{unique}"
    settings = _settings(tag)
    ensure_topics(settings.kafka, pipeline_topics(settings.topics))
    producer = Producer(settings.kafka.client_config())
    producer.produce(settings.topics.events, orjson.dumps([_event(i) for i in range(50)]))
    producer.flush(10)
    url = settings.elasticsearch.url.split("//", 1)[1].rstrip("/")
    host, port = url.rsplit(":", 1)
    _SlowTemplates.upstream = (host, int(port))
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowTemplates)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    env = _env(tag, SEGWATCH_WORKER__ROLES='["index"]',
               SEGWATCH_ELASTICSEARCH__URL=f"http://127.0.0.1:{proxy.server_address[1]}")  # fmt: skip
    worker = _start_worker(MODEL, env, tmp_path / "worker.log")
    try:
        assert _wait_count(es, settings.elasticsearch.events_target("segwatch.vpcflow"), 50) == 50
    finally:
        _stop(worker)
        proxy.shutdown()
    answered = _SlowTemplates.answered
    templates = [t for t, method, path in answered if path.startswith("/_index_template/")]
    bulks = [t for t, method, path in answered if "_bulk" in path]
    assert templates and bulks, answered
    assert min(bulks) > max(templates)
    stream = settings.elasticsearch.events_target("segwatch.vpcflow")
    (backing,) = es.indices.get(index=stream)  # a data stream's, not a plain index
    assert backing.startswith(f".ds-{stream}-")
