"""Detection rules as data: ``detector/assets/rules/*.yaml``.

A rule fires on an event when all its conditions hold. Conditions read the
enriched event's fields (``segmentation.verdict``, ``destination.port``,
``network.transport``, ...) and the zones' tags through ``source.zone.*`` /
``destination.zone.*`` (``name``, ``tags.sensitivity``, ``tags.tenant``, ...),
plus ``risk.score`` and ``time.hour`` (UTC)::

    id: tenant-crossing
    title: A tenant reached another tenant
    severity: high              # info | low | medium | high | critical
    description: ...
    runbook: https://runbooks.example/segmentation/tenant-crossing
    when:
      - {field: segmentation.verdict, in: [allowed, violation]}
      - {field: source.zone.tags.tenant, exists: true}
      - {field: source.zone.tags.tenant, not_equals_field: destination.zone.tags.tenant}
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import re2
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, model_validator

from detector.model.compile import CompiledModel
from detector.model.load import ModelError, ModelProblem, load_yaml

__all__ = ["SEVERITIES", "Condition", "DetectionRule", "RuleSet", "load_rules"]

Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(value: Any) -> Any:
    if isinstance(value, str):
        m = re.fullmatch(r"(\d+)([smhd])", value.strip())
        if m is None:
            raise ValueError(f"{value!r} is not a duration like 30m, 1h or 1d")
        return int(m[1]) * _UNITS[m[2]]
    return value


Duration = Annotated[int, BeforeValidator(_seconds), Field(ge=0)]


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error is raised, with the rule's file and line


class Condition(BaseModel):
    """One test on one field; give exactly one operator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str = Field(pattern=r"^[a-z_@][a-z0-9_.@]*$")
    equals: Any = None
    not_equals: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")
    not_in: list[Any] | None = None
    contains: Any = None
    exists: bool | None = None
    gte: float | None = None
    lte: float | None = None
    matches: str | None = None
    equals_field: str | None = None
    not_equals_field: str | None = None
    _regex: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        given = [k for k in _OPERATORS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one operator of {', '.join(_OPERATORS)} "
                f"(got {', '.join(given) or 'none'})"
            )
        if self.matches is not None:
            try:  # RE2: linear time in the input, whatever the pattern
                self._regex = re2.compile(self.matches, _RE2_OPTIONS)
            except Exception as exc:  # re2.error: the pattern, not the rule file, is wrong
                why = b"".join(a for a in exc.args if isinstance(a, bytes)).decode(errors="replace")
                raise ValueError(f"matches: {self.matches[:80]!r} is not a regular expression "
                                 f"RE2 runs ({why or exc}); RE2 has no backreferences or "
                                 "lookaround") from None  # fmt: skip
        return self

    def test(self, get: Callable[[str], Any]) -> bool:
        value = get(self.field)
        if self.exists is not None:
            return (value is not None) is self.exists
        if value is None:
            return False
        if self.equals is not None:
            return bool(value == self.equals)
        if self.not_equals is not None:
            return bool(value != self.not_equals)
        if self.in_ is not None:
            return value in self.in_
        if self.not_in is not None:
            return value not in self.not_in
        if self.contains is not None:
            return isinstance(value, list | tuple | str) and self.contains in value
        if self.gte is not None:
            return isinstance(value, int | float) and value >= self.gte
        if self.lte is not None:
            return isinstance(value, int | float) and value <= self.lte
        if self._regex is not None:
            return self._regex.search(str(value)) is not None
        other = get(self.equals_field or self.not_equals_field or "")
        same = other is not None and value == other
        return same if self.equals_field is not None else (other is not None and not same)


_OPERATORS = (
    "equals",
    "not_equals",
    "in_",
    "not_in",
    "contains",
    "exists",
    "gte",
    "lte",
    "matches",
    "equals_field",
    "not_equals_field",
)


