"""Health checks of the services the pipeline needs."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from elasticsearch import ApiError, Elasticsearch, TransportError

from streams.errors import Unavailable
from streams.retry import RetryPolicy, RetrySettings, Waiting
from streams.settings import ElasticsearchSettings, KafkaSettings, TopicSettings
from streams.topics import TopicSpec, ensure_topics

__all__ = ["check_elasticsearch", "check_kafka", "wait_for_kafka"]


def check_kafka(
    kafka: KafkaSettings, timeout: float = 5.0, topics: TopicSettings | None = None
) -> tuple[bool, str]:
    """Ask the cluster for metadata: (answered, what it said or why not).

    :param topics: the configured topic names, to list which pipeline topics exist.
    """
    try:  # librdkafka's own log is quiet: the answer says what went wrong
        admin = AdminClient({**kafka.client_config(), "log_level": 0})
        meta = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        return False, f"{kafka.bootstrap_servers}: no metadata answer ({exc})"
    ours = sorted(t for t in meta.topics if t.startswith(_prefixes(topics or TopicSettings())))
    return True, (
        f"{kafka.bootstrap_servers}: {len(meta.brokers)} broker(s); "
        f"pipeline topics: {', '.join(ours) or 'none yet (run `segwatch topics create`)'}"
    )


def _prefixes(t: TopicSettings) -> tuple[str, ...]:
    return (t.raw_prefix, t.events, t.alerts, t.dlq, t.model)


def check_elasticsearch(es: ElasticsearchSettings, timeout: float = 5.0) -> tuple[bool, str]:
    """Ask for cluster health: healthy when yellow or green."""
    client = Elasticsearch(**{**es.client_kwargs(), "request_timeout": timeout})
    try:
        health = client.cluster.health()
        # the Maven Central distribution answers GET / with 405, so ask the node itself
        nodes = client.nodes.info(node_id="_local", metric="_none")
    except (ApiError, TransportError) as exc:
        return False, f"{es.url}: {exc}"
    finally:
        client.close()
    status = health["status"]
    version = next(iter(nodes["nodes"].values()))["version"]
    return status in ("yellow", "green"), (
        f"{es.url}: Elasticsearch {version}, cluster '{health['cluster_name']}' {status}"
    )


def wait_for_kafka(kafka: KafkaSettings, retry: RetrySettings, web: tuple[str, int] | None,
                   topics: Sequence[TopicSpec] = (), stop: threading.Event | None = None
                   ) -> None:  # fmt: skip
    """Block until the broker answers and ``topics`` exist (created if missing), under
    the retry policy: the worker starts its stream app only then (faust gives up at
    once when it cannot bootstrap). Meanwhile ``web`` (host, port) answers
    ``/healthz`` 200 — a wait is not a failure — and ``/readyz`` 503 with what is
    waited on.

    :raises Stopped: ``stop`` was set.
    """
    waiting = Waiting("startup")

    def attempt() -> None:
        ok, detail = check_kafka(kafka, timeout=5.0)
        if not ok:
            raise Unavailable("kafka", detail)
        if topics:
            ensure_topics(kafka, list(topics))  # a broker just back may not create them yet

    try:
        attempt()
        return
    except Exception as exc:
        waiting.begin("kafka", getattr(exc, "reason", None) or str(exc))
    server = _waiting_server(web, waiting) if web is not None else None
    try:
        RetryPolicy(retry, stop or threading.Event()).call("startup", "kafka", attempt, waiting)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


def _waiting_server(web: tuple[str, int], waiting: Waiting) -> ThreadingHTTPServer | None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            report = waiting.report()
            body: dict[str, Any]
            if self.path.startswith("/healthz"):
                status, body = 200, {"status": "ok", "waiting": report}
            elif self.path.startswith("/readyz"):
                stages = {"startup": {"state": "waiting", "waiting": report}}
                status, body = 503, {"ready": False, "stages": stages}
            else:
                status, body = 404, {"error": "not found"}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    try:
        server = ThreadingHTTPServer(web, Handler)
    except OSError:  # the port is taken: wait without the endpoints
        return None
    threading.Thread(target=server.serve_forever, name="startup-web", daemon=True).start()
    return server
