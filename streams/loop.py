"""A pipeline stage on confluent-kafka in a thread of the worker (normalize, index,
incidents, each sink's delivery).

Stateless stages need nothing of faust's, and they are where raw client speed
matters: a faust agent pays about 100 us per Kafka message and runs on the one
event loop that also scores. Each such stage consumes in batches, writes what it
makes, waits until that was acknowledged and only then commits the batch's
offsets: at least once, never lost.

A stage is supervised: while a dependency cannot take its work it waits (the
retry policy, :mod:`streams.retry`), keeping its consumer group membership, and
says on what (``status()``, the worker's ``/readyz``); an unexpected error starts
its loop again after a backoff (counted, logged); only a
:class:`~streams.errors.Fatal` error stops it for good (``failed``: the worker's
``/healthz`` fails).
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streams.errors import Fatal, Unavailable
from streams.metrics import METRICS
from streams.retry import RetryPolicy, Stopped, Waiting
from streams.settings import Settings

__all__ = ["StageLoop", "produce"]


class StageLoop(abc.ABC):
    """Runs :meth:`_loop` in its own thread, supervised; :meth:`stop` ends it after the
    batch in hand. ``failed`` holds the fatal error that stopped it, if one did."""

    name = "stage"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.group: str | None = None  # its consumer group, once it has made its consumer
        self._owned: tuple[tuple[str, int], ...] = ()  # its assignment, kept by the callbacks
        self.log = logging.getLogger(f"segwatch.{self.name}")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed: BaseException | None = None
        self.waiting = Waiting(self.name)
        self.policy = RetryPolicy(settings.retry, self._stop)
        self.restarts = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def status(self) -> dict[str, Any]:
        """For /readyz: running, waiting (on what, why, since when) or failed."""
        waiting = self.waiting.report()
        state = "failed" if self.failed else "waiting" if waiting else (
            "running" if self.running else "stopped")  # fmt: skip
        body: dict[str, Any] = {"state": state, "restarts": self.restarts}
        if waiting:
            body["waiting"] = waiting
        if self.failed is not None:
            body["error"] = str(self.failed)
        return body

    def _run(self) -> None:
        delay = self.settings.retry.initial_seconds
        while not self._stop.is_set():
            try:
                self._loop()
                return
            except Stopped:
                return
            except Fatal as exc:  # nothing changes until an operator does
                self.failed = exc
                self.log.critical("the %s stage stopped: %s", self.name, exc)
                return
            except Exception as exc:  # a surprise: start again, never silently
                self.restarts += 1
                METRICS.stage_restarts.labels(self.name).inc()
                self.waiting.begin("restart", f"{type(exc).__name__}: {exc}")
                self.log.exception("the %s stage failed; starting it again in %.0f s",
                                   self.name, delay)  # fmt: skip
                self._stop.wait(delay)
                delay = min(delay * 2, self.settings.retry.max_seconds)
                self.waiting.end()

    @abc.abstractmethod
    def _loop(self) -> None:
        """Consume, work, commit, until :meth:`stop`."""

    def _position(self, message: Message) -> tuple[str, int, int] | None:
        """(topic, partition, offset) of a consumed message; None (logged) for an error."""
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if message.error() is not None or topic is None or partition is None or offset is None:
            self.log.warning("consume error on %s: %s", topic, message.error())
            return None
        return topic, partition, offset

    def _commit(self, consumer: Consumer, last: dict[tuple[str, int], int]) -> None:
        """Commit past the last offset of each (topic, partition) of a finished batch."""
        try:
            consumer.commit(
                offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last.items()],
                asynchronous=False,
            )
        except KafkaException as exc:  # e.g. a rebalance took the partitions: read again
            self.log.warning("offsets not committed (%s): the batch will be read again", exc)

    def _write(
        self,
        producer: Producer,
        topic: str,
        messages: list[tuple[bytes | None, bytes]],
        what: str,
    ) -> None:
        """Write ``(key, value)`` messages and wait for Kafka's acknowledgement of each,
        writing the failed ones again (under the retry policy) until it comes: what
        follows — a commit — must not run before. ``what`` names them in the log."""
        pending = messages

        def attempt() -> None:
            nonlocal pending
            failed: list[tuple[bytes | None, bytes]] = []
            errors: list[str] = []

            def delivered(err: KafkaError | None, msg: Message) -> None:
                if err is not None:
                    failed.append((msg.key(), msg.value() or b""))
                    errors.append(err.str())

            for key, value in pending:
                produce(producer, topic, key, value, delivered)
            while producer.flush(1.0) > 0:
                pass  # the producer retries by itself while the broker is away
            pending = failed
            if failed:
                raise Unavailable("kafka", f"{len(failed)} {what} not delivered to {topic}: "
                                  f"{errors[0]}")  # fmt: skip

        if pending:
            self.policy.call(f"{self.name}-kafka", "kafka", attempt, self.waiting)

    @staticmethod
    def _take(consumer: Consumer, most: int, wait: float) -> list[Message]:
        """Up to ``most`` messages: the first as soon as one comes (waiting at most
        ``wait`` seconds), then what is already fetched. (``consume(n, timeout)`` would
        wait for ``n`` or the timeout: a lone page would wait the whole timeout.)"""
        first = consumer.poll(wait)
        if first is None:
            return []
        return [first, *consumer.consume(most - 1, timeout=0)] if most > 1 else [first]

    def _idle(self, consumer: Consumer, seconds: float) -> None:
        """Wait, polling with the partitions paused: the group keeps this member (a
        wait longer than ``max.poll.interval.ms`` would make it leave)."""
        assignment = consumer.assignment()
        consumer.pause(assignment)
        try:
            deadline = time.monotonic() + seconds
            while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
                message = consumer.poll(min(left, 1.0))
                position = self._position(message) if message is not None else None
                if position is not None:  # of a partition assigned meanwhile: read it later
                    consumer.seek(TopicPartition(*position))
        finally:
            consumer.resume(consumer.assignment())

    def lag_label(self, topic: str) -> str:
        """The ``topic`` label of its lag (``flows.alerts@incidents``: each consumer of a
        topic shared by several stages has a name of its own)."""
        return topic

    def owned(self) -> list[tuple[str, int]]:
        """The (topic, partition)s its consumer is assigned now (none before it starts or
        after it closed): the lag this worker reports is of these only. Read from what the
        rebalance callbacks kept, never from the consumer: another thread's call into a
        consumer that is inside ``poll`` blocks until that poll returns."""
        return list(self._owned)

    def _subscribe(
        self,
        consumer: Consumer,
        topics: list[str],
        on_assign: Callable[[Consumer, list[TopicPartition]], None] | None = None,
        on_revoke: Callable[[Consumer, list[TopicPartition]], None] | None = None,
    ) -> None:
        """Subscribe, keeping the assignment for :meth:`owned` (and calling the stage's
        own callbacks, if any, after)."""

        def assigned(c: Consumer, partitions: list[TopicPartition]) -> None:
            self._owned = tuple(sorted({*self._owned, *((tp.topic, tp.partition)
                                                        for tp in partitions)}))  # fmt: skip
            if on_assign is not None:
                on_assign(c, partitions)

        def revoked(c: Consumer, partitions: list[TopicPartition]) -> None:
            gone = {(tp.topic, tp.partition) for tp in partitions}
            self._owned = tuple(tp for tp in self._owned if tp not in gone)
            if on_revoke is not None:
                on_revoke(c, partitions)

        consumer.subscribe(topics, on_assign=assigned, on_revoke=revoked, on_lost=revoked)

    def _partitions_of(self, client: Consumer | Producer, topic: str,
                       wait: bool = True) -> list[int]:  # fmt: skip
        """The partitions of ``topic``, once it exists (waiting, and saying so on
        ``/readyz``); none if the stage is stopped meanwhile, or at the first failed
        read when not to ``wait``."""
        while not self._stop.is_set():
            try:
                found = client.list_topics(topic, timeout=10).topics.get(topic)
                why = f"the topic {topic} does not exist yet"
            except KafkaException as exc:
                found, why = None, str(exc)
            if found is not None and found.error is None and found.partitions:
                if wait:
                    self.waiting.end()
                return sorted(found.partitions)
            if not wait:
                return []
            self.waiting.begin("kafka", why)
            self._stop.wait(1.0)
        return []

    def _consumer(self, group: str, **extra: Any) -> Consumer:
        self.group = group
        self._owned = ()
        return Consumer({
            **self.settings.kafka.client_config(self.name),
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": int(self.settings.worker.session_timeout_seconds * 1000),
            **extra,
        })  # fmt: skip

    def _producer(self) -> Producer:
        return Producer({
            **self.settings.kafka.client_config(self.name),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
            "partitioner": "murmur2_random",  # the Java client's: keys land where Kafka's would
        })  # fmt: skip


def produce(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes,
    on_delivery: Callable[[KafkaError | None, Message], None],
    headers: list[tuple[str, str | bytes | None]] | None = None,
    partition: int | None = None,
) -> None:
    """Queue one message (on ``partition``, or where its key hashes to), waiting for
    room when the local queue is full."""
    where = -1 if partition is None else partition  # -1: where the partitioner puts it
    while True:
        try:
            producer.produce(topic, value, key=key, partition=where, on_delivery=on_delivery,
                             headers=headers)  # fmt: skip
            return
        except BufferError:  # the local queue is full: let deliveries drain
            producer.poll(0.1)
