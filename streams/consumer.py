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
"""

from __future__ import annotations

from collections.abc import Iterable
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
