"""Property tests: whatever the bytes, every parser answers with events or errors.

Arbitrary bytes, and valid records mutated byte by byte and token by token,
go through every family's parser and ``auto``: no exception escapes, every
result is an event of the public schema or a ParseError carrying raw bytes.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.events import validate_event
from detector.files import iter_records
from detector.parsers import PARSERS, ParseError, ParseOptions, make_parser

from .conftest import CORPUS, REFERENCE_TIME

OPTS = ParseOptions(reference_time=REFERENCE_TIME)
FAMILIES = [*PARSERS, "auto"]
SEEDS: list[bytes] = [
    raw
    for path in sorted(CORPUS.rglob("*"))
    if path.suffix in (".log", ".jsonl") or path.name.endswith(".pretty.json")
    for _, raw in iter_records(str(path))
]


def _check(family: str, raw: bytes) -> None:
    results = make_parser(family, OPTS).parse(raw)
    assert isinstance(results, list)
    for result in results:
        if isinstance(result, ParseError):
            assert isinstance(result.raw, bytes) and result.reason
        else:
            validate_event(result)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=st.sampled_from(FAMILIES), raw=st.binary(max_size=600))
def test_arbitrary_bytes(family: str, raw: bytes) -> None:
    _check(family, raw)


@st.composite
def _mutated(draw: Any) -> bytes:
    seed = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "delete", "insert", "token"]))
        pos = draw(st.integers(0, max(len(seed) - 1, 0)))
        if kind == "flip" and seed:
            seed[pos] = draw(st.integers(0, 255))
        elif kind == "delete" and seed:
            del seed[pos : pos + draw(st.integers(1, 12))]
        elif kind == "insert":
            seed[pos:pos] = draw(st.sampled_from(
                [b"-", b" ", b"=", b"99999999999999999999", b"-1", b"\xff", b'"', b"{", b"}",
                 b"::", b"NaN", b"1e999", b"\x00", b"IN=", b"SRC=", b"[", b"]"]))  # fmt: skip
        else:
            tokens = bytes(seed).split(b" ")
            i = draw(st.integers(0, len(tokens) - 1))
            tokens[i] = draw(st.sampled_from([b"-", b"", b"65536", b"abc", b"300.1.1.1", b"0"]))
            seed = bytearray(b" ".join(tokens))
    return bytes(seed)


@settings(
    max_examples=int(os.environ.get("SEGWATCH_HYPOTHESIS_EXAMPLES", "600")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(family=st.sampled_from(FAMILIES), raw=_mutated())
def test_mutated_valid_records(family: str, raw: bytes) -> None:
    _check(family, raw)


@settings(max_examples=200, deadline=None)
@given(doc=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(
        ["flow", "verdict", "time", "IP", "source", "destination", "l4", "TCP", "source_port",
         "message", "MESSAGE", "logEvents", "start_time", "end_time", "action", "source_ip",
         "dest_ip", "proto", "labels", "policies", "all_policies", "reporter"]), children,
        max_size=6),
    max_leaves=20,
))  # fmt: skip
def test_arbitrary_json_shapes(doc: Any) -> None:
    raw = json.dumps(doc).encode()
    for family in FAMILIES:
        _check(family, raw)


def test_the_seed_corpus_is_not_empty() -> None:
    assert len(SEEDS) > 60
