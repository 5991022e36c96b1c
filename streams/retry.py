"""The one retry policy of the worker (tenacity), and what a stage says while it waits.

Every call to a dependency — a bulk write, a document upsert, a page, the index
templates, a dead letter — goes through :meth:`RetryPolicy.call`: what is retried
is decided by :func:`streams.errors.translate` (only :class:`~streams.errors.Unavailable`),
the wait is full-jitter exponential backoff from ``retry.initial_seconds`` up to
``retry.max_seconds`` (longer when the server sent ``Retry-After``), and there is
no last attempt: a stage retries until the dependency answers or the worker stops,
so nothing is dropped. Every retry is counted per sink
(``segwatch_retries_total{sink}``), and the stage's :class:`Waiting` says what it
waits on for ``/readyz``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import tenacity
from pydantic import BaseModel, ConfigDict, Field

from streams.errors import SegwatchError, Unavailable, translate
from streams.metrics import METRICS

__all__ = ["RetryPolicy", "RetrySettings", "Stopped", "Waiting"]

T = TypeVar("T")
log = logging.getLogger("segwatch.retry")


class RetrySettings(BaseModel):
    """How every stage retries a dependency that cannot take its work now."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    initial_seconds: float = Field(default=0.5, gt=0, description="The first wait (at most).")
    max_seconds: float = Field(default=30.0, gt=0, description="The longest wait between tries.")
    retry_after_max_seconds: float = Field(
        default=3600.0, gt=0, description="The longest a server's Retry-After is honoured."
    )


class Stopped(Exception):
    """The worker stopped while a call was still being retried."""


@dataclass
class Waiting:
    """What one stage waits on now (None: nothing), since when, and how often it tried."""

    stage: str = ""  # labels segwatch_stage_waiting
    on: str | None = None
    reason: str = ""
    since: float = 0.0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def begin(self, on: str, reason: str) -> None:
        with self._lock:
            if self.on != on:
                self.on, self.since, self.retries = on, time.time(), 0
                if self.stage:
                    METRICS.stage_waiting.labels(self.stage).set(1)
            self.reason = reason
            self.retries += 1

    def end(self) -> None:
        with self._lock:
            if self.on is not None and self.stage:
                METRICS.stage_waiting.labels(self.stage).set(0)
            self.on, self.reason, self.retries = None, "", 0

    def report(self) -> dict[str, Any] | None:
        with self._lock:
            if self.on is None:
                return None
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since))
            return {"on": self.on, "reason": self.reason, "since": since,
                    "retries": self.retries}  # fmt: skip


class _Wait(tenacity.wait.wait_base):
    """Full-jitter exponential backoff, or the server's Retry-After when that is longer."""

    def __init__(self, settings: RetrySettings) -> None:
        self.settings = settings
        self.jitter = tenacity.wait_random_exponential(
            multiplier=settings.initial_seconds, max=settings.max_seconds
        )

    def __call__(self, state: tenacity.RetryCallState) -> float:
        wait = float(self.jitter(state))
        error = state.outcome.exception() if state.outcome is not None else None
        after = getattr(error, "retry_after", None)
        if after:
            wait = max(wait, min(float(after), self.settings.retry_after_max_seconds))
        return wait


def _attempt(number: int) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.attempt_number = number
    return state


@dataclass
class RetryPolicy:
    """Retries calls to dependencies until they answer, or ``stop`` is set."""

    settings: RetrySettings = field(default_factory=RetrySettings)
    stop: threading.Event = field(default_factory=threading.Event)
    sleep: Callable[[float], Any] | None = None  # default: wait on ``stop``

    def pause(self, sink: str, dependency: str, attempt: int, reason: str,
              waiting: Waiting | None = None) -> None:  # fmt: skip
        """The wait before try ``attempt`` + 1 of a loop that retries by itself (the
        normalize stage redoing a batch): the same backoff, counted and reported as
        :meth:`call`'s."""
        METRICS.retries.labels(sink).inc()
        if waiting is not None:
            waiting.begin(dependency, reason)
        log.warning("%s waits for %s: %s", sink, dependency, reason)
        self._sleep(_Wait(self.settings)(_attempt(attempt)))

    def _sleep(self, seconds: float) -> None:
        if self.sleep is not None:
            self.sleep(seconds)
        else:
            self.stop.wait(seconds)

    def call(self, sink: str, dependency: str, fn: Callable[[], T],
             waiting: Waiting | None = None) -> T:  # fmt: skip
        """``fn()``, retried while it fails with what :func:`translate` calls
        :class:`Unavailable` (raised as ours); anything else is raised at once,
        translated. ``sink`` labels the retry counter; ``dependency`` names what is
        waited on (in errors, logs and ``waiting``).

        :raises Refused: the dependency will not take it.
        :raises Fatal: the dependency cannot be used until an operator acts.
        :raises Stopped: ``stop`` was set while retrying.
        """

        def attempt() -> T:
            try:
                return fn()
            except Exception as exc:
                raise translate(exc, dependency) from exc

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            METRICS.retries.labels(sink).inc()
            reason = error.reason if isinstance(error, SegwatchError) else str(error)
            if waiting is not None:
                first = waiting.on != dependency
                waiting.begin(dependency, reason)
                if first:
                    log.warning("%s waits for %s: %s", sink, dependency, reason)
            else:
                log.warning("%s waits for %s: %s", sink, dependency, reason)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(Unavailable),
            wait=_Wait(self.settings),
            stop=lambda _state: self.stop.is_set(),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            result = retrying(attempt)
        except Unavailable as exc:
            if self.stop.is_set():
                raise Stopped(f"{sink}: stopped while waiting for {dependency}") from exc
            raise
        if waiting is not None and waiting.on == dependency:
            waiting.end()
            log.info("%s: %s answers again", sink, dependency)
        return result
