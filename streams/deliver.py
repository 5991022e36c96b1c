"""Delivery stages: one per sink, each with its own consumer group, so a target's
backlog waits in Kafka — not in memory, not in front of another target's.

- ``alerts-index``: ``flows.alerts`` -> the alerts index (by fingerprint).
- ``incidents-index``: ``flows.incidents`` (documents) -> the incidents index.
- ``page-<target>``: ``flows.incidents`` (pages) -> one webhook target.

Each takes a batch, delivers it in order under the retry policy (waiting, with
its partitions paused, while the target cannot take it), writes what the target
refused to the dead-letter topic with the reason, and only then commits. A crash
repeats at most the batch in hand, with the same ids (a document id, a delivery
id): the index replaces the document, a receiver deduplicates the page.

The stages that write to Elasticsearch first wait for the index templates
(:class:`TemplateGate`): a write before them would create the index with guessed
mappings, for good.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Message
from elasticsearch import Elasticsearch

from streams.elastic import TemplateReport, install_templates
from streams.errors import Fatal
from streams.loop import StageLoop
from streams.metrics import METRICS
from streams.pipeline import dead_letter
from streams.retry import Stopped
from streams.settings import Settings
from streams.sinks import Item, Sink, deliver, make_sink
from streams.webhooks import WebhookTarget

__all__ = ["DeliveryLoop", "Select", "TemplateGate", "alert_items", "delivery_group",
           "document_items", "index_stage", "page_items", "page_stage"]  # fmt: skip

Select = Callable[[bytes, tuple[str, int, int]], list[Item]]


def delivery_group(settings: Settings, stage: str) -> str:
    """The consumer group of a delivery stage."""
    return f"{settings.worker.app_id}-{stage}"


class TemplateGate(StageLoop):
    """Installs the index templates, retrying until Elasticsearch takes them; the
    stages that write there wait for it (:meth:`wait`)."""

    name = "templates"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.ready = threading.Event()
        self.report: TemplateReport | None = None

    def _loop(self) -> None:
        es = self.settings.elasticsearch
        client = Elasticsearch(**es.client_kwargs())
        try:
            self.report = self.policy.call("templates", "elasticsearch", lambda: install_templates(
                client, es), self.waiting)  # fmt: skip
        finally:
            client.close()
        self.log.info("elasticsearch %s templates: %s; %s", self.report.server_version,
                      self.report.installed, self.report.adaptations)  # fmt: skip
        self.ready.set()

    def wait(self, stage: StageLoop) -> None:
        """Hold ``stage`` until the templates are in; its status says so meanwhile.

        :raises Fatal: the templates cannot be installed (the gate failed).
        :raises Stopped: ``stage`` was stopped meanwhile.
        """
        while not self.ready.is_set():
            if self.failed is not None:
                raise Fatal("elasticsearch", f"the index templates cannot be installed: "
                            f"{self.failed}")  # fmt: skip
            why = self.waiting.reason or "not installed yet"
            stage.waiting.begin("elasticsearch index templates", why)
            if stage._stop.wait(0.5):
                raise Stopped(stage.name)
        stage.waiting.end()


class DeliveryLoop(StageLoop):
    """One sink's stage: ``topic`` through ``select`` (a message -> its items) into the
    sink made by ``make``."""

    def lag_label(self, topic: str) -> str:
        return f"{topic}@{self.name}"

    def __init__(self, settings: Settings, name: str, topic: str, make: Callable[[], Sink],
                 select: Select, gate: TemplateGate | None = None,
                 batch: int = 500) -> None:  # fmt: skip
        self.name = name
        super().__init__(settings)
        self.topic, self.make, self.select, self.gate, self.batch = topic, make, select, gate, batch
        self.delivered = 0

    def _loop(self) -> None:
        if self.gate is not None:
            self.gate.wait(self)
        sink = self.make()
        consumer = self._consumer(delivery_group(self.settings, self.name),
                                  **{"max.poll.interval.ms": 3_600_000})  # fmt: skip
        producer = self._producer()
        policy = self.policy
        policy.sleep = lambda seconds: self._idle(consumer, seconds)  # stay in the group
        self._subscribe(consumer, [self.topic])
        try:
            while not self._stop.is_set():
                messages = self._take(consumer, self.batch, 0.5)
                if messages:
                    self._batch(sink, consumer, producer, messages)
        finally:
            consumer.close()
            producer.flush(10)
            sink.close()

    def _batch(self, sink: Sink, consumer: Any, producer: Any, messages: list[Message]) -> None:
        items: list[Item] = []
        letters: list[bytes] = []
        last: dict[tuple[str, int], int] = {}
        for message in messages:
            position = self._position(message)
            if position is None:
                continue
            last[position[:2]] = position[2]
            value = message.value() or b""
            try:
                items += self.select(value, position)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError,
                    AttributeError) as exc:  # fmt: skip
                why = f"not what {self.name} takes: {type(exc).__name__}: {exc}"
                letters.append(orjson.dumps(dead_letter(value, *position, self.name, why)))
        refused, skipped = deliver(sink, items, self.policy, self.waiting)
        for item, why in refused:
            raw = item.body if isinstance(item.body, bytes) else orjson.dumps(item.body)
            letters.append(orjson.dumps(dead_letter(raw, *item.source, self.name, why)))
            self.log.error("%s (%s): dead-lettered", why, item.id)
        taken = len(items) - len(refused) - skipped
        self.delivered += taken
        METRICS.records_out.labels(sink.name).inc(taken)
        METRICS.refused.labels(sink.name).inc(len(refused))
        if letters:
            self._write(producer, self.settings.topics.dlq, [(None, v) for v in letters],
                        "dead letters")  # fmt: skip
            METRICS.dlq_writes.labels(self.name).inc(len(letters))
        self._commit(consumer, last)


# --- what each delivery stage takes of its topic ---------------------------------------


def alert_items(value: bytes, source: tuple[str, int, int]) -> list[Item]:
    """An alert document of ``flows.alerts``, by fingerprint."""
    doc = orjson.loads(value)
    return [Item(str(doc["segwatch"]["alert"]["fingerprint"]), value, source)]


def document_items(value: bytes, source: tuple[str, int, int]) -> list[Item]:
    """The incident document of an ``index`` change of ``flows.incidents``."""
    change = orjson.loads(value)
    if change["action"] != "index":
        return []
    return [Item(str(change["incident"]), orjson.dumps(change["doc"]), source)]


def page_items(value: bytes, source: tuple[str, int, int]) -> list[Item]:
    """A page (trigger, update, resolve) of ``flows.incidents``, by delivery id."""
    change = orjson.loads(value)
    if change["action"] == "index":
        return []
    if not isinstance(change["doc"], dict):
        raise TypeError("the page's doc is not an incident document")
    return [Item(str(change["id"]), change, source)]


def index_stage(settings: Settings, name: str, topic: str, index: str, select: Select,
                gate: TemplateGate) -> DeliveryLoop:  # fmt: skip
    """A stage writing documents by id into ``index``."""
    es = settings.elasticsearch
    return DeliveryLoop(settings, name, topic,
                        lambda: make_sink("elasticsearch-docs", Elasticsearch(**es.client_kwargs()),
                                          index, name), select, gate)  # fmt: skip


def page_stage(settings: Settings, target: WebhookTarget) -> DeliveryLoop:
    """The stage paging one webhook target."""
    return DeliveryLoop(settings, f"page-{target.name}", settings.topics.incidents,
                        lambda: make_sink(target.kind, target), page_items, batch=50)  # fmt: skip
