"""The score stage's work, apart from faust: one ``flows.normalized`` message in,
what to send out (``flows.events``, ``flows.alerts``, ``flows.dlq``).

The faust agent in :mod:`streams.app` feeds it the messages of its partitions and
sends what it returns, waiting for Kafka's acknowledgement before faust may commit
them; everything else — the model switch, placing and scoring, dead letters for
what one event causes, the detector state snapshot — is here, and unit-tested
without a broker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from detector.detect import Alert, event_time
from detector.model import CompiledModel
from streams.incidents import ALERTS_PARTITION
from streams.metrics import METRICS
from streams.pipeline import Scorer, dead_letter, spans
from streams.settings import TopicSettings

__all__ = ["ScoreStage", "Send"]

log = logging.getLogger("segwatch.score")

Send = tuple[str, bytes | None, bytes, int | None, list[tuple[str, bytes]] | None]
"""topic, key, value, partition, headers"""

HEADS_HEADER = "segwatch-heads"
"""Of a ``flows.events`` message: ``[[event.id, event.dataset], ...]`` of its events, in
order, so the index stage has them without decoding the events."""


class _State(Protocol):
    def save(self, partition: int, engine: Any) -> None: ...


def events_of(value: bytes) -> list[dict[str, Any]] | None:
    """The events of a ``flows.normalized`` message, or None if it is not an array of them."""
    try:
        batch = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(batch, list) and all(isinstance(event, dict) for event in batch):
        return batch
    return None


@dataclass
class ScoreStage:
    """Places and scores normalized messages; ``state`` snapshots each partition's
    detectors (the faust table); ``learnt``, if given, returns what other scorers
    learnt since it was last called (``streams.state.ZoneFeed.take``)."""

    topics: TopicSettings
    scorer: Scorer
    state: _State
    learnt: Callable[[], tuple[dict[int, int], dict[int, dict[str, Any]]]] | None = None

    def switch(self, model: CompiledModel | None) -> None:
        """Score with ``model`` from now on (None, or the model in use: nothing changes)."""
        current = self.scorer.model
        if model is None or model.version == current.version:
            return
        METRICS.model_info.labels(current.model.name, current.version).set(0)
        self.scorer.switch(model)
        METRICS.model_info.labels(model.model.name, model.version).set(1)
        log.warning("switched to model %s", model.version)

    def message(self, value: bytes, key: bytes | None, partition: int, offset: int) -> list[Send]:
        """What one message of partition ``partition`` makes: its scored events (a batch
        of ``flows.events``), the alerts it opened or changed, and a
        dead letter for each event that could not be scored (or for the message, if it
        is not an array of events)."""
        topics = self.topics
        batch = events_of(value)
        if batch is None:  # not the normalize stage's
            METRICS.dlq_writes.labels("score").inc()
            letter = dead_letter(value, topics.normalized, partition, offset, "score",
                                 "not a JSON array of events")  # fmt: skip
            return [(topics.dlq, None, orjson.dumps(letter), None, None)]
        METRICS.records_in.labels(topics.normalized).inc(len(batch))
        if self.learnt is not None:
            self._learn()
        engine = self.scorer.engine(partition)
        sends: list[Send] = []
        encoded: list[bytes] = []
        heads: list[tuple[str, str]] = []
        last: dict[str, Any] | None = None
        for event in batch:
            try:
                _, alert = self.scorer.score(event, partition)
                one = orjson.dumps(event)  # whole: 1.5 us an event (decoding it costs 9)
                head = event["event"]
                ident = (str(head["id"]), str(head.get("dataset") or ""))
            except Exception as exc:  # what one event causes stays with that event
                sends.append(self._refused(event, partition, offset, exc))
                continue
            encoded.append(one)
            heads.append(ident)
            last = event
            if alert is not None:
                sends.append(self.alert(alert))
        if last is not None:
            sends += [self.alert(a) for a in engine.flush(event_time(last))]
        self.state.save(partition, engine)
        for start, end in spans(encoded):
            batch_heads = [(HEADS_HEADER, orjson.dumps(heads[start:end]))]
            sends.append((topics.events, key, b"[" + b",".join(encoded[start:end]) + b"]", None,
                          batch_heads))  # fmt: skip
        return sends

    def _learn(self) -> None:
        """Take in what other scorers learnt; a snapshot this version cannot read is
        left out (logged), never a reason to stop scoring."""
        assert self.learnt is not None
        paths, snapshots = self.learnt()
        self.scorer.memory.merge_paths(paths)
        for elsewhere, snapshot in snapshots.items():
            try:
                self.scorer.remote(elsewhere, snapshot)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                log.warning("the snapshot of partition %d is left out: %s: %s", elsewhere,
                            type(exc).__name__, exc)  # fmt: skip

    def flush(self) -> list[Send]:
        """The alert changes held back while the stream was quiet."""
        return [self.alert(a) for engine in self.scorer.engines.values() for a in engine.flush()]

    def alert(self, alert: Alert) -> Send:
        """An alert (new or changed) for ``flows.alerts``: all on one partition, keyed by
        fingerprint, so the incident stage sees every one in order."""
        METRICS.alerts_raised.inc()
        doc = orjson.dumps(alert.to_document())
        return (self.topics.alerts, alert.fingerprint.encode(), doc, ALERTS_PARTITION, None)

    def _refused(self, event: dict[str, Any], partition: int, offset: int,
                 exc: Exception) -> Send:  # fmt: skip
        METRICS.dlq_writes.labels("score").inc()
        why = f"the event could not be scored: {type(exc).__name__}: {str(exc)[:300]}"
        log.error("%s (%s)", why, (event.get("event") or {}).get("id"))
        try:
            raw = orjson.dumps(event)
        except TypeError:  # not even JSON: its text, as far as Python can tell
            raw = repr(event)[:65536].encode()
        letter = dead_letter(raw, self.topics.normalized, partition, offset, "score", why)
        return (self.topics.dlq, None, orjson.dumps(letter), None, None)
