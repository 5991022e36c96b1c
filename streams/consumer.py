"""The faust app class, with a consumer that seeks before it fetches after a rebalance.

After a rebalance faust (0.15, ``tables/recovery.py``) resumes the stream
partitions and *then* seeks them to their committed offsets. Records fetched in
between, from the old position, are delivered, and faust's read-offset
bookkeeping, which they move ahead of the seek, then drops the re-read records
below it and counts a jump as a gap of already-acked offsets. A later flush of
the stream buffers (the next rebalance) loses what was delivered but not yet
processed: a restarted worker lost a batch this way when the dead member's
session ran out. This consumer holds stream partitions back until the seek is
done, so the first record after a rebalance is the committed one.

Two more holes of the same kind, both found by a worker SIGKILLed early and
started again (it then skipped or never read part of the normalized topic):

- faust's fetch loop silently drops records of a partition that is not active
  (paused, or held back above) when they come: the fetcher has moved past them,
  and nothing but a seek reads them again. faust also hands aiokafka the live set
  of active partitions, which it changes meanwhile from another thread (an empty
  set means "every partition" to aiokafka). This consumer gives aiokafka a copy,
  and sends a partition whose records came while it was not active back to the
  first of them.
- the seek itself (aiokafka 0.14, ``seek_to_committed``) moves only partitions
  whose committed offset is above 0: one with no commit yet stayed past what was
  dropped. This consumer sends such partitions to their beginning
  (``auto.offset.reset`` is ``earliest``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import faust
from faust.transport.drivers.aiokafka import Consumer

__all__ = ["App", "SeekFirstConsumer"]


class SeekFirstConsumer(Consumer):
    """Stream partitions resume only once they were sought to their committed offsets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hold = False
        self._held: set[Any] = set()

    async def on_partitions_assigned(self, assigned: set[Any], generation_id: int = 0) -> None:
        self._hold, self._held = True, set()
        await super().on_partitions_assigned(assigned, generation_id)

    def resume_partitions(self, tps: Iterable[Any]) -> None:
        tps = set(tps)
        if self._hold:  # changelogs resume now: recovery reads them
            streams = {tp for tp in tps if not self._is_changelog_tp(tp)}
            self._held |= streams
            tps -= streams
        super().resume_partitions(tps)

    async def _getmany(self, active_partitions: set[Any] | None, timeout: float) -> Any:
        asked = None if active_partitions is None else frozenset(active_partitions)
        records = await super()._getmany(asked, timeout)  # type: ignore[arg-type]
        if asked is None:
            return records
        active = (self._active_partitions or set()) | self._buffered_partitions
        if all(tp in active for tp in records):
            return records
        assigned = self.assignment()
        for tp, came in records.items():
            if tp not in active and tp in assigned:  # faust would drop them: read again later
                self._thread.seek(tp, came[0].offset)
        return {tp: came for tp, came in records.items() if tp in active}

    async def seek_to_committed(self) -> Mapping[Any, int]:
        committed: Mapping[Any, int] = await super().seek_to_committed()
        uncommitted = [tp for tp, offset in committed.items()
                       if not offset and not self._is_changelog_tp(tp)]  # fmt: skip
        if uncommitted:  # aiokafka left them where they were: read them from the start
            await self._thread.seek_to_beginning(*uncommitted)
        return committed

    async def perform_seek(self) -> None:
        await super().perform_seek()
        held, self._held, self._hold = self._held, set(), False
        super().resume_partitions(held & set(self.assignment()))


class App(faust.App):
    """faust.App whose transport makes :class:`SeekFirstConsumer` consumers."""

    def _new_transport(self) -> Any:
        transport = super()._new_transport()
        transport.Consumer = SeekFirstConsumer  # type: ignore[misc]  # a ClassVar in faust
        return transport
