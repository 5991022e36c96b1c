"""Detector state in a changelogged faust table, so a restarted worker, or the worker a
partition moves to, carries on where the last one stopped.

The table has one changelog partition per partition of the normalized topic and
holds, per partition ``p``:

- ``p/path/<hash>`` -> the path's last-seen second: written as the event that opened
  the path is processed (and hourly while it stays in use), deleted when the path is
  forgotten. Faust flushes these writes before it commits the event's offset, so a
  path that raised its new-path alert is never new again after a crash.
- ``p`` -> the rest of the partition's detector state (learning start, port and hour
  profiles, scan windows, alert send times), zlib-compressed JSON, written at most
  every ``snapshot_seconds`` while events flow. After a crash, up to that much of
  this learning is lost; the events themselves are never lost.
"""

from __future__ import annotations

import time
import zlib
from typing import Any

import orjson

from detector.detect import Engine

__all__ = ["DetectorState"]


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
        paths = {
            int(key[len(prefix) :]): int(value)
            for key, value in list(self.table.items())
            if key.startswith(prefix) and value is not None
        }
        engine.new_paths.paths = dict(sorted(paths.items(), key=lambda kv: kv[1]))
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
