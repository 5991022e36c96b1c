"""Reading files with bounded memory: a gzip bomb's single line, a huge JSON array,
pretty-printed documents (numbered by the line they start on, in one pass), U+2028
inside strings, bytes that are not UTF-8."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

from detector.files import iter_records
from detector.parsers import make_parser

MiB = 1024 * 1024


def _peak(path: Path, limit: int) -> tuple[list[tuple[int, int]], int]:
    """(line, size) of every record, and the peak of memory Python allocated meanwhile."""
    tracemalloc.start()
    try:
        found = [(number, len(raw)) for number, raw in iter_records(str(path), limit)]
        return found, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_gzip_bomb_line_is_cut_at_the_limit_and_the_rest_skipped(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.log.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as out:
        for _ in range(64):
            out.write(b"A" * MiB)  # one 64 MiB line ...
        out.write(b"\n2 123456789012 eni-1 10.0.1.10 10.0.2.20 1 2 6 1 60 1 2 ACCEPT OK\n")
    assert bomb.stat().st_size < MiB
    found, peak = _peak(bomb, limit=MiB)
    assert found[0] == (1, MiB + 1)  # ... handed on cut, for the parser to refuse
    assert found[1][0] == 2 and len(found) == 2  # and the next record is read
    assert peak < 8 * MiB
    (error,) = make_parser("vpcflow").parse(b"A" * (MiB + 1))
    assert "bytes" in str(error)


def test_a_huge_json_array_is_read_no_further_than_the_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_text("[\n" + ",\n".join(f'{{"a": {i}}}' for i in range(400_000)) + "\n]\n")
    found, peak = _peak(big, limit=MiB)
    assert found[0] == (1, MiB + 1)  # refused as one record over the limit
    # decoding a partial document builds its objects before it fails: a small
    # multiple of the limit, never the file (about 17 MiB here)
    assert peak < 24 * MiB


def test_pretty_documents_are_numbered_by_their_first_line(tmp_path: Path) -> None:
    pretty = tmp_path / "pretty.json"
    docs = [{"n": i, "s": "a\u2028b", "nested": {"x": [1, 2]}} for i in range(20_000)]
    pretty.write_text("\n".join(json.dumps(d, indent=2) for d in docs) + "\n")
    records = list(iter_records(str(pretty)))
    height = json.dumps(docs[0], indent=2).count("\n") + 1
    assert [n for n, _ in records[:3]] == [1, 1 + height, 1 + 2 * height]
    assert len(records) == 20_000 and json.loads(records[-1][1])["n"] == 19_999
    assert json.loads(records[5][1])["s"] == "a\u2028b"  # one string, not two records


def test_a_line_separator_inside_a_record_does_not_split_it(tmp_path: Path) -> None:
    lines = tmp_path / "flows.jsonl"
    lines.write_bytes(b'{"s": "a\xe2\x80\xa8b"}\n{"s": "c"}\n')
    assert [n for n, _ in iter_records(str(lines))] == [1, 2]


def test_bytes_that_are_not_utf8_are_reported_as_such(tmp_path: Path) -> None:
    pretty = tmp_path / "bad.json"
    pretty.write_bytes(b'{\n "flow": {"verdict": "DROPPED",\n "Summary": "a\xff"}}\n')
    ((number, raw),) = iter_records(str(pretty))
    (error,) = make_parser("auto").parse(raw)
    assert number == 1 and "invalid UTF-8" in str(error) and "surrogate" not in str(error)


def test_what_is_not_json_after_all_goes_on_line_by_line(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.log"
    mixed.write_text('{"start": 1,\nnot json\nsecond line\n')
    assert [n for n, _ in iter_records(str(mixed))] == [1, 2, 3]
