"""Golden files: each ``tests/golden/<family>/<case>`` parses to exactly its ``-expected.json``.

A new case is a new file; ``make golden`` rewrites the expectations after a
deliberate change (then review the diff).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.golden.regenerate import cases, expected_path, render

CASES = cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.parent.name}/{c.name}" for c in CASES])
def test_golden(case: Path) -> None:
    expected = json.loads(expected_path(case).read_text())
    got = json.loads(json.dumps(render(case)))
    assert len(got) == len(expected), f"{case.name}: {len(got)} results, expected {len(expected)}"
    for i, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
        assert mine == theirs, f"{case.parent.name}/{case.name} result {i} differs"


def test_every_family_has_golden_cases() -> None:
    from detector.parsers import PARSERS

    assert {c.parent.name for c in CASES} == set(PARSERS)
