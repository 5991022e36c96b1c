"""Reading flow-log files record by record, for the commands that take files.

Memory stays bounded whatever the file holds: a line is read up to
:data:`MAX_RECORD_BYTES` (a longer one — a gzip bomb's single line — is handed on
cut at that size, for the parser to refuse as too large, and the rest of it is
skipped in chunks); pretty-printed (multi-line) JSON documents are decoded one at
a time from a buffer read in chunks, none larger than :data:`MAX_RECORD_BYTES`
(decoding a document that is still incomplete builds its objects before it
fails, so the peak is a small multiple of that limit, never the file's size).
"""

from __future__ import annotations

import gzip
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

__all__ = ["MAX_RECORD_BYTES", "Record", "iter_records"]

Record = tuple[int, bytes]  # (1-based line number, raw record)

MAX_RECORD_BYTES = 32 * 1024 * 1024  # twice the largest envelope a parser takes
_CHUNK = 1024 * 1024


def iter_records(path: str, limit: int = MAX_RECORD_BYTES) -> Iterator[Record]:
    """The records of a file (``-`` for stdin), gzip read transparently.

    One record per line (only ``\\n`` ends a line: U+2028 inside a JSON string does
    not); blank lines are skipped. A file whose first line starts a JSON value that
    does not end on that line is read as a sequence of JSON documents, each a record
    numbered by the line it starts on.

    :raises OSError: the file cannot be opened or read.
    """
    raw: BinaryIO = sys.stdin.buffer if path == "-" else Path(path).open("rb")  # noqa: SIM115
    try:
        stream = _maybe_gunzip(raw)
        first = _line(stream, limit)
        if first.lstrip()[:1] in (b"{", b"[") and not _is_json(first):
            yield from _json_documents(first, stream, limit)
            return
        yield from _lines(first, stream, 1, limit)
    finally:
        if raw is not sys.stdin.buffer:
            raw.close()


def _line(stream: BinaryIO, limit: int) -> bytes:
    """The next line, at most ``limit`` bytes of it (the rest is skipped)."""
    line = stream.readline(limit + 1)
    if len(line) > limit and not line.endswith(b"\n"):
        while True:  # skip to the end of the line without holding it
            rest = stream.readline(_CHUNK)
            if not rest or rest.endswith(b"\n"):
                break
        return line[: limit + 1]  # over the limit: the parser refuses it as too large
    return line


def _maybe_gunzip(raw: BinaryIO) -> BinaryIO:
    buffered: Any = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        return cast(BinaryIO, gzip.GzipFile(fileobj=buffered))
    return cast(BinaryIO, buffered)


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except (ValueError, RecursionError):
        return False
    return True


def _json_documents(first: bytes, stream: BinaryIO, limit: int) -> Iterator[Record]:
    """JSON documents one after the other, each numbered by the line it starts on;
    the buffer holds at most one document (and a chunk) at a time."""
    decoder = json.JSONDecoder()
    text = first.decode("utf-8", "surrogateescape")
    pos, line, eof = 0, 1, False
    while True:
        start = pos
        while pos < len(text) and text[pos].isspace():
            pos += 1
        line += text.count("\n", start, pos)
        if pos >= len(text):
            if eof:
                return
            text, pos = text[pos:], 0
            text, eof = _more(stream, text)
            continue
        try:
            doc, end = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):
            if not eof and len(text) - pos <= limit:  # perhaps not all of it is read yet
                text, pos = text[pos:], 0
                text, eof = _more(stream, text)
                continue
            yield from _rest_as_lines(text[pos:], stream, line, limit)
            return
        source = text[pos:end]
        try:
            source.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8: as they are, the parser says where
            yield line, source.encode("utf-8", "surrogateescape")
        else:
            items = doc if isinstance(doc, list) else [doc]
            for item in items:
                yield line, json.dumps(item, separators=(",", ":")).encode()
        line += source.count("\n")
        pos = end


def _more(stream: BinaryIO, text: str) -> tuple[str, bool]:
    chunk = stream.read(_CHUNK)
    return text + chunk.decode("utf-8", "surrogateescape"), not chunk


def _rest_as_lines(text: str, stream: BinaryIO, line: int, limit: int) -> Iterator[Record]:
    """Not JSON after all (or a document over the limit): the rest, line by line, for
    the parser to say why."""
    if len(text) > limit:
        yield line, text[: limit + 1].encode("utf-8", "surrogateescape")
        return
    lines = text.encode("utf-8", "surrogateescape").split(b"\n")
    partial = lines.pop()  # the start of a line whose rest is still in the stream
    number = line
    for record in lines:
        if record.strip():
            yield number, record.rstrip(b"\r")
        number += 1
    yield from _lines(partial + _line(stream, limit), stream, number, limit)


def _lines(line: bytes, stream: BinaryIO, number: int, limit: int) -> Iterator[Record]:
    """``line`` (numbered ``number``) and the stream's lines after it, blank ones skipped."""
    while line:
        record = line.rstrip(b"\r\n")
        if record.strip():
            yield number, record
        number += 1
        line = _line(stream, limit)
