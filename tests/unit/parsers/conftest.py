"""Shared helpers for parser tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from detector.parsers import ParseError, ParseOptions

# The third-party corpus lives beside the repository (../shared/corpus); CI lays
# a copy there too. SEGWATCH_CORPUS points elsewhere if needed.
CORPUS = Path(
    os.environ.get("SEGWATCH_CORPUS") or Path(__file__).resolve().parents[4] / "shared" / "corpus"
)
if not (CORPUS / "README.md").is_file():
    raise RuntimeError(
        f"the flow-log corpus is not at {CORPUS}: clone next to shared/ or set SEGWATCH_CORPUS"
    )
GOLDEN = Path(__file__).resolve().parents[2] / "golden"
# A fixed "now" (2033-05-18) so year inference and future checks never depend on the clock.
REFERENCE_TIME = 2_000_000_000.0


@pytest.fixture
def options() -> ParseOptions:
    return ParseOptions(reference_time=REFERENCE_TIME)


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def only_event(results: list[Any]) -> dict[str, Any]:
    assert len(results) == 1, results
    assert not isinstance(results[0], ParseError), str(results[0])
    event: dict[str, Any] = results[0]
    return event


def only_error(results: list[Any]) -> ParseError:
    assert len(results) == 1, results
    assert isinstance(results[0], ParseError), results[0]
    return results[0]
