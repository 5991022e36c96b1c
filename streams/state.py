"""Detector state in a changelogged faust table, so a restarted worker, or the worker a
partition moves to, carries on where the last one stopped.

The table has one changelog partition per partition of the normalized topic and
holds, per partition ``p``:

- ``p/path/<hash>`` -> the path's last-seen second: written as an event of ``p``
  opens the path (and hourly while it stays in use), deleted when the path is
  forgotten. Faust flushes these writes before it commits the event's offset, so a
  path that raised its new-path alert is never new again after a crash.
- ``p`` -> the rest: what ``p``'s initiators did (scan windows, alert send times),
  ``p``'s own port and hour counts, the learning starts and the server ports known,
  zlib-compressed JSON, written at most every ``snapshot_seconds``
  while events flow. After a crash, up to that much of this learning is lost; the
  events themselves are never lost.

The engines of a worker share one zone memory (``detector.detect.ZoneMemory``):
restoring a partition merges its paths and adds its counts. What other workers
learnt comes from the same changelog, read whole by :class:`ZoneFeed`."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Collection
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from detector.connection import keep_latest
from detector.detect import Engine
from streams.loop import StageLoop
from streams.settings import Settings

__all__ = ["DetectorState", "ZoneFeed", "state_changelog"]

_PATH = b"/path/"


def state_changelog(settings: Settings) -> str:
    """The topic faust keeps the detector-state table in."""
    return f"{settings.worker.app_id}-detector-state-changelog"


class DetectorState:
    """Restores engines from, and journals them into, a faust table (bytes -> bytes).

    Writes go through the table's mapping API, which needs the current stream event:
    call :meth:`save` from the agent, for the partition of the event in hand.
    """

    def __init__(self, table: Any, snapshot_seconds: float = 5.0) -> None:
        self.table = table
        self.snapshot_seconds = snapshot_seconds
        self._saved: dict[int, float] = {}

    def restore(self, partition: int, engine: Engine) -> None:
        """Fill a new engine for ``partition`` from what the table holds."""
        snapshot = self.table.get(b"%d" % partition)
        if snapshot is not None:
            engine.load(orjson.loads(zlib.decompress(snapshot)))
        prefix = b"%d/path/" % partition
        engine.memory.merge_paths({
            int(key[len(prefix) :]): int(value)
            for key, value in list(self.table.items())
            if key.startswith(prefix) and value is not None
        })  # fmt: skip
        if engine.new_paths.journal is None:
            engine.new_paths.journal = {}
        self._saved.pop(partition, None)  # snapshot at the first event: the learning start

    def save(self, partition: int, engine: Engine) -> None:
        """Journal path changes now; snapshot the rest when it is due."""
        journal = engine.new_paths.journal
        if journal:
            prefix = b"%d/path/" % partition
            for key, seen in journal.items():
                name = prefix + str(key).encode()
                if seen is None:
                    self.table.pop(name, None)
                else:
                    self.table[name] = str(seen).encode()
            journal.clear()
        now = time.monotonic()
        last = self._saved.get(partition)
        if last is None or now - last >= self.snapshot_seconds:
            state = orjson.dumps(engine.state(paths=False), option=orjson.OPT_NON_STR_KEYS)
            self.table[b"%d" % partition] = zlib.compress(state, 1)
            self._saved[partition] = now


class ZoneFeed(StageLoop):
    """What every other scorer learnt about zones, for this one: reads the whole
    detector-state changelog (every partition, from its start, outside any consumer
    group) and keeps each path's latest sighting and each partition's latest snapshot
    until the score stage :meth:`take` s them.

    Keyed by initiator, one zone's connections come from many initiators, scored by
    many workers: without this, a path one worker knows would be new to another, and
    each worker would judge port rarity and hour profiles from its own partitions'
    share of a zone only. A path's first sighting is journalled within the message
    that saw it, so the other workers know it a moment later (the changelog's round
    trip, about a second at most): two workers that both see a path for the first
    time within that moment both call it new. The counts follow each partition's
    snapshots (``worker.snapshot_seconds``).
    """

    name = "zones"

    def __init__(self, settings: Settings,
                 scored: Callable[[], Collection[int]] | None = None) -> None:  # fmt: skip
        super().__init__(settings)
        self.topic = state_changelog(settings)
        self.scored = scored  # the partitions scored here: their snapshots are this worker's
        self._paths: dict[int, int] = {}
        self._snapshots: dict[int, dict[str, Any]] = {}  # partition -> its latest snapshot
        self._lock = threading.Lock()

    def take(self) -> tuple[dict[int, int], dict[int, dict[str, Any]]]:
        """The paths (hash -> last seen second) and the partitions' snapshots (partition
        -> detector state) read since the last call."""
        with self._lock:
            paths, self._paths = self._paths, {}
            snapshots, self._snapshots = self._snapshots, {}
        return paths, snapshots

    def _reader(self) -> Consumer:
        return Consumer({**self.settings.kafka.client_config(self.name),
                         "group.id": f"{self.settings.worker.app_id}-zones",  # never joined
                         "enable.auto.commit": False})  # fmt: skip

    def _loop(self) -> None:
        consumer = self._reader()
        try:
            partitions = self._partitions_of(consumer, self.topic)
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
            while not self._stop.is_set():
                paths: dict[int, int] = {}
                snapshots: dict[int, bytes] = {}
                for message in consumer.consume(1000, timeout=0.5):
                    key, value = message.key(), message.value()
                    if message.error() is not None or not key or not value:
                        continue  # a forgotten path (kept: it ages out) or an error
                    if key.isdigit():
                        snapshots[int(key)] = value  # only the latest is read
                    elif _PATH in key:
                        path, seen = int(key.rsplit(b"/", 1)[1]), int(value)
                        if seen > paths.get(path, -1):
                            paths[path] = seen
                for p in self.scored() if self.scored is not None else ():
                    snapshots.pop(p, None)  # its own: never read (the scorer ignores them)
                states = {p: state for p, v in snapshots.items()
                          if (state := self._decode(p, v)) is not None}  # fmt: skip
                if paths or states:
                    with self._lock:
                        keep_latest(self._paths, paths)
                        self._snapshots.update(states)
        finally:
            consumer.close()

    def _decode(self, partition: int, value: bytes) -> dict[str, Any] | None:
        try:
            state = orjson.loads(zlib.decompress(value))
        except (zlib.error, orjson.JSONDecodeError) as exc:  # not faust's writing: skip it
            self.log.warning("a snapshot of partition %d in %s cannot be read (%s): left out",
                             partition, self.topic, exc)  # fmt: skip
            return None
        return state if isinstance(state, dict) else None
