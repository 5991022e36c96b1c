"""The incident stage (a :class:`~streams.loop.StageLoop`): ``flows.alerts`` ->
incidents -> ``flows.incidents``: the latest incident documents and the pages.

Alerts are few, so one consumer (group ``<app_id>-incidents``) sees them all — the
scorer writes every alert to partition 0 of ``flows.alerts``, and a member of the
group that does not hold that partition idles — and keeps global state: the
:class:`~detector.incidents.IncidentBook`, in the compacted topic
``<app_id>-incidents-state``. For each batch of alerts it feeds the book, ticks the
stream's clock (the latest alert's time, moving on with the wall clock while nothing
comes), writes the incidents' changes to ``flows.incidents`` (keyed by incident) and
waits for Kafka's acknowledgement, writes the state and waits again, and only then
commits the alerts' offsets.

Nothing here talks to Elasticsearch or a webhook: each target reads
``flows.incidents`` in its own delivery stage (:mod:`streams.deliver`), so a target
that is down holds only its own backlog, in Kafka. After a crash the state brings
back the book: a page written just before a crash can be written again, with the
same delivery id (``X-Segwatch-Delivery``; PagerDuty folds a repeat into the
incident by its ``dedup_key``).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from detector.events import parse_stamp
from detector.incidents import IncidentBook, Page
from streams.loop import StageLoop
from streams.metrics import METRICS
from streams.pipeline import dead_letter
from streams.settings import Settings
from streams.topics import TopicSpec, ensure_topics

__all__ = ["ALERTS_PARTITION", "IncidentLoop", "StreamClock", "incident_group", "state_topic"]

ALERTS_PARTITION = 0  # every alert goes here: one consumer sees them all, in order
_STATE_KEY = b"state"
_MAX_STATE_BYTES = 16 * 1024 * 1024


def incident_group(settings: Settings) -> str:
    """The consumer group of the incident stage (``flows.alerts``' committed offsets)."""
    return f"{settings.worker.app_id}-incidents"


def state_topic(settings: Settings) -> str:
    """The compacted topic the incident stage keeps its state in."""
    return f"{settings.worker.app_id}-incidents-state"


class StreamClock:
    """The stream's time: the latest event time seen, moving on with the wall clock
    while nothing newer comes (so incidents of a replayed past resolve too)."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self.wall = wall
        self.event = 0.0
        self._at = wall()

    def saw(self, when: float) -> None:
        if when > self.event:
            self.event, self._at = when, self.wall()

    def now(self) -> float:
        return self.event + (self.wall() - self._at) if self.event else 0.0


class IncidentLoop(StageLoop):
    """Alerts -> incidents -> ``flows.incidents``; runs in its own thread."""

    name = "incidents"

    def lag_label(self, topic: str) -> str:
        return f"{topic}@incidents"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.book = IncidentBook(settings.incidents)
        self.clock = StreamClock()
        self.active = False  # holds the alerts' partition, state loaded
        self._assigned: set[int] | None = None  # set by the rebalance callbacks
        self._producer_: Producer | None = None

    # --- the loop ------------------------------------------------------------------

    def _loop(self) -> None:
        settings = self.settings
        self.policy.call("incidents-kafka", "kafka", lambda: ensure_topics(settings.kafka, [
            TopicSpec(state_topic(settings), 1, settings.topics.replication_factor,
                      {"cleanup.policy": "compact", "max.message.bytes": str(_MAX_STATE_BYTES)},
                      "the incident stage's state")]), self.waiting)  # fmt: skip
        self._producer_ = producer = Producer({
            **settings.kafka.client_config(self.name), "acks": "all", "enable.idempotence": True,
            "message.max.bytes": _MAX_STATE_BYTES + 1024, "compression.type": "lz4",
        })  # fmt: skip
        consumer = self._consumer(incident_group(settings), **{"max.poll.interval.ms": 3_600_000})
        self._subscribe(consumer, [settings.topics.alerts], self._on_assign, self._on_revoke)
        self.active = False
        try:
            while not self._stop.is_set():
                messages = self._take(consumer, 100, 0.1)
                if self._assigned is not None:
                    self._take_over(self._assigned)
                    self._assigned = None
                if not self.active:
                    continue
                last, pages, touched = self._observe(messages)
                pages += self.book.tick(self.clock.now())
                changes = self._changes(pages, touched)
                if changes:
                    self._write(producer, settings.topics.incidents, changes, "incident changes")
                if last or changes:
                    self._save()
                if last:
                    self._commit(consumer, last)
                METRICS.incidents_open.set(len(self.book.open))
        finally:
            if self.active:
                self._save()
            consumer.close()
            producer.flush(10)

    def _observe(self, messages: list[Message]
                 ) -> tuple[dict[tuple[str, int], int], list[Page], set[str]]:  # fmt: skip
        last: dict[tuple[str, int], int] = {}
        pages: list[Page] = []
        touched: set[str] = set()
        for message in messages:
            position = self._position(message)
            if position is None:
                continue
            topic, partition, offset = position
            last[(topic, partition)] = offset
            value = message.value() or b""
            try:
                doc = orjson.loads(value)
                fingerprint = doc["segwatch"]["alert"]["fingerprint"]
                self.clock.saw(parse_stamp(doc["segwatch"]["alert"]["last_activity"]))
                found = self.book.observe(doc)
            except Exception as exc:  # whatever a record can cause stays with the record
                why = f"not an alert document: {type(exc).__name__}: {exc}"
                self._dead_letter(dead_letter(value, topic, partition, offset, "incidents", why))
                continue
            METRICS.records_in.labels(topic).inc()
            pages += found
            owner = self.book.owner.get(fingerprint)
            if owner is not None:
                touched.add(owner)
        return last, pages, touched

    def _changes(self, pages: list[Page], touched: set[str]) -> list[tuple[bytes | None, bytes]]:
        """``flows.incidents`` messages: every page (for the webhooks), then the latest
        document of every incident that changed (for the incidents index)."""
        changes: list[tuple[bytes | None, bytes]] = []
        latest: dict[str, dict[str, Any]] = {}
        for page in pages:
            ident = page.incident_id
            version = page.incident["segwatch"]["incident"]["version"]
            change = {"id": f"{ident}-{version}-{page.action}", "incident": ident,
                      "action": page.action, "why": page.why, "doc": page.incident}  # fmt: skip
            changes.append((ident.encode(), orjson.dumps(change)))
            latest[ident] = page.incident
            if page.action == "trigger":
                METRICS.incidents_opened.inc()
        for ident in touched - set(latest):
            incident = self.book.open.get(ident)
            if incident is not None:
                latest[ident] = incident.to_document()
        for ident, doc in latest.items():
            version = doc["segwatch"]["incident"]["version"]
            change = {"id": f"{ident}-{version}", "incident": ident, "action": "index",
                      "why": "", "doc": doc}  # fmt: skip
            changes.append((ident.encode(), orjson.dumps(change)))
        return changes

    # --- state -----------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = {tp.partition for tp in partitions}

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.active and any(tp.partition == ALERTS_PARTITION for tp in partitions):
            self._save()  # the next owner starts from here
            self.active = False
        self._assigned = set()

    def _take_over(self, partitions: set[int]) -> None:
        """Become (or stop being) the stage that holds the alerts' partition."""
        holds = ALERTS_PARTITION in partitions
        if holds and not self.active:
            self._restore()
            self.active = True
            self.log.info("incident stage active: %d open incidents", len(self.book.open))
        elif not holds and self.active:
            self._save()
            self.active = False

    def _restore(self) -> None:
        """The latest state from the state topic (none: a fresh start)."""
        self.book = IncidentBook(self.settings.incidents)
        self.clock = StreamClock()
        reader = Consumer({**self.settings.kafka.client_config(self.name), "group.id": "unused",
                           "enable.auto.commit": False})  # fmt: skip
        try:
            tp = TopicPartition(state_topic(self.settings), 0)
            low, high = reader.get_watermark_offsets(tp, timeout=30)
            if high <= low:
                return
            reader.assign([TopicPartition(tp.topic, 0, low)])
            value: bytes | None = None
            position = low
            deadline = time.monotonic() + 120
            while position < high and time.monotonic() < deadline:
                message = reader.poll(1.0)
                if message is None or message.error() is not None:
                    continue
                position = (message.offset() or 0) + 1
                if message.key() == _STATE_KEY:
                    value = message.value()
            if value:
                state = orjson.loads(zlib.decompress(value))
                self.book.load(state["book"])
                self.clock.saw(state.get("clock", 0.0))
        finally:
            reader.close()

    def _save(self) -> None:
        """Write the book, and wait for Kafka's acknowledgement."""
        assert self._producer_ is not None
        state = {"book": self.book.state(), "clock": self.clock.event}
        value = zlib.compress(orjson.dumps(state), 1)
        self._write(self._producer_, state_topic(self.settings), [(_STATE_KEY, value)],
                    "incident state")  # fmt: skip

    def _dead_letter(self, letter: dict[str, Any]) -> None:
        assert self._producer_ is not None
        self._write(self._producer_, self.settings.topics.dlq, [(None, orjson.dumps(letter))],
                    "dead letter")  # fmt: skip
        METRICS.dlq_writes.labels("incidents").inc()

    def status(self) -> dict[str, Any]:
        """For /readyz: the stage's state, whether this worker holds the alerts, how
        many incidents are open."""
        return {**super().status(), "active": self.active, "open": len(self.book.open)}
