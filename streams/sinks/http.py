"""What the webhook sinks share: an HTTP POST per page, the target's rate limit, and
the classification of the answer (2xx taken; 408, 429, 5xx and connection errors
tried again, honouring ``Retry-After``; any other 4xx refused).

A page item's body is the incident stage's page: ``{"incident", "action", "why",
"doc"}`` with the delivery id as the item's id (the same on a repeat, for the
receiver to deduplicate on). A kind says what it sends in :meth:`WebhookSink.encode`,
or None for a page it does not want.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from streams.errors import Refused, Unavailable, status_class
from streams.metrics import METRICS
from streams.sinks.base import Item, Sink, Written
from streams.webhooks import SEVERITIES, WebhookTarget, incident_of

__all__ = ["WebhookSink", "retry_after"]


def retry_after(response: httpx.Response) -> float | None:
    """A ``Retry-After`` in seconds (the number form; the date form is rare here)."""
    value = response.headers.get("Retry-After", "")
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None


class WebhookSink(Sink):
    """Pages to one webhook target, in order."""

    def __init__(self, target: WebhookTarget, client: httpx.Client | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        self.target = target
        self.name = target.name
        self.dependency = f"webhook {target.name}"
        self.client = client or httpx.Client()
        self.clock, self.sleep = clock, sleep
        self.sent = 0
        self._tokens = 0.0
        self._refilled: float | None = None

    @abc.abstractmethod
    def encode(self, page: dict[str, Any], delivery: str) -> tuple[bytes, dict[str, str]] | None:
        """(body, headers) for a page, or None when this target does not want it."""

    def wants(self, page: dict[str, Any]) -> bool:
        severity = incident_of(page["doc"]).get("severity", "medium")
        return SEVERITIES.index(severity) >= SEVERITIES.index(self.target.min_severity)

    def write(self, items: Sequence[Item]) -> Written:
        written = Written()
        for i, item in enumerate(items):
            encoded = self.encode(item.body, item.id) if self.wants(item.body) else None
            if encoded is None:
                written.skipped += 1
                continue
            body, headers = encoded
            self._take_token()
            try:
                response = self.client.post(self.target.url, content=body, headers=headers,
                                            timeout=self.target.timeout)  # fmt: skip
            except httpx.HTTPError as exc:
                if i == 0:
                    raise
                return self._later(written, items[i:], f"{type(exc).__name__}: {exc}", None)
            verdict = status_class(response.status_code)
            reason = f"HTTP {response.status_code}: {response.text[:200]}".rstrip(": ")
            if verdict is None:
                self.sent += 1
                METRICS.pages_sent.labels(self.name, item.body["action"]).inc()
            elif verdict is Refused:  # the receiver refuses this page: retrying will not help
                written.refused.append((item, f"webhook {self.name} refused the page: {reason}"))
            else:
                if i == 0:
                    raise Unavailable(self.dependency, reason, retry_after(response))
                return self._later(written, items[i:], reason, retry_after(response))
        return written

    @staticmethod
    def _later(written: Written, rest: Sequence[Item], reason: str,
               after: float | None) -> Written:  # fmt: skip
        written.again, written.reason, written.retry_after = list(rest), reason, after
        return written

    def _take_token(self) -> None:
        """A token bucket of ``rate_per_second``: a burst of pages waits its turn."""
        rate = self.target.rate_per_second
        now = self.clock()
        if self._refilled is None:
            self._refilled, self._tokens = now, rate
        self._tokens = min(rate, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens < 1:
            self.sleep((1 - self._tokens) / rate)
            self._tokens = 1
            self._refilled = self.clock()
        self._tokens -= 1

    def close(self) -> None:
        self.client.close()
