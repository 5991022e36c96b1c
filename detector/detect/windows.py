"""Sliding windows the detectors count in: bounded, JSON-ready, the same at any rate.

A :class:`Recent` holds the distinct keys (ports, hosts) one source touched within a
window, with when each was last touched and whether every touch of it was denied.
A detector that counts in one finds the same behaviour whether it took 40 seconds
or an hour: only the window's length decides what counts as together.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any, TypeVar

__all__ = ["Recent", "bounded"]

K = TypeVar("K")
V = TypeVar("V")


class Recent:
    """Distinct keys touched within a sliding window, at most ``cap`` of them (the least
    recently touched are forgotten first)."""

    __slots__ = ("items", "oldest")

    def __init__(self) -> None:
        self.items: dict[Any, list[Any]] = {}  # key -> [last touched, every touch denied]
        self.oldest = float("inf")  # a lower bound of the items' times

    def touch(self, key: Any, now: float, denied: bool, window: float, cap: int) -> bool:
        """Touch ``key`` at ``now``; True if it was not in the window yet."""
        items = self.items
        entry = items.get(key)
        new = entry is None
        if entry is None:
            items[key] = [now, denied]
            if now < self.oldest:
                self.oldest = now
            if len(items) > cap:
                keep = sorted(items.items(), key=lambda kv: kv[1][0])[len(items) - cap // 2 :]
                self.items = items = dict(keep)
                self.oldest = keep[0][1][0]
        else:
            entry[0] = now
            entry[1] = entry[1] and denied
        if now - self.oldest > window:
            cutoff = now - window
            self.items = {k: v for k, v in items.items() if v[0] >= cutoff}
            self.oldest = min((v[0] for v in self.items.values()), default=float("inf"))
        return new

    def __len__(self) -> int:
        return len(self.items)

    def first(self) -> float:
        """When the oldest key still in the window was last touched."""
        return float(min(v[0] for v in self.items.values()))

    def since(self, start: float) -> int:
        """How many keys were touched at or after ``start``."""
        return sum(1 for v in self.items.values() if v[0] >= start)

    def denied(self) -> int:
        """How many keys were denied every time they were touched."""
        return sum(1 for v in self.items.values() if v[1])

    def keys(self) -> Iterator[Any]:
        return iter(self.items)

    def dump(self) -> dict[str, list[Any]]:
        return {str(k): v for k, v in self.items.items()}

    @classmethod
    def restore(cls, data: dict[str, list[Any]], key: type = str) -> Recent:
        recent = cls()
        recent.items = {key(k): list(v) for k, v in data.items()}
        recent.oldest = min((v[0] for v in recent.items.values()), default=float("inf"))
        return recent


def bounded(table: MutableMapping[K, V], key: K, make: type[V], limit: int) -> V:
    """``table[key]``, made if missing; past ``limit`` keys the oldest tenth goes first."""
    value = table.get(key)
    if value is None:
        if len(table) >= limit:
            for stale in list(table)[: max(limit // 10, 1)]:
                del table[stale]
        value = table[key] = make()
    return value
