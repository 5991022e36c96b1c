"""The index stage (a :class:`~streams.loop.StageLoop`): ``flows.events`` -> the
events' data streams (``logs-segwatch.<family>-<namespace>``, by ``event.dataset``),
with documents Elasticsearch refuses -> ``flows.dlq``.

It takes a few messages (JSON arrays of events) at a time and bulk-writes their
events as they are: each array is split into its elements' raw bytes (msgspec,
without building the events), and their ``event.id`` and ``event.dataset`` are read
from the score stage's ``segwatch-heads`` header (from the events themselves in a
message without it), so nothing is parsed and serialized again. Two bulks are in
flight at once, so Elasticsearch works while the next one is read; their offsets are
committed in order, each only once its bulk was acknowledged item by item and its
refused documents are in the dead-letter topic. Before the first bulk it waits for
the index templates (:class:`~streams.deliver.TemplateGate`). An outage of
Elasticsearch holds the loop: the bulk in hand is retried under the retry policy
while the consumer keeps its group membership with its partitions paused, and
``/readyz`` says the stage waits for Elasticsearch; nothing else of the worker waits
with it.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait

import msgspec
import orjson
from confluent_kafka import Consumer, Message, Producer
from elasticsearch import Elasticsearch

from detector.definitions import FAMILIES, dataset
from streams.deliver import TemplateGate
from streams.loop import StageLoop
from streams.metrics import METRICS
from streams.pipeline import dead_letter, parse_source_id
from streams.score import HEADS_HEADER
from streams.settings import Settings
from streams.sinks import Item, Sink, deliver, make_sink

__all__ = ["IndexLoop", "index_group"]

MESSAGES_PER_BULK = 4  # of flows.events (at most 512 KiB each)
IN_FLIGHT = 2  # bulks sent and not yet acknowledged


def index_group(settings: Settings) -> str:
    """The consumer group of the index stage (``flows.events``' committed offsets)."""
    return f"{settings.worker.app_id}-index"


class _Head(msgspec.Struct):
    id: str
    dataset: str = ""


class _Event(msgspec.Struct):
    event: _Head


_RAW = msgspec.json.Decoder(list[msgspec.Raw])
_HEADS = msgspec.json.Decoder(list[_Event])
_HEADER = msgspec.json.Decoder(list[tuple[str, str]])


def _heads(message: Message, count: int) -> list[tuple[str, str]] | None:
    """(event.id, event.dataset) of each of the ``count`` events of a message, from the
    score stage's header (None without one that fits: then read from the events)."""
    found = message.headers() or []
    for name, value in found.items() if isinstance(found, dict) else found:
        if name == HEADS_HEADER and value:
            try:
                heads = _HEADER.decode(value)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return None
            return heads if len(heads) == count else None
    return None


_Refused = list[tuple[Item, str]]
_Bulk = tuple["Future[tuple[_Refused, int]]", dict[tuple[str, int], int], int, list[bytes]]


class IndexLoop(StageLoop):
    """Scored events -> Elasticsearch; runs in its own thread."""

    name = "index"

    def __init__(self, settings: Settings, gate: TemplateGate) -> None:
        super().__init__(settings)
        self.gate = gate
        es = settings.elasticsearch
        self.streams = {dataset(f): es.events_target(dataset(f)) for f in FAMILIES}

    def _loop(self) -> None:
        settings = self.settings
        self.gate.wait(self)
        es = settings.elasticsearch
        sink = make_sink("elasticsearch-events", Elasticsearch(**es.client_kwargs()),
                         es.events_targets()[0], "events")  # fmt: skip
        consumer = self._consumer(index_group(settings), **{"max.poll.interval.ms": 3_600_000})
        producer = self._producer()
        self._subscribe(consumer, [settings.topics.events])
        pool = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="bulk")
        inflight: deque[_Bulk] = deque()
        try:
            while not self._stop.is_set():
                messages = consumer.consume(MESSAGES_PER_BULK, timeout=0.2)
                if messages:
                    items, last, bad = self._read(messages)
                    bulk = pool.submit(self._flush, sink, items)
                    inflight.append((bulk, last, len(items), bad))
                # finish the oldest bulk when the window is full, or all when idle
                while inflight and (len(inflight) >= IN_FLIGHT or not messages):
                    self._finish(consumer, producer, *inflight.popleft())
            while inflight:
                self._finish(consumer, producer, *inflight.popleft())
        finally:
            pool.shutdown(wait=True)
            consumer.close()
            sink.close()

    def _read(self, messages: list[Message]
              ) -> tuple[list[Item], dict[tuple[str, int], int], list[bytes]]:  # fmt: skip
        """(the events as items, {(topic, partition): last offset}, dead letters for
        messages that are not arrays of events) of the messages."""
        items: list[Item] = []
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
                heads = _heads(message, len(raws)) or [
                    (e.event.id, e.event.dataset) for e in _HEADS.decode(value)]  # fmt: skip
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:  # not our writer's
                why = f"not a JSON array of events with event.id: {exc}"
                letter = dead_letter(value, topic, partition, offset, "index", why)
                bad.append(orjson.dumps(letter))
                continue
            streams = self.streams
            for (event_id, event_dataset), raw in zip(heads, raws, strict=True):
                stream = streams.get(event_dataset)
                if stream is None:  # no stream (nor template) for it: never a guessed mapping
                    why = (f"event.dataset is {event_dataset[:40]!r}, not one of segwatch's "
                           f"({', '.join(streams)})")  # fmt: skip
                    bad.append(orjson.dumps(dead_letter(bytes(raw), *position, "index", why)))
                    continue
                items.append(Item(event_id, bytes(raw), position, stream))
            METRICS.records_in.labels(topic).inc(len(raws))
        return items, last, bad

    def _flush(self, sink: Sink, items: list[Item]) -> tuple[_Refused, int]:
        with METRICS.sink_batch_seconds.time():
            return deliver(sink, items, self.policy, self.waiting)

    def _finish(
        self,
        consumer: Consumer,
        producer: Producer,
        bulk: Future[tuple[_Refused, int]],
        last: dict[tuple[str, int], int],
        count: int,
        letters: list[bytes],
    ) -> None:
        """Wait for a bulk (the group keeps this member meanwhile), dead-letter what it
        refused (and the unreadable messages), then commit its offsets."""
        wait([bulk], timeout=5.0)
        while not bulk.done():  # Elasticsearch is slow or away: keep the membership
            self._idle(consumer, 1.0)
        refused, _ = bulk.result()  # Stopped or Fatal from the bulk stops the loop
        METRICS.records_out.labels("events").inc(count - len(refused))
        METRICS.bulk_rejected.inc(len(refused))
        for item, reason in refused:
            try:  # where the event came from: the raw record
                source = parse_source_id(item.id)
            except ValueError:
                source = item.source
            letter = dead_letter(item.body, *source, "index", reason)
            letters.append(orjson.dumps(letter))
        self._write(producer, self.settings.topics.dlq, [(None, v) for v in letters],
                    "dead letters")  # fmt: skip
        METRICS.dlq_writes.labels("index").inc(len(letters))
        self._commit(consumer, last)
