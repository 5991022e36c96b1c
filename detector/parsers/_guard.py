"""What keeps a hostile record from getting past a parser.

Every parser :func:`~detector.parsers.make_parser` hands out is wrapped in
:class:`Guarded`: whatever a record makes the family parser raise (a value of an
unexpected JSON type, a number of thousands of digits, nesting deep enough for
a RecursionError) becomes a :class:`~detector.errors.ParseError` for that
record, and every event it makes is checked for the shapes the rest of the
pipeline relies on (:func:`check_event`): endpoints are objects, addresses are
strings, ports and protocol numbers are integers in range, Kubernetes names are
strings and labels are string maps. A record that fails is refused with the
field named; nothing downstream sees it. (What the stages cannot encode — an
integer beyond 64 bits — they refuse where they encode: the normalize stage,
``segwatch parse``.)
"""

from __future__ import annotations

from typing import Any

from detector.errors import ParseError
from detector.parsers._common import ParseResult, to_bytes

__all__ = ["Guarded", "check_event"]


def _endpoint(endpoint: Any, side: str) -> str | None:
    if endpoint is None:
        return None
    if not isinstance(endpoint, dict):
        return f"{side}: {type(endpoint).__name__}, not an object"
    ip = endpoint.get("ip")
    if ip is not None and not isinstance(ip, str):
        return f"{side}.ip: {type(ip).__name__}, not an address"
    port = endpoint.get("port")
    if port is not None and (type(port) is not int or not 0 <= port <= 65535):
        return f"{side}.port: {str(port)[:20]!r} is not a port number"
    k8s = endpoint.get("kubernetes")
    if k8s is None:
        return None
    if not isinstance(k8s, dict):
        return f"{side}.kubernetes: {type(k8s).__name__}, not an object"
    for name in ("namespace", "workload"):
        value = k8s.get(name)
        if value is not None and not isinstance(value, str):
            return f"{side}.kubernetes.{name}: {type(value).__name__}, not a name"
    for name in ("labels", "namespace_labels"):
        value = k8s.get(name)
        if value is not None and not (isinstance(value, dict) and all(
                isinstance(v, str) for v in value.values())):  # fmt: skip
            return f"{side}.kubernetes.{name}: not a map of strings"
    pod = k8s.get("pod")
    if pod is not None and not (isinstance(pod, dict) and isinstance(pod.get("name", ""), str)):
        return f"{side}.kubernetes.pod: not an object with a name"
    return None


def check_event(event: dict[str, Any]) -> str | None:
    """Why the pipeline cannot carry this event (naming the field), or None."""
    for side in ("source", "destination"):
        why = _endpoint(event.get(side), side)
        if why:
            return why
    network = event.get("network")
    if network is not None:
        if not isinstance(network, dict):
            return "network: not an object"
        iana = network.get("iana_number")  # ECS: a keyword, the number as text
        if iana is not None and not (isinstance(iana, str) and iana.isdigit() and len(iana) <= 3):
            return f"network.iana_number: {str(iana)[:20]!r} is not a protocol number"
        for name in ("transport", "direction"):
            value = network.get(name)
            if value is not None and not isinstance(value, str):
                return f"network.{name}: {type(value).__name__}, not a name"
    return None


class Guarded:
    """A family parser that nothing raises out of, and whose events are checked."""

    def __init__(self, parser: Any) -> None:
        self.parser = parser
        self.family: str = parser.family

    def __getattr__(self, name: str) -> Any:
        return getattr(self.parser, name)

    def parse(self, raw: bytes | str) -> list[ParseResult]:
        try:
            results: list[ParseResult] = self.parser.parse(raw)
        except RecursionError:
            return [ParseError(self.family, "the record is nested too deeply to read",
                               to_bytes(raw))]  # fmt: skip
        except Exception as exc:  # a value the parser did not expect: this record only
            text = str(exc)[:200]
            return [ParseError(self.family, f"a field has a value of an unexpected shape "
                               f"({type(exc).__name__}: {text})", to_bytes(raw))]  # fmt: skip
        for i, result in enumerate(results):
            if not isinstance(result, ParseError):
                why = check_event(result)
                if why:
                    results[i] = ParseError(self.family, f"{why}: refused", to_bytes(raw), why)
        return results
