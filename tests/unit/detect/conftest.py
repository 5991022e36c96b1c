"""Helpers for detector tests: placed events at chosen times."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from detector.detect import DetectorSettings, Engine, load_rules
from detector.detect.base import Context
from detector.model import CompiledModel

from ..model.conftest import MODELS, example, flow

RULES = MODELS.parent / "rules"
MONDAY = datetime(2026, 11, 2, tzinfo=UTC).timestamp()  # a Monday, 00:00 UTC


def stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event(
    src: Any,
    dst: Any,
    port: int | None,
    at: float,
    *,
    sport: int = 40000,
    proto: str = "tcp",
    denied: bool = False,
    nbytes: int = 500,
) -> dict[str, Any]:
    e = flow(src, dst, port, sport=sport, proto=proto, denied=denied, at=stamp(at))
    e["network"]["bytes"] = nbytes
    return e


def ctx(model: CompiledModel, e: dict[str, Any]) -> Context:
    return Context.of(e, model.place(e))


def engine(name: str = "retail_store.yaml", **settings: Any) -> Engine:
    model = example(name)
    return Engine(model, DetectorSettings(**settings), load_rules(RULES))


__all__ = ["MONDAY", "RULES", "ctx", "engine", "event", "example", "stamp"]
