"""The ceilings: raw confluent-kafka produce/consume and raw Elasticsearch bulk indexing.

These are what the local stack can do with no segwatch code in the way; the
pipeline's end-to-end figures are later read against them.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any, cast

import orjson
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch

from bench import Row
from streams.settings import KafkaSettings, load_settings
from streams.topics import TopicSpec, ensure_topics

RECORD_BYTES = 200
DOC_BYTES = 1024


def run(scale: float) -> list[Row]:
    settings = load_settings()
    n_records = int(500_000 * scale)
    n_docs = int(100_000 * scale)
    rows = _kafka(settings.kafka, n_records)
    rows.append(_elasticsearch(settings.elasticsearch.client_kwargs(), n_docs))
    return rows


def _kafka(kafka_settings: KafkaSettings, n: int) -> list[Row]:
    conf = kafka_settings.client_config()
    topic = f"bench.ceiling.{uuid.uuid4().hex[:8]}"
    partitions = 3
    ensure_topics(kafka_settings, [TopicSpec(topic, partitions, 1)])
    payload = os.urandom(RECORD_BYTES // 2).hex().encode()  # 200 bytes, incompressible-ish
    producer = Producer(
        {
            **conf,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "acks": "all",
            "compression.type": "none",
        }
    )
    failed = 0

    def on_delivery(err: object, _msg: object) -> None:
        nonlocal failed
        if err is not None:
            failed += 1

    started = time.perf_counter()
    for i in range(n):
        while True:
            try:
                producer.produce(
                    topic, payload, key=str(i % 1024).encode(), on_delivery=on_delivery
                )
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(120)
    produce_s = time.perf_counter() - started
    if failed:
        raise RuntimeError(f"{failed} records were not delivered")

    consumer = Consumer(
        {
            **conf,
            "group.id": f"bench-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.max.bytes": 52_428_800,
        }
    )
    consumer.subscribe([topic])
    got = 0
    first = None
    while got < n:
        batch = consumer.consume(num_messages=10_000, timeout=1.0)
        if batch and first is None:
            first = time.perf_counter()  # partition assignment is not part of the rate
        got += sum(1 for m in batch if m.error() is None)
        if first is not None and time.perf_counter() - first > 300:
            raise RuntimeError(f"consumed only {got} of {n} records in 300s")
    consume_s = time.perf_counter() - (first or time.perf_counter())
    consumer.close()
    AdminClient(conf).delete_topics([topic])
    cond = f"{n:,} x {RECORD_BYTES} B, {partitions} partitions, acks=all, 1 client, local broker"
    return [
        Row("kafka produce (confluent-kafka, raw)", n / produce_s, "records/s", cond),
        Row("kafka consume (confluent-kafka, raw)", n / consume_s, "records/s", cond),
    ]


def _doc(i: int) -> bytes:
    base = {
        "@timestamp": "2026-11-25T12:00:00Z",
        "source": {"ip": f"10.0.{i % 256}.{(i // 256) % 256}", "port": 30000 + i % 30000},
        "destination": {"ip": "10.0.3.10", "port": 5432},
        "network": {"transport": "tcp", "bytes": i * 7 % 100000},
        "event": {"original": ""},
    }
    filler = DOC_BYTES - len(orjson.dumps(base))
    base["event"]["original"] = "x" * max(filler, 0)  # type: ignore[index]
    return orjson.dumps(base)


def _elasticsearch(client_kwargs: dict[str, object], n: int) -> Row:
    es = Elasticsearch(**client_kwargs)  # type: ignore[arg-type]
    index = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    es.indices.create(
        index=index,
        settings={"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "-1"},
    )
    batch = 2_000
    docs = [_doc(i) for i in range(batch)]
    action = b'{"index":{}}'
    body = b"\n".join(line for d in docs for line in (action, d)) + b"\n"
    started = time.perf_counter()
    sent = 0
    while sent < n:
        resp = es.bulk(index=index, body=cast(Any, body))  # the client's types: no bytes
        if resp["errors"]:
            raise RuntimeError(f"bulk errors: {resp['items'][0]}")
        sent += batch
    es.indices.refresh(index=index)
    elapsed = time.perf_counter() - started
    count = es.count(index=index)["count"]
    es.indices.delete(index=index)
    es.close()
    if count != sent:
        raise RuntimeError(f"indexed {count} of {sent} documents")
    return Row(
        "elasticsearch bulk index (raw)",
        sent / elapsed,
        "docs/s",
        f"{sent:,} x {DOC_BYTES} B JSON, bulks of {batch}, 1 shard, 0 replicas, "
        f"1 client, heap {os.environ.get('SEGWATCH_ES_HEAP', '1g')}",
    )
