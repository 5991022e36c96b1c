"""Flow-log parsers, one module per log family, all of one shape.

Each family module has a parser class built from :class:`ParseOptions` whose
``parse(raw) -> list[FlowEvent | ParseError]`` never raises: a record becomes
zero events (a blank or header line), one, several (an envelope of many), or
a :class:`~detector.errors.ParseError` carrying the raw bytes and a reason.

:data:`PARSERS` maps the family name used in topics and configuration to its
class; a new family is one module and one entry here. ``auto`` picks the
family per record (:func:`detect_family`), so mixed input works.
"""

from __future__ import annotations

from typing import Protocol

from detector.errors import ParseError
from detector.parsers._common import (
    DEFAULT_PREFIX_ACTIONS,
    FlowEvent,
    ParseOptions,
    ParseResult,
    check_raw,
    to_bytes,
)
from detector.parsers._guard import Guarded, check_event
from detector.parsers.calico import CalicoParser
from detector.parsers.hubble import HubbleParser
from detector.parsers.iptables import IptablesParser
from detector.parsers.vpcflow import VpcFlowParser
from detector.parsers.zeek import ZeekParser

__all__ = [
    "DEFAULT_PREFIX_ACTIONS",
    "PARSERS",
    "AutoParser",
    "FlowEvent",
    "ParseError",
    "ParseOptions",
    "ParseResult",
    "Parser",
    "check_event",
    "detect_family",
    "make_parser",
]


class Parser(Protocol):
    """What every family's parser offers."""

    family: str

    def parse(self, raw: bytes | str) -> list[ParseResult]: ...


PARSERS: dict[str, type[Parser]] = {
    "vpcflow": VpcFlowParser,
    "calico": CalicoParser,
    "iptables": IptablesParser,
    "hubble": HubbleParser,
    "zeek": ZeekParser,
}


def detect_family(text: str) -> str | None:
    """The family a record most likely belongs to, or None if it looks like none.

    JSON: ``logEvents`` or a ``message`` holding a VPC line -> vpcflow; a
    ``flow``/``verdict`` -> hubble; ``uid`` + ``id.orig_h`` -> zeek; ``start_time`` +
    ``action`` -> calico;
    a ``message``/``MESSAGE`` holding a LOG line -> iptables (calico for
    ``calico-packet``). Text: ``calico-felix`` or ``calico-packet`` -> calico;
    ``IN=`` + ``SRC=`` -> iptables; a leading version number, ``-`` or a
    header line -> vpcflow; a ``#`` header or tab-separated ``ts uid ...`` -> zeek.
    gzip / base64-gzip -> vpcflow (CloudWatch via Firehose).
    """
    head = text.lstrip()[:1]
    if head == "{":
        if '"logEvents"' in text:
            return "vpcflow"
        if '"uid"' in text and ('"id.orig_h"' in text or '"orig_h"' in text):
            return "zeek"
        if '"verdict"' in text and ('"flow"' in text or '"IP"' in text):
            return "hubble"
        if '"start_time"' in text and '"action"' in text:
            return "calico"
        if "IN=" in text and "SRC=" in text:
            return "calico" if "calico-packet" in text else "iptables"
        if '"message"' in text:
            return "vpcflow"
        return None
    if text.startswith("H4sI"):
        return "vpcflow"
    if text.startswith(
        (
            "#separator",
            "#fields",
            "#set_separator",
            "#empty_field",
            "#unset_field",
            "#path",
            "#open",
            "#close",
            "#types",
        )
    ):
        return "zeek"
    if "\t" in text and text.split("\t", 2)[1:2] and text.split("\t", 2)[1].startswith("C"):
        return "zeek"  # ts<TAB>uid...: Zeek's uids start with C
    if "calico-felix" in text or ("calico-packet" in text and "IN=" in text):
        return "calico"
    if ("IN=" in text and "SRC=" in text) or " kernel:" in text or "PROTO=" in text:
        return "iptables"  # a truncated LOG record still gets the iptables parser's reason
    first = text.split(None, 1)[0] if text.strip() else ""
    if first.isdigit() or first == "-" or first.lower() in ("version", "instance-id", "account-id"):
        return "vpcflow"
    if first.startswith(("i-", "eni-")):
        return "vpcflow"
    return None


class AutoParser:
    """Detects the family of each record and hands it to that family's parser.

    Keeps one parser per family, so VPC header lines still apply to the
    VPC lines after them in a mixed stream.
    """

    family = "auto"

    def __init__(self, options: ParseOptions | None = None) -> None:
        self.options = options or ParseOptions()
        self._parsers: dict[str, Parser] = {}

    def parse(self, raw: bytes | str) -> list[ParseResult]:
        data = to_bytes(raw)
        if data[:2] == b"\x1f\x8b":
            return self._parser("vpcflow").parse(data)
        text = check_raw(data, "auto", self.options, self.options.max_envelope_bytes)
        if isinstance(text, ParseError):
            return [text]
        if not text or text.isspace():
            return []
        family = detect_family(text)
        if family is None:
            return [ParseError(
                "auto",
                "not a recognised flow-log record (VPC flow log, Calico, iptables/nftables "
                "LOG, Hubble or Zeek conn.log); name the family with --family to see that "
                "parser's reason",
                data,
            )]  # fmt: skip
        return self._parser(family).parse(data)

    def _parser(self, family: str) -> Parser:
        parser = self._parsers.get(family)
        if parser is None:
            parser = self._parsers[family] = PARSERS[family](self.options)  # type: ignore[call-arg]
        return parser


def make_parser(family: str, options: ParseOptions | None = None) -> Parser:
    """A parser for ``family`` (a key of :data:`PARSERS`, or ``auto``), guarded: nothing
    a record causes raises out of it, and its events have the shapes the pipeline
    relies on (:mod:`detector.parsers._guard`).

    :raises KeyError: an unknown family.
    """
    if family == "auto":
        return Guarded(AutoParser(options))
    return Guarded(PARSERS[family](options))  # type: ignore[call-arg]
