"""The local stack is real: a Kafka broker and an Elasticsearch node that do their jobs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch
from typer.testing import CliRunner

from streams.cli import app
from streams.settings import KafkaSettings, TopicSettings
from streams.topics import TopicSpec, ensure_topics, list_topics, pipeline_topics

REPO = Path(__file__).resolve().parents[2]


def _delete_topics(kafka: KafkaSettings, names: list[str]) -> None:
    admin = AdminClient(kafka.client_config())
    for fut in admin.delete_topics(names, operation_timeout=30).values():
        fut.result()


def test_produce_consume_round_trip(kafka: KafkaSettings, unique: str) -> None:
    topic = f"test.roundtrip.{unique}"
    ensure_topics(kafka, [TopicSpec(topic, partitions=2, replication_factor=1)])
    sent = {f"key-{i}".encode(): f"value-{i}-{unique}".encode() * 4 for i in range(200)}
    producer = Producer({**kafka.client_config(), "linger.ms": 5, "acks": "all"})
    delivered: list[str] = []
    for key, value in sent.items():
        producer.produce(topic, value, key, on_delivery=lambda err, _m: delivered.append(str(err)))
    assert producer.flush(30) == 0
    assert delivered == ["None"] * len(sent)

    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"test-{unique}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: dict[bytes, bytes] = {}
    try:
        for _ in range(120):
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                assert msg.error() is None, msg.error()
                received[msg.key()] = msg.value()
            if len(received) == len(sent):
                break
    finally:
        consumer.close()
        _delete_topics(kafka, [topic])
    assert received == sent


def test_topic_creation_is_idempotent(kafka: KafkaSettings, unique: str) -> None:
    topics = TopicSettings(
        raw_prefix=f"test.{unique}.raw.",
        events=f"test.{unique}.events",
        alerts=f"test.{unique}.alerts",
        incidents=f"test.{unique}.incidents",
        dlq=f"test.{unique}.dlq",
        model=f"test.{unique}.model",
        normalized=f"test.{unique}.normalized",
        partitions=2,
    )
    specs = pipeline_topics(topics)
    assert all(unique in s.name for s in specs)  # none of another run's, which it deletes
    try:
        first = ensure_topics(kafka, specs)
        second = ensure_topics(kafka, specs)
        assert [r.outcome for r in first] == ["created"] * len(specs)
        assert [r.outcome for r in second] == ["exists"] * len(specs)
        existing = list_topics(kafka)
        assert existing[topics.raw("vpcflow")] == 2
        assert existing[topics.model] == 1
        assert existing[topics.alerts] == 1  # the incident stage reads them all
        assert existing[topics.incidents] == 1

        admin = AdminClient(kafka.client_config())
        from confluent_kafka.admin import ConfigResource, ResourceType

        res = ConfigResource(ResourceType.TOPIC, topics.model)
        config = admin.describe_configs([res])[res].result()
        assert config["cleanup.policy"].value == "compact"
    finally:
        _delete_topics(kafka, [s.name for s in specs])


def test_elasticsearch_index_and_search(es: Elasticsearch, unique: str) -> None:
    index = f"test-stack-{unique}"
    es.indices.create(
        index=index,
        settings={"number_of_shards": 1, "number_of_replicas": 0},
        mappings={
            "properties": {
                "source": {"properties": {"ip": {"type": "ip"}}},
                "zone": {"type": "keyword"},
            }
        },
    )
    try:
        es.index(
            index=index,
            id="1",
            document={"source": {"ip": "10.0.2.7"}, "zone": "app"},
            refresh="wait_for",
        )
        es.index(
            index=index,
            id="2",
            document={"source": {"ip": "192.0.2.1"}, "zone": "internet"},
            refresh="wait_for",
        )
        hits = es.search(index=index, query={"term": {"source.ip": "10.0.0.0/8"}})["hits"]
        assert hits["total"]["value"] == 1
        assert hits["hits"][0]["_source"]["zone"] == "app"
    finally:
        es.indices.delete(index=index)


def test_cli_status_reports_both_services(kafka: KafkaSettings, es: Elasticsearch) -> None:
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "kafka" in result.output and "elasticsearch" in result.output
    assert "DOWN" not in result.output


def test_stack_script_reports_both_healthy_and_second_up_is_a_no_op(
    kafka: KafkaSettings, es: Elasticsearch
) -> None:
    script = REPO / "deploy" / "local" / "stack.py"
    status = subprocess.run(
        [sys.executable, str(script), "status"], capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("healthy") == 2
    up = subprocess.run(
        [sys.executable, str(script), "up"], capture_output=True, text=True, timeout=60
    )
    assert up.returncode == 0, up.stdout + up.stderr
    assert up.stdout.count("already up") == 2
