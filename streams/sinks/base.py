"""The sink contract: take items, write them, say which the target refused (for the
dead-letter topic) and which it could not take now (to retry); never drop one.

A sink's :meth:`Sink.write` makes one attempt at a batch. :func:`deliver` runs
attempts under the retry policy until every item is either taken or refused,
so the caller (a stage) commits its offsets only after that.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from streams.errors import Refused, Unavailable, translate
from streams.retry import RetryPolicy, Waiting

__all__ = ["SINKS", "Item", "Sink", "Written", "deliver", "make_sink", "register"]


@dataclass(frozen=True)
class Item:
    """One thing to deliver: its id (document id, delivery id), its body (bytes of a
    document, or a page), where it was read (for a dead letter) and, for the events,
    the data stream it belongs to."""

    id: str
    body: Any
    source: tuple[str, int, int] = ("", 0, -1)
    index: str | None = None  # where it goes, when a sink writes to more than one place


@dataclass
class Written:
    """One attempt's outcome: the refused items with why, and those to try again."""

    refused: list[tuple[Item, str]] = field(default_factory=list)
    again: list[Item] = field(default_factory=list)
    retry_after: float | None = None
    reason: str = ""  # why ``again`` was not taken
    skipped: int = 0  # items the target does not want (below its severity, say)


class Sink(abc.ABC):
    """A target. ``name`` labels its metrics and logs, ``dependency`` names what it
    waits on (``elasticsearch``, ``webhook oncall``)."""

    kind: ClassVar[str]
    name: str
    dependency: str

    @abc.abstractmethod
    def write(self, items: Sequence[Item]) -> Written:
        """One attempt at the batch. Raises (a client's exception, or
        :class:`~streams.errors.Unavailable`) when nothing of it was taken."""

    def close(self) -> None:  # noqa: B027 (most sinks hold nothing)
        """Release connections."""


SINKS: dict[str, type[Sink]] = {}


def register(kind: str) -> Callable[[type[Sink]], type[Sink]]:
    """Class decorator: the sink for ``kind``."""

    def put(cls: type[Sink]) -> type[Sink]:
        cls.kind = kind
        SINKS[kind] = cls
        return cls

    return put


def make_sink(kind: str, *args: Any, **kwargs: Any) -> Sink:
    """The sink registered for ``kind``.

    :raises KeyError: no sink has that kind.
    """
    if kind not in SINKS:
        raise KeyError(f"no sink of kind {kind!r} (there are: {', '.join(sorted(SINKS))})")
    return SINKS[kind](*args, **kwargs)


def deliver(sink: Sink, items: Sequence[Item], policy: RetryPolicy,
            waiting: Waiting | None = None) -> tuple[list[tuple[Item, str]], int]:  # fmt: skip
    """Write ``items`` until each is taken or refused, retrying what the target cannot
    take now. Returns (refused with why, skipped count). A refusal of the whole
    batch (the request itself) refuses every item with that reason.

    :raises Fatal: the target cannot be used until an operator acts.
    :raises Stopped: the worker stopped while retrying.
    """
    pending = list(items)
    refused: list[tuple[Item, str]] = []
    skipped = 0

    def attempt() -> None:
        nonlocal pending, skipped
        try:
            result = sink.write(pending)
        except Exception as exc:
            error = translate(exc, sink.dependency)
            if not isinstance(error, Refused):
                raise error from exc
            refused.extend((item, error.reason) for item in pending)
            pending = []
            return
        refused.extend(result.refused)
        skipped += result.skipped
        pending = result.again
        if pending:
            raise Unavailable(sink.dependency, result.reason or f"{len(pending)} item(s) not "
                              "taken", result.retry_after)  # fmt: skip

    if pending:
        policy.call(sink.name, sink.dependency, attempt, waiting)
    return refused, skipped
