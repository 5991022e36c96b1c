"""The normalize stage (a :class:`~streams.loop.StageLoop`): raw records ->
``flows.normalized`` and ``flows.dlq``.

Every raw record is one Kafka message, and a faust agent pays about 100 us per
message, twenty times what parsing one costs. This loop takes records in
batches, parses them and sends one message per partition and batch: a JSON array
of the events whose key — the address of the host that opened the connection, see
:func:`score_key` — hashes to that partition, as Kafka's own producer would hash
it. Each initiator's events therefore always meet one partition, as if each were
sent keyed, at a handful of messages per batch instead of one per initiator. It
waits until Kafka acknowledged every message it sent and only then commits the
batch's offsets: at least once, never lost. If a delivery fails, it
rewinds to the batch's first offsets and does the batch again (the events' ids
make the replay harmless downstream).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Collection
from typing import Any

import orjson
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from detector.connection import key_partition
from detector.model import CompiledModel
from detector.parsers import ParseOptions
from streams.loop import StageLoop, produce
from streams.metrics import METRICS, group_lag
from streams.model_sync import MODEL_HEADER
from streams.pipeline import Normalizer, dead_letter, pack
from streams.settings import Settings

__all__ = ["HotKeys", "NormalizeLoop", "normalize_group", "score_key"]

log = logging.getLogger("segwatch.normalize")


def normalize_group(settings: Settings) -> str:
    """The consumer group of the normalize stage (the raw topics' committed offsets)."""
    return f"{settings.worker.app_id}-normalize"


def score_key(model: CompiledModel, event: dict[str, Any], hot: HotKeys | None = None) -> bytes:
    """The key of an event on the normalized topic (the partition it goes to is the one
    Kafka's producer would hash this key to): the address of the host that opened
    its connection, as the log, the model and the port ranges tell it (never learnt
    state, so a connection's request and reply get the same key wherever they are
    normalized). Each initiator's connections meet one scorer, whole: its scans, sweeps
    and alerts are exact; a busy zone spreads over every partition, and what the
    detectors learn about zones the scorers share (``detector.detect.ZoneMemory``).
    A hot initiator (``hot``) gets a sub-key by the host its connection goes to."""
    initiator, responder = model.connection_hosts(event)
    if hot is None:
        return initiator.encode()
    return hot.key(initiator.encode(), responder.encode())


class HotKeys:
    """Initiator hosts above ``share`` of the connections seen lately are hot: each of
    their connections is keyed by the initiator and a sub-key chosen by the host it goes
    to (the same for a connection's request and reply), one sub-key per partition of
    the ``spread`` the topic has, so the host's connections spread evenly over all of
    them. A NAT gateway or a DNS forwarder then no longer caps one partition; its
    per-initiator detectors see its connections to each destination whole, but a sweep
    of many destinations only in part (docs/scaling.md).

    "Lately": the counts are halved every ``window`` connections, so a host that cools
    down is one key again; nothing is hot before ``least`` connections were seen."""

    def __init__(self, share: float, spread: int, window: int = 50_000, least: int = 1_000):
        self.share = share
        self.spread = spread
        self.window = window
        self.least = least
        self.counts: dict[bytes, int] = {}
        self.total = 0
        self._left = window
        self._subkeys: dict[bytes, list[bytes]] = {}  # hot initiator -> one key per partition

    def key(self, initiator: bytes, responder: bytes) -> bytes:
        counts = self.counts
        n = counts.get(initiator, 0) + 1
        counts[initiator] = n
        self.total += 1
        self._left -= 1
        if self._left <= 0:
            self._halve()
        if n <= self.share * self.total or self.total < self.least:
            return initiator
        subkeys = self._subkeys.get(initiator) or self._split(initiator)
        return subkeys[zlib.crc32(responder) % len(subkeys)]

    def resize(self, spread: int) -> None:
        """The topic has ``spread`` partitions now: sub-keys are chosen again."""
        if spread != self.spread:
            self.spread = spread
            self._subkeys.clear()

    def hot(self) -> list[bytes]:
        """The hot initiators now."""
        return [k for k, n in self.counts.items() if n > self.share * self.total]

    def _split(self, initiator: bytes) -> list[bytes]:
        """Sub-keys of ``initiator`` that the producer puts on different partitions, one
        for each partition (as far as the first few hundred candidates reach)."""
        found: dict[int, bytes] = {}
        for n in range(64 * self.spread):
            key = b"%s~%d" % (initiator, n)
            found.setdefault(key_partition(key, self.spread), key)
            if len(found) == self.spread:
                break
        if len(self._subkeys) >= 1_000:  # hot hosts are few: a bound all the same
            self._subkeys.clear()
        ordered = [found[p] for p in sorted(found)]
        turn = zlib.crc32(initiator) % len(ordered)  # hot hosts that share a destination
        subkeys = self._subkeys[initiator] = ordered[turn:] + ordered[:turn]  # spread too
        return subkeys

    def _halve(self) -> None:
        self.counts = {k: n >> 1 for k, n in self.counts.items() if n > 1}
        self.total = sum(self.counts.values())
        self._left = self.window


class NormalizeLoop(StageLoop):
    """Raw records -> events partitioned by initiator; runs in its own thread."""

    name = "normalize"

    def __init__(
        self,
        settings: Settings,
        model: Callable[[], CompiledModel],
        scored: Callable[[], Collection[int]] | None = None,
    ) -> None:
        super().__init__(settings)
        self.model = model  # the newest model, read once per batch
        self.scored = scored  # the normalized partitions this worker scores, if it scores
        self.sent_messages = self.sent_events = 0  # to the normalized topic
        self._failed_batches = 0  # in a row
        share, spread = settings.worker.hot_key_share, settings.topics.partitions
        self.hot = HotKeys(share, spread) if share < 1 else None
        self._partitions, self._counted = 0, 0.0  # of the normalized topic, when counted
        topics = settings.topics
        namespace = settings.elasticsearch.namespace  # the events' data_stream.namespace
        self._normalizers = {
            topics.raw(f): Normalizer(
                f, lambda: ParseOptions(reference_time=time.time(), namespace=namespace)
            )
            for f in topics.families
        }

    def _spread(self, producer: Producer) -> int:
        """The normalized topic's partitions: waited for as the stage starts (0 if it is
        stopped first), read again every minute (partitions added to it are used from
        then on, as Kafka's own producer would; a failed read keeps the count)."""
        now = time.monotonic()
        if self._partitions and now - self._counted < 60:
            return self._partitions
        topic = self.settings.topics.normalized
        found = len(self._partitions_of(producer, topic, wait=not self._partitions))
        self._counted = now
        if found and found != self._partitions:
            self._partitions = found
            if self.hot is not None:
                self.hot.resize(found)
        return self._partitions

    def _loop(self) -> None:
        producer = self._producer()
        if not self._spread(producer):
            return  # stopped before the topic was there
        consumer = self._consumer(normalize_group(self.settings))
        self._subscribe(consumer, list(self._normalizers))
        ahead = _Ahead(self.settings, self.scored)
        held = False
        METRICS.normalize_held.set(0)
        try:
            while not self._stop.is_set():
                far = ahead.too_far(self.sent_events / max(self.sent_messages, 1))
                if far or held:  # paused again while far: a rebalance may have added some
                    (consumer.pause if far else consumer.resume)(consumer.assignment())
                    held = far
                    METRICS.normalize_held.set(int(held))
                # while held, this only keeps the group membership
                messages = consumer.consume(self.settings.worker.batch_size, timeout=0.2)
                if messages:
                    self._batch(consumer, producer, messages)
        finally:
            ahead.close()
            consumer.close()

    def _batch(self, consumer: Consumer, producer: Producer, messages: list[Message]) -> None:
        topics = self.settings.topics
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(str(err))

        model = self.model()  # the whole batch is keyed by one model, named in its messages
        headers: list[tuple[str, str | bytes | None]] = [(MODEL_HEADER, model.version.encode())]
        spread = self._spread(producer)
        by_partition: dict[int, list[bytes]] = {}  # of the normalized topic
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
            raw = message.value() or b""
            events, dead = normalizer.normalize(raw, topic, partition, offset, message.key())
            for event in events:
                try:
                    key = score_key(model, event, self.hot)
                    encoded = orjson.dumps(event)
                except Exception as exc:  # what the event carries cannot travel: this record
                    why = f"the event cannot be carried: {type(exc).__name__}: {exc}"
                    dead.append(dead_letter(raw, topic, partition, offset, "normalize", why,
                                            normalizer.family))  # fmt: skip
                    continue
                by_partition.setdefault(key_partition(key, spread), []).append(encoded)
            if dead:
                METRICS.parse_errors.labels(normalizer.family).inc(len(dead))
                METRICS.dlq_writes.labels("normalize").inc(len(dead))
                for letter in dead:
                    produce(producer, topics.dlq, None, orjson.dumps(letter), delivered)
        for topic, count in counts.items():
            METRICS.records_in.labels(topic).inc(count)
        for where, encoded_events in by_partition.items():
            for batch in pack(encoded_events):
                produce(producer, topics.normalized, None, batch, delivered, headers, where)
                self.sent_messages += 1
            self.sent_events += len(encoded_events)
        while producer.flush(1.0) > 0:
            pass  # the producer retries by itself while the broker is away
        if failures:  # do the batch again, after the retry policy's wait
            for (topic, partition), offset in first.items():
                consumer.seek(TopicPartition(topic, partition, offset))
            self._failed_batches += 1
            self.policy.pause("normalize-kafka", "kafka", self._failed_batches,
                              f"{len(failures)} deliveries failed ({failures[0]}); doing the "
                              "batch again", self.waiting)  # fmt: skip
            return
        if self._failed_batches:
            self._failed_batches = 0
            self.waiting.end()
        self._commit(consumer, last)


class _Ahead:
    """Whether the normalize stage is too far ahead of the score stage: more than
    ``worker.normalize_ahead`` events in the messages of the normalized topic not yet
    committed by the score stage's group (counted at this stage's mean events per
    message), read every half second. In a worker that also scores, only its own
    partitions count, so a slow scorer elsewhere never holds it up.

    Normalizing far ahead gains nothing: in a worker running both stages it takes the
    interpreter from the scorer, and a long backlog would pile up in the topic."""

    def __init__(self, settings: Settings, scored: Callable[[], Collection[int]] | None) -> None:
        self.limit = settings.worker.normalize_ahead
        self.topic = settings.topics.normalized
        self.scored = scored
        self._client: Consumer | None = None
        if self.limit:
            self._client = Consumer({**settings.kafka.client_config("normalize-ahead"),
                                     "group.id": settings.worker.app_id,  # only read, never joined
                                     "enable.auto.commit": False})  # fmt: skip
        self._all: list[int] = []
        self._checked = 0.0
        self._far = self._failing = False

    def too_far(self, events_per_message: float) -> bool:
        now = time.monotonic()
        if self._client is None or now - self._checked < 0.5:
            return self._far
        self._checked = now
        try:
            self._far = self.behind(self._client) * events_per_message > self.limit
            self._failing = False
        except KafkaException as exc:  # cannot tell: go on as before
            if not self._failing:  # once, not twice a second through a broker outage
                log.warning("could not read the score stage's progress: %s", exc)
            self._failing = True
        return self._far

    def behind(self, client: Consumer) -> int:
        """Messages of the counted partitions the score stage has yet to commit."""
        if self.scored is not None:
            partitions = sorted(self.scored())
        else:
            if not self._all:
                found = client.list_topics(self.topic, timeout=5).topics[self.topic]
                self._all = sorted(found.partitions)
            partitions = self._all
        counted = [TopicPartition(self.topic, p) for p in partitions]
        return sum(group_lag(client, counted, timeout=5).values())

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
