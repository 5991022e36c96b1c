"""Reading flow-log files record by record, for the commands that take files.

Streams: memory stays constant in the file's size, except for pretty-printed
(multi-line) JSON documents, which are read whole because a record spans lines.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

__all__ = ["Record", "iter_records"]

Record = tuple[int, bytes]  # (1-based line number, raw record)


def iter_records(path: str) -> Iterator[Record]:
    """The records of a file (``-`` for stdin), gzip read transparently.

    One record per line; blank lines are skipped. A file whose first line
    starts a JSON value that does not end on that line is read as a sequence
    of JSON documents, each a record numbered by the line it starts on.

    :raises OSError: the file cannot be opened or read.
    """
    raw: BinaryIO = sys.stdin.buffer if path == "-" else Path(path).open("rb")  # noqa: SIM115
    try:
        stream = _maybe_gunzip(raw)
        first = stream.readline()
        if first.lstrip()[:1] in (b"{", b"[") and not _is_json(first):
            yield from _json_documents(first + stream.read())
            return
        number = 1
        line = first
        while line:
            record = line.rstrip(b"\r\n")
            if record.strip():
                yield number, record
            number += 1
            line = stream.readline()
    finally:
        if raw is not sys.stdin.buffer:
            raw.close()


def _maybe_gunzip(raw: BinaryIO) -> BinaryIO:
    buffered: Any = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        return cast(BinaryIO, gzip.GzipFile(fileobj=buffered))
    return cast(BinaryIO, buffered)


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _json_documents(data: bytes) -> Iterator[Record]:
    text = data.decode("utf-8", "surrogateescape")
    decoder = json.JSONDecoder()
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return
        line = text.count("\n", 0, pos) + 1
        try:
            doc, end = decoder.raw_decode(text, pos)
        except ValueError:
            # not JSON after all: hand the rest over line by line, the parser will say why
            for offset, rest in enumerate(text[pos:].splitlines()):
                if rest.strip():
                    yield line + offset, rest.encode("utf-8", "surrogateescape")
            return
        items = doc if isinstance(doc, list) else [doc]
        for item in items:
            yield line, json.dumps(item, separators=(",", ":")).encode()
        pos = end
