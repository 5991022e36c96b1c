"""Health checks of the services the pipeline needs."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from elasticsearch import ApiError, Elasticsearch, TransportError

from streams.settings import ElasticsearchSettings, KafkaSettings, TopicSettings

__all__ = ["check_elasticsearch", "check_kafka"]


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
