"""The faust consumer's fetch and seek (streams/consumer.py): records that come for a
partition that is not active are read again later, never dropped; after a rebalance a
stream partition is read again from its committed offset, or from its beginning when it
has no commit yet (aiokafka's own seek leaves it where the fetcher stopped)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.types import TP as TopicPartition

from streams.consumer import SeekFirstConsumer

CHANGELOG = "segwatch-detector-state-changelog"


class _Thread:
    """The consumer thread's seeks, recorded; committed offsets as the broker has them."""

    def __init__(self, committed: dict[TopicPartition, int | None] | None = None,
                 fetched: dict[TopicPartition, list[Any]] | None = None) -> None:  # fmt: skip
        self.committed = committed or {}
        self.fetched = fetched or {}
        self.to_beginning: list[TopicPartition] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.asked: Any = None

    async def getmany(self, active: Any, timeout: float) -> dict[TopicPartition, list[Any]]:
        self.asked = active
        return self.fetched

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def assignment(self) -> set[TopicPartition]:
        return {*self.committed, *self.fetched}

    async def seek_to_committed(self) -> dict[TopicPartition, int | None]:
        return self.committed

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        self.to_beginning += tps


def _consumer(thread: _Thread) -> Any:
    consumer: Any = object.__new__(SeekFirstConsumer)  # no faust app: only the seek runs
    consumer._thread = thread
    consumer._active_partitions, consumer._buffered_partitions = set(), set()
    consumer.app = SimpleNamespace(tables=SimpleNamespace(changelog_topics={CHANGELOG}))
    return consumer


def test_partitions_without_a_commit_go_back_to_their_beginning() -> None:
    never, zero, later = (TopicPartition("flows.normalized", p) for p in range(3))
    changelog = TopicPartition(CHANGELOG, 0)
    thread = _Thread({never: None, zero: 0, later: 41, changelog: None})
    committed = asyncio.run(_consumer(thread).seek_to_committed())
    assert sorted(thread.to_beginning) == [never, zero]  # aiokafka only moves offsets > 0
    assert committed == thread.committed  # faust's read offsets are built from these


def test_all_committed_seeks_nothing_more() -> None:
    thread = _Thread({TopicPartition("flows.normalized", p): 7 for p in range(3)})
    asyncio.run(_consumer(thread).seek_to_committed())
    assert thread.to_beginning == []


def _records(tp: TopicPartition, *offsets: int) -> list[Any]:
    return [SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=o) for o in offsets]


def test_records_of_a_partition_not_active_are_read_again_not_dropped() -> None:
    active, held, full = (TopicPartition("flows.normalized", p) for p in range(3))
    thread = _Thread(fetched={active: _records(active, 5, 6), held: _records(held, 40, 41),
                              full: _records(full, 9)})  # fmt: skip
    consumer = _consumer(thread)
    consumer._active_partitions.add(active)
    consumer._buffered_partitions.add(full)  # its stream's buffer is full: still delivered
    live = consumer._active_partitions
    got = asyncio.run(consumer._getmany(live, 1.0))
    assert set(got) == {active, full}  # what faust delivers
    assert thread.seeks == [(held, 40)]  # the held partition is fetched again from its first
    assert thread.asked == live and thread.asked is not live  # a copy: faust changes its set
