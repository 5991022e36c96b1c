"""Helpers for model tests: events built the way the parsers build them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detector.model import CompiledModel, compile_model, load_model, model_from_text

MODELS = Path(__file__).resolve().parents[3] / "rules" / "models"
_PROTO = {"tcp": "6", "udp": "17", "icmp": "1"}


def endpoint(where: str | dict[str, Any], port: int | None) -> dict[str, Any]:
    """An address, or a Kubernetes workload given as {"namespace", "labels", "ip"}."""
    if isinstance(where, str):
        out: dict[str, Any] = {"ip": where}
    else:
        out = {"ip": where.get("ip", "10.244.9.9"), "kubernetes": {
            "namespace": where["namespace"], "labels": where.get("labels", {}),
            "namespace_labels": where.get("namespace_labels", {}),
        }}  # fmt: skip
    if port is not None:
        out["port"] = port
    return out


def flow(
    src: str | dict[str, Any],
    dst: str | dict[str, Any],
    dport: int | None = None,
    *,
    sport: int | None = 40000,
    proto: str = "tcp",
    denied: bool = False,
    at: str = "2026-11-25T10:00:00.000Z",
) -> dict[str, Any]:
    """A flow event as a parser would give it."""
    if proto == "icmp":
        sport = dport = None
    return {
        "@timestamp": at,
        "event": {"kind": "event", "type": ["connection", "denied" if denied else "allowed"],
                  "outcome": "failure" if denied else "success"},
        "source": endpoint(src, sport),
        "destination": endpoint(dst, dport),
        "network": {"iana_number": _PROTO[proto], "transport": proto},
    }  # fmt: skip


def example(name: str) -> CompiledModel:
    return compile_model(load_model(MODELS / name))


def compiled(text: str) -> CompiledModel:
    return compile_model(model_from_text(text, "test.yaml"))


HEAD = "apiVersion: segwatch/v1\nmetadata: {name: t}\n"
