"""The worker's errors: one root, a class per way a dependency can fail, and the one
place where the clients' own exceptions (confluent-kafka, elasticsearch, httpx)
become ours.

What a stage does with an error follows from its class alone:

- :class:`Unavailable` — the dependency cannot take it *now* (connection refused,
  timeout, 429, 5xx, a Kafka transport error): retried with backoff, forever,
  while the stage reports what it waits on. ``retry_after`` carries a server's
  ``Retry-After``.
- :class:`Refused` — the dependency will never take *this record* (a mapping
  error, 400, 413, 422): the record goes to the dead-letter topic with the reason.
- :class:`Fatal` — nothing will change until an operator does (an Elasticsearch
  version segwatch does not speak, a lifecycle the server does not run): the
  stage stops and ``/healthz`` fails.

A 409 on a create is not an error at all: the document was written before (a
replay), and the sinks count it as written.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import httpx
from confluent_kafka import KafkaError, KafkaException
from elasticsearch import ApiError, TransportError

__all__ = [
    "Fatal",
    "Refused",
    "SegwatchError",
    "Unavailable",
    "mask_url",
    "mask_urls",
    "status_class",
    "translate",
]


class SegwatchError(Exception):
    """The root of the worker's errors; ``dependency`` names what failed."""

    def __init__(self, dependency: str, reason: str) -> None:
        self.dependency, self.reason = dependency, reason
        super().__init__(f"{dependency}: {reason}")


class Unavailable(SegwatchError):
    """The dependency cannot take it now: try again later (``retry_after`` seconds, if
    it said)."""

    def __init__(self, dependency: str, reason: str, retry_after: float | None = None) -> None:
        super().__init__(dependency, reason)
        self.retry_after = retry_after


class Refused(SegwatchError):
    """The dependency will not take this record, now or ever: dead-letter it."""


class Fatal(SegwatchError):
    """Nothing will change until an operator does: the stage stops."""


def status_class(status: int) -> type[SegwatchError] | None:
    """What an HTTP status means for a delivery: None (taken; 409 on a create is a
    replay), Unavailable (408, 429, 5xx; 401/403 too: credentials and permissions
    are fixed without dropping what waits) or Refused (any other 4xx)."""
    if status < 300 or status == 409:
        return None
    if status in (401, 403, 408, 429) or status >= 500:
        return Unavailable
    return Refused


def translate(exc: BaseException, dependency: str) -> SegwatchError:
    """Our error for a client's exception (anything else: Unavailable, with its type)."""
    if isinstance(exc, SegwatchError):
        return exc
    if isinstance(exc, ApiError):
        cls = status_class(exc.status_code) or Unavailable
        return cls(dependency, f"HTTP {exc.status_code} {_es_reason(exc)}")
    if isinstance(exc, TransportError):
        return Unavailable(dependency, f"unreachable ({type(exc).__name__}: {exc.message})")
    if isinstance(exc, httpx.HTTPError):
        return Unavailable(dependency, f"unreachable ({type(exc).__name__}: {exc})")
    if isinstance(exc, KafkaException):
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError):
            cls = Fatal if error.fatal() else Unavailable
            return cls(dependency, f"{error.name()}: {error.str()}")
        return Unavailable(dependency, str(exc))
    return Unavailable(dependency, f"{type(exc).__name__}: {exc}")


def _es_reason(exc: ApiError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error")
    if isinstance(error, dict):
        return f"{error.get('type', '')}: {error.get('reason', '')}".strip(": ")
    return str(exc.message)


# --- secrets in URLs ---------------------------------------------------------------

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{16,}$")  # a path segment that is a key, not a name
_MASK = "***"


def mask_url(url: str) -> str:
    """The URL with what can be a credential masked: the password of its user info,
    every query value, path segments that look like keys (16+ characters of key
    alphabet, e.g. a Slack webhook's), and everything after the host of a Slack,
    Discord or Teams webhook. ``http://es:9200`` stays as it is."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _MASK
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:{_MASK}@{host}" if ":" in user else f"{_MASK}@{host}"
    host = (parts.hostname or "").lower()
    if host.endswith(("hooks.slack.com", "discord.com", "webhook.office.com")):
        path = "/" + _MASK if parts.path.strip("/") else parts.path
    else:
        path = "/".join(_MASK if _TOKEN.match(seg) else seg for seg in parts.path.split("/"))
    query = "&".join(f"{pair.split('=', 1)[0]}={_MASK}" if "=" in pair else _MASK
                     for pair in parts.query.split("&")) if parts.query else ""  # fmt: skip
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def mask_urls(text: str) -> str:
    """``text`` with every URL in it masked (:func:`mask_url`)."""
    return _URL.sub(lambda match: mask_url(match.group(0)), text)
