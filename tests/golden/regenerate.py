"""Rewrite every ``tests/golden/<family>/<case>-expected.json`` from the current parsers.

Run it (``make golden``) after a deliberate change to the output, then read
the diff: the golden test fails on any change that was not deliberate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from detector.files import iter_records
from detector.parsers import ParseError, ParseOptions, make_parser

GOLDEN = Path(__file__).resolve().parent
REFERENCE_TIME = 2_000_000_000.0  # the same fixed "now" as the parser tests


def cases() -> list[Path]:
    """Every golden input: files in a family folder that are not expectations."""
    return sorted(
        p for p in GOLDEN.glob("*/*") if p.is_file() and not p.name.endswith("-expected.json")
    )


def render(case: Path) -> list[Any]:
    """The parser's results for one input, as they are stored."""
    parser = make_parser(case.parent.name, ParseOptions(reference_time=REFERENCE_TIME))
    out: list[Any] = []
    for number, raw in iter_records(str(case)):
        for result in parser.parse(raw):
            if isinstance(result, ParseError):
                out.append({"line": number, "error": str(result)})
            else:
                out.append(result)
    return out


def expected_path(case: Path) -> Path:
    return case.with_name(case.name + "-expected.json")


def main() -> None:
    for case in cases():
        expected_path(case).write_text(json.dumps(render(case), indent=2, sort_keys=True) + "\n")
        print(f"wrote {expected_path(case).relative_to(GOLDEN)}")


if __name__ == "__main__":
    main()
