"""The incident stage (a :class:`~streams.loop.StageLoop`): ``flows.alerts`` ->
incidents -> the incidents index and the webhooks, one page per incident.

Alerts are few, so one consumer (group ``<app_id>-incidents``) sees them all — the
scorer writes every alert to partition 0 of ``flows.alerts``, and a member of the
group that does not hold that partition idles — and keeps global state: the
:class:`~detector.incidents.IncidentBook` and an outbox of deliveries, in the
compacted topic ``<app_id>-incidents-state``. For each batch of alerts it feeds the
book, ticks the stream's clock (the latest alert's time, moving on with the wall
clock while nothing comes), puts the pages in the outbox, writes the state and
waits for Kafka's acknowledgement, and only then commits the alerts' offsets.

Deliveries leave from the outbox, one sender thread per target (Elasticsearch and
each webhook), so a target that is down holds only its own queue. An entry leaves
the outbox once its target took it (or refused it, logged and counted), and the
state is written again. After a crash or a rebalance the state brings back the
book and the outbox: nothing is lost. A delivery in flight at a crash can be
repeated, with the same delivery id (``X-Segwatch-Delivery``; PagerDuty folds a
repeat into the incident by its ``dedup_key``).
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from elasticsearch import ApiError, Elasticsearch

from detector.events import parse_stamp
from detector.incidents import IncidentBook, Page
from streams.elastic import upsert
from streams.loop import StageLoop
from streams.metrics import METRICS
from streams.pipeline import dead_letter
from streams.settings import Settings
from streams.topics import TopicSpec, ensure_topics
from streams.webhooks import Refused, RetryLater, WebhookSink

__all__ = ["ALERTS_PARTITION", "IncidentLoop", "Outbox", "StreamClock", "incident_group",
           "state_topic"]  # fmt: skip

ALERTS_PARTITION = 0  # every alert goes here: one consumer sees them all, in order
_STATE_KEY = b"state"
_MAX_STATE_BYTES = 16 * 1024 * 1024
ELASTICSEARCH = "elasticsearch"  # the outbox's name for the incidents index


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


class Outbox:
    """Deliveries waiting for their targets, in order per target; thread-safe.

    Entries: ``{"id", "incident", "action", "why", "doc"}``. A newer update of an
    incident replaces one still waiting (the receiver wants the latest state); for
    the incidents index every newer document does."""

    def __init__(self, targets: list[str]) -> None:
        self._lock = threading.Lock()
        self.queues: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
        self.waiting = {t: threading.Event() for t in targets}  # set when a queue gets one
        self.changed = False  # since the state was last written

    def add(self, target: str, entry: dict[str, Any]) -> None:
        with self._lock:
            queue = self.queues.setdefault(target, [])
            for i, waiting in enumerate(queue):
                same = waiting["incident"] == entry["incident"]
                if same and (target == ELASTICSEARCH or waiting["action"] == entry["action"]
                             == "update"):  # fmt: skip
                    queue[i] = entry
                    break
            else:
                queue.append(entry)
            self.changed = True
        if target in self.waiting:
            self.waiting[target].set()

    def first(self, target: str) -> dict[str, Any] | None:
        with self._lock:
            queue = self.queues.get(target)
            return queue[0] if queue else None

    def done(self, target: str, entry: dict[str, Any]) -> None:
        with self._lock:
            queue = self.queues.get(target, [])
            if queue and queue[0] is entry:
                queue.pop(0)
            elif entry in queue:
                queue.remove(entry)
            self.changed = True

    def sizes(self) -> dict[str, int]:
        with self._lock:
            return {t: len(q) for t, q in self.queues.items()}

    def state(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return {t: list(q) for t, q in self.queues.items()}

    def load(self, state: dict[str, list[dict[str, Any]]]) -> None:
        with self._lock:
            for target, queue in state.items():
                if target in self.queues:  # a target no longer configured: nothing to send
                    self.queues[target] = list(queue)
                    self.waiting[target].set()
            self.changed = False


class _Sender(threading.Thread):
    """Delivers one target's queue, in order, trying again until the target takes each."""

    def __init__(self, target: str, outbox: Outbox, send: Callable[[dict[str, Any]], bool],
                 stop: threading.Event, log: Any) -> None:  # fmt: skip
        super().__init__(name=f"page-{target}", daemon=True)
        self.target, self.outbox, self.send = target, outbox, send
        self.stopped, self.log = stop, log
        self.waiting_until = 0.0  # while the target asked to wait

    def run(self) -> None:
        while not self.stopped.is_set():
            entry = self.outbox.first(self.target)
            if entry is None:
                wake = self.outbox.waiting[self.target]
                wake.wait(0.5)
                wake.clear()
                continue
            try:
                if self.send(entry):
                    METRICS.pages_sent.labels(self.target, entry["action"]).inc()
            except RetryLater as later:
                METRICS.webhook_failures.labels(self.target).inc()
                self.log.warning("%s", later)
                self.waiting_until = later.at
                self.stopped.wait(max(later.at - time.time(), 0.5))
                continue
            except Refused as refused:
                METRICS.webhook_failures.labels(self.target).inc()
                self.log.error("%s (delivery %s dropped)", refused, entry["id"])
            except Exception:  # a bug or a target's surprise must not lose the queue
                self.log.exception("delivery %s to %s failed; trying again", entry["id"],
                                   self.target)  # fmt: skip
                self.stopped.wait(5.0)
                continue
            self.waiting_until = 0.0
            self.outbox.done(self.target, entry)


