"""The normalize stage on the real broker: it holds back while the score stage has too
many messages of the normalized topic left to read, and goes on once it catches up."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from detector.connection import key_partition
from streams.metrics import METRICS
from streams.normalize import NormalizeLoop
from streams.settings import Settings
from streams.ship import ship
from streams.topics import ensure_topics, pipeline_topics
from tests.integration.test_index import _settings


def _written(settings: Settings, client: Consumer) -> list[TopicPartition]:
    """The normalized topic's partitions at their high watermarks."""
    topic = settings.topics.normalized
    parts = client.list_topics(topic, timeout=10).topics[topic].partitions
    ends = [TopicPartition(topic, p) for p in parts]
    for tp in ends:
        tp.offset = client.get_watermark_offsets(tp, timeout=10)[1]
    return ends


def _held() -> float:
    return METRICS.normalize_held._value.get()  # type: ignore[attr-defined,no-any-return]


def _shipped(tag: str) -> Settings:
    """Settings with batches of 2 records and room for 20 unscored events, and 6,000
    records of one host in the raw topic: 3,000 messages if nothing held normalize back
    (on one partition: the host is never split as a hot key)."""
    base = _settings(tag)
    worker = base.worker.model_copy(
        update={"batch_size": 2, "normalize_ahead": 20, "hot_key_share": 1.0}
    )
    settings = base.model_copy(update={"worker": worker})
    ensure_topics(settings.kafka, pipeline_topics(settings.topics))
    t = int(time.time())
    records = [
        f"2 123456789012 eni-1 10.0.1.10 10.0.2.20 {10000 + i} 443 6 1 60 {t} {t + 1} ACCEPT OK"
        for i in range(6_000)
    ]
    assert not ship(settings.kafka, settings.topics.raw("vpcflow"), records).failed
    return settings


OFFICE = b"10.0.1.10"  # every record's initiator


def _office() -> Any:
    """A model that calls every record's source its initiator."""
    return SimpleNamespace(
        connection_hosts=lambda event: (event["source"]["ip"], event["destination"]["ip"]),
        version="office-1",
    )


def test_normalize_waits_for_the_score_stage_to_catch_up(unique: str) -> None:
    settings = _shipped(f"nz{unique}")
    loop = NormalizeLoop(settings, _office)
    # the score stage's group, committing nothing yet
    score = Consumer({**settings.kafka.client_config(), "group.id": settings.worker.app_id,
                      "enable.auto.commit": False})  # fmt: skip
    loop.start()
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not _held():
            time.sleep(0.1)
        assert _held() == 1
        time.sleep(1.5)  # a check or two after the hold
        held_at = sum(tp.offset for tp in _written(settings, score))
        time.sleep(2)
        assert sum(tp.offset for tp in _written(settings, score)) == held_at  # it waits
        assert 10 < held_at < 3_000
        # the scorer catches up (commits what was written): the stage goes on, until
        # it is ahead again, and so on to the end
        deadline = time.time() + 60
        written = 0
        while time.time() < deadline and written < 3_000:
            ends = _written(settings, score)
            score.commit(offsets=ends, asynchronous=False)
            written = sum(tp.offset for tp in ends)
            time.sleep(0.5)
        assert written == 3_000
    finally:
        loop.stop()
        score.close()
    assert loop.failed is None


def test_normalize_waits_only_for_its_own_scorer(unique: str) -> None:
    """In a worker that scores, only the partitions it scores count: a backlog in the
    others (another worker's) never holds it up."""
    settings = _shipped(f"no{unique}")
    office = key_partition(OFFICE, settings.topics.partitions)
    others = [p for p in range(settings.topics.partitions) if p != office]
    loop = NormalizeLoop(settings, _office, scored=lambda: others)
    score = Consumer({**settings.kafka.client_config(), "group.id": settings.worker.app_id,
                      "enable.auto.commit": False})  # fmt: skip
    loop.start()
    try:
        deadline = time.time() + 60
        written = 0
        while time.time() < deadline and written < 3_000:
            written = sum(tp.offset for tp in _written(settings, score))
            assert not _held()
            time.sleep(0.2)
        ends = _written(settings, score)
        assert written == 3_000 and ends[office].offset == 3_000  # nothing scored, all written
    finally:
        loop.stop()
        score.close()
    assert loop.failed is None
