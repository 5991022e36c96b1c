"""An in-memory stand-in for the few confluent-kafka calls a stage loop makes, so the
loops' logic (batches, waits, dead letters, commits) is unit-tested without a broker.
The integration tests run the same loops against the real one."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from confluent_kafka import TopicPartition


@dataclass
class Message:
    _topic: str
    _partition: int
    _offset: int
    _value: bytes
    _key: bytes | None = None
    _headers: list[tuple[str, bytes]] | None = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def error(self) -> None:
        return None


@dataclass
class Broker:
    """Topics, and every group's committed offsets. A topic is one log: a message
    written to another of its ``partitions`` keeps that number, and is read in turn."""

    partitions: int = 1  # what list_topics says each topic has
    topics: dict[str, list[Message]] = field(default_factory=dict)
    committed: dict[tuple[str, str], int] = field(default_factory=dict)  # (group, topic)
    consumers: list[MemoryConsumer] = field(default_factory=list)  # every one made

    def append(self, topic: str, value: bytes, key: bytes | None = None,
               partition: int | None = None,
               headers: list[tuple[str, bytes]] | None = None) -> None:  # fmt: skip
        log = self.topics.setdefault(topic, [])
        log.append(Message(topic, partition or 0, len(log), value, key, headers))

    def values(self, topic: str) -> list[bytes]:
        return [m.value() for m in self.topics.get(topic, [])]


def _metadata(topic: str, partitions: int) -> Any:
    """What ``list_topics(topic)`` answers: the topic, of ``partitions`` partitions."""
    found = SimpleNamespace(error=None, partitions=dict.fromkeys(range(partitions)))
    return SimpleNamespace(topics={topic: found})


class MemoryConsumer:
    def __init__(self, broker: Broker, group: str) -> None:
        self.broker, self.group = broker, group
        self.position: dict[str, int] = {}
        self.paused = False
        self.pauses = 0
        self.thread = threading.get_ident()  # the one thread that may call it
        self.on_revoke: Any = None
        broker.consumers.append(self)

    def subscribe(
        self, topics: list[str], on_assign: Any = None, on_revoke: Any = None, **_: Any
    ) -> None:
        for topic in topics:
            self.position[topic] = self.broker.committed.get((self.group, topic), 0)
        self.on_revoke = on_revoke
        if on_assign is not None:  # this member gets every partition at once
            on_assign(self, self.assignment())

    def assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.position[tp.topic] = max(tp.offset, 0)

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = 0) -> tuple[int, int]:
        return 0, len(self.broker.topics.get(tp.topic, []))

    def list_topics(self, topic: str, timeout: float = 0) -> Any:
        return _metadata(topic, self.broker.partitions)

    def assignment(self) -> list[TopicPartition]:
        # confluent-kafka's blocks while another thread is inside poll: never call it so
        assert threading.get_ident() == self.thread, "assignment() from another thread"
        return [TopicPartition(t, 0) for t in self.position]

    def consume(self, num: int = 1, timeout: float = 0) -> list[Message]:
        if self.paused:
            return []
        out: list[Message] = []
        for topic, at in self.position.items():
            taken = self.broker.topics.get(topic, [])[at : at + num - len(out)]
            self.position[topic] = at + len(taken)
            out += taken
        return out

    def poll(self, timeout: float = 0) -> Message | None:
        found = self.consume(1)
        return found[0] if found else None

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused = True
        self.pauses += 1

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused = False

    def seek(self, tp: TopicPartition) -> None:
        self.position[tp.topic] = tp.offset

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = False) -> None:
        for tp in offsets:
            self.broker.committed[(self.group, tp.topic)] = tp.offset

    def close(self) -> None:
        if self.on_revoke is not None:
            self.on_revoke(self, [TopicPartition(t, 0) for t in self.position])


class MemoryProducer:
    def __init__(self, broker: Broker, fail_first: int = 0) -> None:
        self.broker = broker
        self.fail_first = fail_first  # deliveries that fail before any succeeds
        self._pending: list[tuple[Callable[..., None], str, bytes, bytes | None, int | None]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None,
                on_delivery: Callable[..., None] | None = None, partition: int | None = None,
                **_: Any) -> None:  # fmt: skip
        self._pending.append((on_delivery or (lambda *a: None), topic, value, key, partition))

    def flush(self, timeout: float = 0) -> int:
        from confluent_kafka import KafkaError

        for callback, topic, value, key, partition in self._pending:
            message = Message(topic, partition or 0, -1, value, key)
            if self.fail_first > 0:
                self.fail_first -= 1
                callback(KafkaError(KafkaError._MSG_TIMED_OUT), message)
            else:
                self.broker.append(topic, value, key, partition)
                callback(None, message)
        self._pending.clear()
        return 0

    def poll(self, timeout: float = 0) -> int:
        return 0

    def list_topics(self, topic: str, timeout: float = 0) -> Any:
        return _metadata(topic, self.broker.partitions)


def in_memory(stage: Any, broker: Broker, **producer: Any) -> Any:
    """Give a stage loop the in-memory transport instead of confluent-kafka's."""
    stage._consumer = lambda group, **_: MemoryConsumer(broker, group)
    stage._producer = lambda: MemoryProducer(broker, **producer)
    return stage