class IncidentLoop(StageLoop):
    """Alerts -> incidents -> pages; runs in its own thread, its senders in theirs."""

    name = "incidents"

    def __init__(self, settings: Settings, hooks: list[WebhookSink]) -> None:
        super().__init__(settings)
        self.hooks = {hook.target.name: hook for hook in hooks}
        self.book = IncidentBook(settings.incidents)
        self.outbox = Outbox([ELASTICSEARCH, *self.hooks])
        self.clock = StreamClock()
        self.active = False  # holds the alerts' partition, state loaded
        self._senders: list[_Sender] = []
        self._senders_stop = threading.Event()
        self._assigned: set[int] | None = None  # set by the rebalance callbacks
        self._producer_: Producer | None = None
        self._es: Elasticsearch | None = None

    # --- the loop ------------------------------------------------------------------

    def _loop(self) -> None:
        settings = self.settings
        ensure_topics(settings.kafka, [TopicSpec(
            state_topic(settings), 1, settings.topics.replication_factor,
            {"cleanup.policy": "compact", "max.message.bytes": str(_MAX_STATE_BYTES)},
            "the incident stage's state")])  # fmt: skip
        self._es = Elasticsearch(**settings.elasticsearch.client_kwargs())
        self._producer_ = producer = Producer({
            **settings.kafka.client_config(), "acks": "all", "enable.idempotence": True,
            "message.max.bytes": _MAX_STATE_BYTES + 1024, "compression.type": "lz4",
        })  # fmt: skip
        consumer = self._consumer(incident_group(settings), **{"max.poll.interval.ms": 3_600_000})
        consumer.subscribe([settings.topics.alerts], on_assign=self._on_assign,
                           on_revoke=self._on_revoke)  # fmt: skip
        try:
            while not self._stop.is_set():
                messages = consumer.consume(100, timeout=0.1)
                if self._assigned is not None:
                    self._take_over(self._assigned)
                    self._assigned = None
                if not self.active:
                    continue
                last, pages, touched = self._observe(messages)
                pages += self.book.tick(self.clock.now())
                self._queue(pages, touched)
                if last or self.outbox.changed:
                    self._save()
                if last:
                    self._commit(consumer, last)
                METRICS.incidents_open.set(len(self.book.open))
                for target, size in self.outbox.sizes().items():
                    METRICS.outbox.labels(target).set(size)
        finally:
            self._stop_senders()
            if self.active:
                self._save()
            consumer.close()
            producer.flush(10)
            self._es.close()

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
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                why = f"not an alert document: {type(exc).__name__}: {exc}"
                self._dead_letter(dead_letter(value, topic, partition, offset, "incidents", why))
                continue
            METRICS.records_in.labels(topic).inc()
            pages += found
            owner = self.book.owner.get(fingerprint)
            if owner is not None:
                touched.add(owner)
        return last, pages, touched

    def _queue(self, pages: list[Page], touched: set[str]) -> None:
        """Every page to every webhook, and the latest document of every incident that
        changed to the incidents index."""
        latest: dict[str, dict[str, Any]] = {}
        for page in pages:
            ident = page.incident_id
            version = page.incident["segwatch"]["incident"]["version"]
            entry = {"id": f"{ident}-{version}-{page.action}", "incident": ident,
                     "action": page.action, "why": page.why, "doc": page.incident}  # fmt: skip
            for target in self.hooks:
                self.outbox.add(target, entry)
            latest[ident] = page.incident
            if page.action == "trigger":
                METRICS.incidents_opened.inc()
        for ident in touched - set(latest):
            incident = self.book.open.get(ident)
            if incident is not None:
                latest[ident] = incident.to_document()
        for ident, doc in latest.items():
            version = doc["segwatch"]["incident"]["version"]
            self.outbox.add(ELASTICSEARCH, {"id": f"{ident}-{version}", "incident": ident,
                                            "action": "index", "why": "", "doc": doc})  # fmt: skip

    # --- state -----------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = {tp.partition for tp in partitions}

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.active and any(tp.partition == ALERTS_PARTITION for tp in partitions):
            self._stop_senders()
            self._save()  # the next owner starts from here
            self.active = False
        self._assigned = set()

    def _take_over(self, partitions: set[int]) -> None:
        """Become (or stop being) the stage that holds the alerts' partition."""
        holds = ALERTS_PARTITION in partitions
        if holds and not self.active:
            self._restore()
            self._start_senders()
            self.active = True
            self.log.info("incident stage active: %d open incidents, outbox %s",
                          len(self.book.open), self.outbox.sizes())  # fmt: skip
        elif not holds and self.active:
            self._stop_senders()
            self._save()
            self.active = False

    def _restore(self) -> None:
        """The latest state from the state topic (none: a fresh start)."""
        self.book = IncidentBook(self.settings.incidents)
        self.outbox = Outbox([ELASTICSEARCH, *self.hooks])
        self.clock = StreamClock()
        reader = Consumer({**self.settings.kafka.client_config(), "group.id": "unused",
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
                self.outbox.load(state["outbox"])
                self.clock.saw(state.get("clock", 0.0))
        finally:
            reader.close()

    def _save(self) -> None:
        """Write the book and the outbox, and wait for Kafka's acknowledgement."""
        assert self._producer_ is not None
        self.outbox.changed = False
        state = {"book": self.book.state(), "outbox": self.outbox.state(),
                 "clock": self.clock.event}  # fmt: skip
        value = zlib.compress(orjson.dumps(state), 1)
        self._write(self._producer_, state_topic(self.settings), [(_STATE_KEY, value)],
                    "incident state")  # fmt: skip

    def _dead_letter(self, letter: dict[str, Any]) -> None:
        assert self._producer_ is not None
        self._write(self._producer_, self.settings.topics.dlq, [(None, orjson.dumps(letter))],
                    "dead letter")  # fmt: skip
        METRICS.dlq_writes.labels("incidents").inc()

    # --- delivery --------------------------------------------------------------------

    def _start_senders(self) -> None:
        self._senders_stop = threading.Event()
        targets: dict[str, Callable[[dict[str, Any]], bool]] = {ELASTICSEARCH: self._index}
        for name, hook in self.hooks.items():
            targets[name] = (lambda h: lambda e: h.deliver(e["doc"], e["action"], e["why"],
                                                           e["id"]))(hook)  # fmt: skip
        self._senders = [_Sender(t, self.outbox, send, self._senders_stop, self.log)
                         for t, send in targets.items()]  # fmt: skip
        for sender in self._senders:
            sender.start()

    def _stop_senders(self) -> None:
        self._senders_stop.set()
        for sender in self._senders:
            sender.join(30)
        self._senders = []

    def _index(self, entry: dict[str, Any]) -> bool:
        """Upsert an incident document (retrying while the node is away)."""
        assert self._es is not None
        try:
            upsert(self._es, self.settings.elasticsearch.incidents_index, entry["incident"],
                   entry["doc"])  # fmt: skip
        except ApiError as exc:  # the mapping refuses it: the dead-letter topic keeps it
            why = f"Elasticsearch refused the incident document: {exc}"
            self._dead_letter(dead_letter(orjson.dumps(entry["doc"]), self.settings.topics.alerts,
                                          ALERTS_PARTITION, -1, "incidents", why))  # fmt: skip
            return False
        return True

    def status(self) -> dict[str, Any]:
        """For /readyz: whether this worker runs the stage now, what waits and for whom."""
        waiting = {s.target: time.strftime("%H:%M:%S", time.gmtime(s.waiting_until))
                   for s in self._senders if s.waiting_until}  # fmt: skip
        return {"active": self.active, "open": len(self.book.open),
                "outbox": self.outbox.sizes(), "waiting": waiting}  # fmt: skip