class DetectionRule(BaseModel):
    """One rule file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$")
    title: str = Field(min_length=1)
    severity: Severity
    description: str = Field(min_length=1)
    runbook: str = Field(pattern=r"^https?://")
    score: int = Field(default=80, ge=0, le=100, description="Risk this rule's match adds.")
    tags: tuple[str, ...] = ()
    when: tuple[Condition, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _no_suppress(cls, data: Any) -> Any:
        if isinstance(data, dict) and "suppress" in data:
            raise ValueError(
                "suppress is no longer used: an alert sends its changes at most every "
                "detectors.alert_update_seconds, and pages are per incident "
                "(incidents.update_seconds); remove it"
            )
        return data


class RuleSet:
    """Rules ready to test events, with zone tags resolved from the model."""

    def __init__(self, rules: list[DetectionRule], model: CompiledModel) -> None:
        self.rules = rules
        self.zones: dict[str, dict[str, Any]] = {
            name: {"name": name, "tags": {**zone.tags.model_dump(), **zone.tags.extra}}
            for name, zone in model.zones.items()
        }
        self.zones["internet"] = {"name": "internet", "tags": {}}
        fields = {
            name
            for rule in rules
            for c in rule.when
            for name in (c.field, c.equals_field, c.not_equals_field)
            if name and not name.startswith(("source.zone.", "destination.zone."))
        }
        self._event_paths = tuple((f, tuple(f.split("."))) for f in sorted(fields))
        self._cache: dict[tuple[Any, ...], list[DetectionRule]] = {}

    def matches(self, event: dict[str, Any], risk: int, hour: int) -> list[DetectionRule]:
        """The rules whose conditions all hold for this event.

        Results are cached by the values of the fields the rules read (the zone
        pair and, say, the verdict), so steady traffic costs one lookup.
        """
        seg = event.get("segmentation") or {}
        key: tuple[Any, ...] = (seg.get("source_zone"), seg.get("destination_zone"))
        for field, path in self._event_paths:
            if field == "risk.score":
                value: Any = risk
            elif field == "time.hour":
                value = hour
            elif path[0] == "segmentation" and len(path) == 2:
                value = seg.get(path[1])
            else:
                value = _walk(event, path)
            key += (tuple(value) if isinstance(value, list) else value,)
        try:
            hit = self._cache.get(key)
        except TypeError:  # an unhashable value (a mapping): no caching
            return self._evaluate(event, seg, risk, hour)
        if hit is None:
            hit = self._evaluate(event, seg, risk, hour)
            if len(self._cache) >= 100_000:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def _evaluate(self, event: dict[str, Any], seg: dict[str, Any], risk: int,
                  hour: int) -> list[DetectionRule]:  # fmt: skip
        sides = {
            "source.zone": self.zones.get(seg.get("source_zone") or "", {}),
            "destination.zone": self.zones.get(seg.get("destination_zone") or "", {}),
        }

        def get(field: str) -> Any:
            if field == "risk.score":
                return risk
            if field == "time.hour":
                return hour
            for prefix, zone in sides.items():
                if field.startswith(prefix + "."):
                    return _dig(zone, field[len(prefix) + 1 :])
            return _dig(event, field)

        return [rule for rule in self.rules if all(c.test(get) for c in rule.when)]


def _walk(data: Any, parts: tuple[str, ...]) -> Any:
    for part in parts:
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _dig(data: Any, path: str) -> Any:
    return _walk(data, tuple(path.split(".")))


def load_rules(directory: str | Path) -> list[DetectionRule]:
    """Every ``*.yaml`` rule in a folder, validated, ids unique.

    :raises ModelError: every problem, with file, line and field.
    """
    from pydantic import ValidationError

    from detector.model.load import problem_from_pydantic

    rules: list[DetectionRule] = []
    problems: list[ModelProblem] = []
    seen: dict[str, str] = {}
    folder = Path(directory)
    if not folder.is_dir():
        what = "is a file, not a folder of rules" if folder.exists() else "does not exist"
        raise ModelError([ModelProblem(str(folder), None, "", f"the rules folder {what}")])
    paths = sorted(folder.glob("*.yaml"))
    if not paths:
        raise ModelError([ModelProblem(str(folder), None, "", "the rules folder has no *.yaml "
                                       "rule files")])  # fmt: skip
    for path in paths:
        try:
            data, lines = load_yaml(path)
        except ModelError as exc:
            problems += exc.problems
            continue
        try:
            rule = DetectionRule.model_validate(data)
        except ValidationError as exc:
            problems += [problem_from_pydantic(e, str(path), lines) for e in exc.errors()]
            continue
        if rule.id in seen:
            problems.append(
                ModelProblem(
                    str(path),
                    lines.get(("id",)),
                    "id",
                    f"rule id {rule.id!r} is also used by {seen[rule.id]}",
                )
            )
        if path.stem != rule.id.replace("-", "_"):
            problems.append(
                ModelProblem(
                    str(path),
                    lines.get(("id",)),
                    "id",
                    f"the file should be named {rule.id.replace('-', '_')}.yaml",
                )
            )
        seen[rule.id] = str(path)
        rules.append(rule)
    if problems:
        raise ModelError(problems)
    return rules
