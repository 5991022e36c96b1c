"""The normalize stage (a :class:`~streams.loop.StageLoop`): raw records ->
``flows.normalized`` and ``flows.dlq``.

Every raw record is one Kafka message, and a faust agent pays about 100 us per
message, twenty times what parsing one costs. This loop takes records in
batches, parses them, sends one message per source zone and batch (a JSON array
of events), waits until Kafka acknowledged every message it sent and only then
commits the batch's offsets: at least once, never lost. If a delivery fails, it
rewinds to the batch's first offsets and does the batch again (the events' ids
make the replay harmless downstream).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import (
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from detector.parsers import ParseOptions
from streams.loop import StageLoop, produce
from streams.metrics import METRICS
from streams.pipeline import Normalizer, batches
from streams.settings import Settings

__all__ = ["NormalizeLoop", "normalize_group"]


def normalize_group(settings: Settings) -> str:
    """The consumer group of the normalize stage (the raw topics' committed offsets)."""
    return f"{settings.worker.app_id}-normalize"


class NormalizeLoop(StageLoop):
    """Raw records -> events by source zone; runs in its own thread."""

    name = "normalize"

    def __init__(self, settings: Settings, zone_of: Callable[[Any], str | None]) -> None:
        super().__init__(settings)
        self.zone_of = zone_of  # the active model's, read on every event
        topics = settings.topics
        self._normalizers = {
            topics.raw(f): Normalizer(f, lambda: ParseOptions(reference_time=time.time()))
            for f in topics.families
        }

    def _loop(self) -> None:
        consumer = self._consumer(normalize_group(self.settings))
        producer = self._producer()
        consumer.subscribe(list(self._normalizers))
        try:
            while not self._stop.is_set():
                messages = consumer.consume(self.settings.worker.batch_size, timeout=0.2)
                if messages:
                    self._batch(consumer, producer, messages)
        finally:
            consumer.close()

    def _batch(self, consumer: Consumer, producer: Producer, messages: list[Message]) -> None:
        topics = self.settings.topics
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(str(err))

        by_zone: dict[bytes, list[dict[str, Any]]] = {}
        first: dict[tuple[str, int], int] = {}
        last: dict[tuple[str, int], int] = {}
        counts: dict[str, int] = {}
        for message in messages:
            position = self._position(message)
            if position is None:
                continue
            topic, partition, offset = position
            first.setdefault((topic, partition), offset)
            last[(topic, partition)] = offset
            counts[topic] = counts.get(topic, 0) + 1
            normalizer = self._normalizers[topic]
            events, dead = normalizer.normalize(message.value() or b"", topic, partition, offset)
            for event in events:
                # one source zone's flows meet one scorer: zone-level state (new paths,
                # profiles) and per-source windows (scans) stay whole
                key = (self.zone_of(event.get("source")) or "").encode()
                by_zone.setdefault(key, []).append(event)
            if dead:
                METRICS.parse_errors.labels(normalizer.family).inc(len(dead))
                METRICS.dlq_writes.labels("normalize").inc(len(dead))
                for letter in dead:
                    produce(producer, topics.dlq, None, orjson.dumps(letter), delivered)
        for topic, count in counts.items():
            METRICS.records_in.labels(topic).inc(count)
        for key, events in by_zone.items():
            for batch in batches(events):
                produce(producer, topics.normalized, key, batch, delivered)
        while producer.flush(1.0) > 0:
            pass  # the producer retries by itself while the broker is away
        if failures:
            self.log.error("%d deliveries failed (%s); doing the batch again", len(failures),
                           failures[0])  # fmt: skip
            for (topic, partition), offset in first.items():
                consumer.seek(TopicPartition(topic, partition, offset))
            time.sleep(1.0)
            return
        self._commit(consumer, last)
