"""What changes between two models: zone pairs and services that become allowed or
denied, zones added or removed, and (given recorded traffic) the observed flows
whose verdict would change.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from detector.model.compile import CompiledModel, CompiledRule
from detector.model.reach import edges
from detector.model.services import (
    FULL,
    PROTOCOL_WORDS,
    PROTOCOLS,
    Services,
    render,
    subtract,
    union,
)

__all__ = ["ModelDiff", "VerdictChange", "diff_models", "diff_on_events"]


@dataclass(frozen=True)
class ModelDiff:
    """The semantic difference, pair by pair."""

    zones_added: tuple[str, ...]
    zones_removed: tuple[str, ...]
    zones_changed: tuple[str, ...]  # same name, different members
    allowed: tuple[tuple[str, str, str], ...]  # (source, destination, services) newly allowed
    denied: tuple[tuple[str, str, str], ...]  # newly denied
    modes_changed: tuple[tuple[str, str, str], ...] = ()  # (zone, old mode, new mode)

    @property
    def empty(self) -> bool:
        return not (self.zones_added or self.zones_removed or self.zones_changed
                    or self.allowed or self.denied or self.modes_changed)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "zones_added": list(self.zones_added),
            "zones_removed": list(self.zones_removed),
            "zones_changed": list(self.zones_changed),
            "newly_allowed": [dict(zip(("source", "destination", "services"), a, strict=True))
                              for a in self.allowed],
            "newly_denied": [dict(zip(("source", "destination", "services"), d, strict=True))
                             for d in self.denied],
            "modes_changed": [dict(zip(("zone", "old", "new"), m, strict=True))
                              for m in self.modes_changed],
        }  # fmt: skip


@dataclass
class VerdictChange:
    """Observed flows whose verdict differs between the models, grouped; and the
    violations of monitor zones: those the new model starts enforcing (monitor ->
    enforce), and those it would block once its monitor zones are enforced."""

    changes: Counter[tuple[str, str, str, str, str]] = field(default_factory=Counter)
    samples: dict[tuple[str, str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    events: int = 0
    newly_enforced: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    would_block: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        keys = ("source_zone", "destination_zone", "service", "old_verdict", "new_verdict")

        def groups(counts: Counter[tuple[str, str, str]]) -> list[dict[str, Any]]:
            return [{"source_zone": s, "destination_zone": d, "service": svc, "count": n}
                    for (s, d, svc), n in counts.most_common()]  # fmt: skip

        return {
            "events": self.events,
            "changed": sum(self.changes.values()),
            "groups": [
                {**dict(zip(keys, key, strict=True)), "count": n}
                for key, n in self.changes.most_common()
            ],
            "enforcing_now_blocks": groups(self.newly_enforced),
            "enforcing_would_block": groups(self.would_block),
        }


def diff_models(old: CompiledModel, new: CompiledModel, at: float | None = None) -> ModelDiff:
    """Compare what each model allows, zone pair by zone pair (wildcards expanded)."""
    at = time.time() if at is None else at
    a, b = _allowed(old, at), _allowed(new, at)
    allowed, denied = [], []
    for pair in sorted(set(a) | set(b)):
        gained = subtract(b.get(pair, {}), a.get(pair, {}))
        lost = subtract(a.get(pair, {}), b.get(pair, {}))
        if gained:
            allowed.append((*pair, render(gained)))
        if lost:
            denied.append((*pair, render(lost)))
    old_zones, new_zones = old.zones, new.zones
    changed = tuple(
        sorted(
            name
            for name in set(old_zones) & set(new_zones)
            if (old_zones[name].cidrs, old_zones[name].kubernetes)
            != (new_zones[name].cidrs, new_zones[name].kubernetes)
        )
    )
    modes = tuple(
        (name, old_zones[name].mode, new_zones[name].mode)
        for name in sorted(set(old_zones) & set(new_zones))
        if old_zones[name].mode != new_zones[name].mode
    )
    return ModelDiff(
        tuple(sorted(set(new_zones) - set(old_zones))),
        tuple(sorted(set(old_zones) - set(new_zones))),
        changed,
        tuple(allowed),
        tuple(denied),
        modes,
    )


def diff_on_events(
    old: CompiledModel, new: CompiledModel, events: Iterable[dict[str, Any]]
) -> VerdictChange:
    """Place every event under both models; count those whose verdict changes, and
    the violations the new model enforces or would enforce (its monitor zones)."""
    result = VerdictChange()
    for event in events:
        result.events += 1
        before, after = old.place(event), new.place(event)
        if after.verdict == "violation" and not after.reply:
            pair = (after.source_zone or "(none)", after.destination_zone or "(none)",
                    after.service or _service(event))  # fmt: skip
            if after.mode == "monitor":
                result.would_block[pair] += 1
            elif before.verdict == "violation" and before.mode == "monitor":
                result.newly_enforced[pair] += 1
        if before.verdict == after.verdict:
            continue
        key = (
            after.source_zone or before.source_zone or "(none)",
            after.destination_zone or before.destination_zone or "(none)",
            _service(event),
            before.verdict,
            after.verdict,
        )
        result.changes[key] += 1
        result.samples.setdefault(key, event)
    return result


def _service(event: dict[str, Any]) -> str:
    network = event.get("network") or {}
    port = (event.get("destination") or {}).get("port")
    return f"{network.get('transport', '?')}/{port if port is not None else '-'}"


def _allowed(model: CompiledModel, at: float) -> dict[tuple[str, str], Services]:
    by_id = {r.id: r for r in model.rules}
    out: dict[tuple[str, str], Services] = {}
    for hops in edges(model, at).values():
        for hop in hops:
            pair = (hop.source, hop.destination)
            out[pair] = union(out.get(pair, {}), rule_services(by_id[hop.rule_id]))
    return out


def rule_services(rule: CompiledRule) -> Services:
    """What a compiled rule allows, as a service set."""
    protos = [PROTOCOL_WORDS.get(p, "other") for p in rule.protocols] or list(PROTOCOLS)
    out: Services = {}
    for proto in protos:
        ports = [*rule.ports] if rule.ports and proto in ("tcp", "udp") else list(FULL)
        out = union(out, {proto: ports})
    return out
