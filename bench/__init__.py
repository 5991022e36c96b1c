"""segwatch's benchmarks: `make bench` runs every module listed in :data:`SUITES`.

Each suite module exposes ``run(scale: float) -> list[Row]``; rows print as
one table (name, value, unit, conditions). Figures are measured, never
asserted: targets are read off the table, not enforced by tests.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SUITES", "Row"]

SUITES: tuple[str, ...] = (
    "bench.ceilings",
    "bench.parsers",
    "bench.model",
    "bench.detect",
    "bench.partitions",
    "bench.pipeline",
)


@dataclass(frozen=True)
class Row:
    """One measured figure."""

    name: str
    value: float
    unit: str
    conditions: str
