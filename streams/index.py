"""The index stage (a :class:`~streams.loop.StageLoop`): ``flows.events`` -> the
events data stream, with documents Elasticsearch refuses -> ``flows.dlq``.

It takes a few messages (JSON arrays of events) at a time and bulk-writes their
events as they are: each array is split into its elements' raw bytes and their
``event.id`` (msgspec, without building the events), so nothing is parsed and
serialized again. Two bulks are in flight at once, so Elasticsearch works while
the next one is read; their offsets are committed in order, each only once its
bulk was acknowledged item by item and its refused documents are in the
dead-letter topic. An outage of Elasticsearch holds the loop (the sink retries
with backoff); the consumer may sit unpolled for up to an hour before Kafka
moves its partitions (then the batches are read again: the ids make that
harmless).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import msgspec
import orjson
from confluent_kafka import Consumer, Message, Producer
from elasticsearch import Elasticsearch

from streams.elastic import BulkResult, EventsSink
from streams.loop import StageLoop
from streams.metrics import METRICS
from streams.pipeline import dead_letter, parse_source_id
from streams.settings import Settings

__all__ = ["IndexLoop", "index_group"]

MESSAGES_PER_BULK = 4  # of flows.events (at most 512 KiB each)
IN_FLIGHT = 2  # bulks sent and not yet acknowledged


def index_group(settings: Settings) -> str:
    """The consumer group of the index stage (``flows.events``' committed offsets)."""
    return f"{settings.worker.app_id}-index"


class _Id(msgspec.Struct):
    id: str


class _Event(msgspec.Struct):
    event: _Id


_RAW = msgspec.json.Decoder(list[msgspec.Raw])
_IDS = msgspec.json.Decoder(list[_Event])

_Bulk = tuple["Future[BulkResult]", dict[tuple[str, int], int], dict[str, bytes], list[bytes]]


class IndexLoop(StageLoop):
    """Scored events -> Elasticsearch; runs in its own thread."""

    name = "index"

    def _loop(self) -> None:
        settings = self.settings
        target = settings.elasticsearch.events_stream
        es = Elasticsearch(**settings.elasticsearch.client_kwargs())
        consumer = self._consumer(index_group(settings), **{"max.poll.interval.ms": 3_600_000})
        producer = self._producer()
        consumer.subscribe([settings.topics.events])
        pool = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="bulk")
        inflight: deque[_Bulk] = deque()
        try:
            while not self._stop.is_set():
                messages = consumer.consume(MESSAGES_PER_BULK, timeout=0.2)
                if messages:
                    docs, last, bad = self._read(messages)
                    sink = EventsSink(es, target=target)
                    sink.buffer = list(docs.items())
                    inflight.append((pool.submit(self._flush, sink), last, docs, bad))
                # finish the oldest bulk when the window is full, or all when idle
                while inflight and (len(inflight) >= IN_FLIGHT or not messages):
                    self._finish(consumer, producer, *inflight.popleft())
            while inflight:
                self._finish(consumer, producer, *inflight.popleft())
        finally:
            pool.shutdown(wait=True)
            consumer.close()
            es.close()

    def _read(
        self, messages: list[Message]
    ) -> tuple[dict[str, bytes], dict[tuple[str, int], int], list[bytes]]:
        """({event id: raw event}, {(topic, partition): last offset}, dead letters for
        messages that are not arrays of events) of the messages."""
        docs: dict[str, bytes] = {}
        last: dict[tuple[str, int], int] = {}
        bad: list[bytes] = []
        for message in messages:
            position = self._position(message)
            if position is None:
                continue
            topic, partition, offset = position
            value = message.value() or b"[]"
            last[(topic, partition)] = offset
            try:
                raws = _RAW.decode(value)
                ids = _IDS.decode(value)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:  # not our writer's
                why = f"not a JSON array of events with event.id: {exc}"
                letter = dead_letter(value, topic, partition, offset, "index", why)
                bad.append(orjson.dumps(letter))
                continue
            docs.update((e.event.id, bytes(raw)) for e, raw in zip(ids, raws, strict=True))
            METRICS.records_in.labels(topic).inc(len(raws))
        return docs, last, bad

    @staticmethod
    def _flush(sink: EventsSink) -> BulkResult:
        with METRICS.sink_batch_seconds.time():
            return sink.flush()

    def _finish(
        self,
        consumer: Consumer,
        producer: Producer,
        bulk: Future[BulkResult],
        last: dict[tuple[str, int], int],
        docs: dict[str, bytes],
        letters: list[bytes],
    ) -> None:
        """Wait for a bulk, dead-letter what it refused (and the unreadable messages),
        then commit its offsets."""
        result = bulk.result()
        METRICS.records_out.labels(self.settings.elasticsearch.events_stream).inc(result.written)
        METRICS.bulk_rejected.inc(len(result.rejected))
        for doc_id, reason in result.rejected:
            topic, partition, offset = parse_source_id(doc_id)
            letter = dead_letter(docs[doc_id], topic, partition, offset, "index",
                                 f"Elasticsearch refused the document: {reason}")  # fmt: skip
            letters.append(orjson.dumps(letter))
        self._dead_letters(producer, letters)
        self._commit(consumer, last)

    def _dead_letters(self, producer: Producer, letters: list[bytes]) -> None:
        """Write them and wait for Kafka's acknowledgement: the batch's offsets must not
        be committed before."""
        self._write(producer, self.settings.topics.dlq, [(None, v) for v in letters],
                    "dead letters")  # fmt: skip
        METRICS.dlq_writes.labels("index").inc(len(letters))
