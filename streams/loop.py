"""A pipeline stage on confluent-kafka in a thread of the worker (normalize, index).

Stateless stages need nothing of faust's, and they are where raw client speed
matters: a faust agent pays about 100 us per Kafka message and runs on the one
event loop that also scores. Each such stage consumes in batches, writes what it
makes, waits until that was acknowledged and only then commits the batch's
offsets: at least once, never lost.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streams.settings import Settings

__all__ = ["StageLoop", "produce"]


class StageLoop(abc.ABC):
    """Runs :meth:`_loop` in its own thread; :meth:`stop` ends it after the batch in
    hand. ``failed`` holds what stopped it otherwise (the worker's /healthz says so)."""

    name = "stage"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = logging.getLogger(f"segwatch.{self.name}")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by the worker's health, never silent
            self.failed = exc
            self.log.exception("the %s stage stopped", self.name)

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
        writing the failed ones again until it comes (what follows — a commit — must
        not run before). ``what`` names them in the log."""
        while messages:
            failed: list[tuple[bytes | None, bytes]] = []

            def delivered(err: KafkaError | None, msg: Message, failed: Any = failed) -> None:
                if err is not None:
                    failed.append((msg.key(), msg.value()))

            for key, value in messages:
                produce(producer, topic, key, value, delivered)
            while producer.flush(1.0) > 0:
                pass
            if failed:
                self.log.error("%d %s not delivered; trying again", len(failed), what)
                time.sleep(1.0)
            messages = failed

    def _consumer(self, group: str, **extra: Any) -> Consumer:
        return Consumer({
            **self.settings.kafka.client_config(),
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": int(self.settings.worker.session_timeout_seconds * 1000),
            **extra,
        })  # fmt: skip

    def _producer(self) -> Producer:
        return Producer({
            **self.settings.kafka.client_config(),
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
) -> None:
    """Queue one message, waiting for room when the local queue is full."""
    while True:
        try:
            producer.produce(topic, value, key=key, on_delivery=on_delivery)
            return
        except BufferError:  # the local queue is full: let deliveries drain
            producer.poll(0.1)
