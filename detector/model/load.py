"""Reading model files: YAML with line numbers, schema validation, whole-model checks.

Every problem is collected (not just the first) and reported as
``FILE:LINE: FIELD: reason``, e.g.
``model.yaml:14: zones[3].cidrs[1]: '10.0.300.0/24' is not a valid network``.
"""

from __future__ import annotations

import gc
import hashlib
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from detector.errors import DetectorError
from detector.model.schema import ANY_ZONE, INTERNET, Flow, ModelDocument, inside
from detector.yamlsafe import StrictLoader

__all__ = [
    "ModelError",
    "ModelProblem",
    "SegmentationModel",
    "dump_yaml",
    "dump_yaml_all",
    "load_model",
    "load_yaml",
    "model_from_data",
    "model_from_text",
    "problem_from_pydantic",
]

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class ModelProblem:
    """One thing wrong with a model file, and where."""

    file: str
    line: int | None
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"


class ModelError(DetectorError):
    """A model that cannot be used; ``problems`` lists every finding."""

    def __init__(self, problems: list[ModelProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class SegmentationModel:
    """A validated model: the document, where it came from, and its version.

    ``version`` is ``metadata.version`` (if set) plus a hash of the content,
    so two different models never share a version.
    """

    document: ModelDocument
    source: str
    digest: str

    @property
    def name(self) -> str:
        return self.document.metadata.name

    @property
    def version(self) -> str:
        declared = self.document.metadata.version
        return f"{declared}+{self.digest[:12]}" if declared else self.digest[:12]

    def to_data(self) -> dict[str, Any]:
        """The document as plain data, as it would be written to a file."""
        data: dict[str, Any] = self.document.model_dump(
            mode="json", by_alias=True, exclude_defaults=True
        )
        data["apiVersion"] = self.document.api_version  # kept even though it is the default
        for flow in data.get("flows", ()):
            for key in ("from", "to"):
                if len(flow[key]) == 1:  # written as people write it
                    flow[key] = flow[key][0]
        return {"apiVersion": data.pop("apiVersion"), **data}

    def to_yaml(self) -> str:
        return dump_yaml(self.to_data())


class _Dumper(yaml.SafeDumper):
    """Never writes anchors and aliases: people read these files."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(data: Any) -> str:
    """Block-style YAML, keys in the order given, for files people read."""
    return yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )


def dump_yaml_all(docs: list[Any]) -> str:
    """A ``---``-separated stream of :func:`dump_yaml` documents."""
    return yaml.dump_all(
        docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )


def load_model(path: str | Path) -> SegmentationModel:
    """Read, validate and check one model file.

    :raises ModelError: anything wrong, every problem with its line and field.
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        problem = ModelProblem(name, None, "", f"cannot read: {exc.strerror or exc}")
        raise ModelError([problem]) from None
    except UnicodeDecodeError as exc:
        problem = ModelProblem(name, None, "", f"not UTF-8 text ({exc.reason})")
        raise ModelError([problem]) from None
    return model_from_text(text, name)


def load_yaml(path: str | Path) -> tuple[Any, dict[Path_, int]]:
    """A YAML file's data and the line of every key and item (for error messages).

    :raises ModelError: the file cannot be read or is not YAML.
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ModelError([ModelProblem(name, None, "", f"cannot read: {reason}")]) from None
    return _parse_yaml(text, name)


def model_from_text(text: str, source: str = "<model>") -> SegmentationModel:
    """:func:`load_model` for text already read."""
    data, lines = _parse_yaml(text, source)
    return model_from_data(data, source, lines)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many acyclic objects.

    A 50k-zone model is hundreds of thousands of small objects; without the
    pause, repeated full collections triple the time to load and compile it.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def model_from_data(
    data: Any, source: str = "<model>", lines: dict[Path_, int] | None = None
) -> SegmentationModel:
    """Validate plain data (what a YAML/JSON file holds) as a model."""
    with gc_paused():
        return _model_from_data(data, source, lines)


def _model_from_data(data: Any, source: str, lines: dict[Path_, int] | None) -> SegmentationModel:
    lines = lines or {}
    if not isinstance(data, dict):
        raise ModelError(
            [ModelProblem(source, 1, "", "a model is a mapping with apiVersion, metadata, zones")]
        )
    try:
        doc = ModelDocument.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # a list whose items failed also reports being too short: noise
        located = [e["loc"] for e in errors if e["type"] != "too_short"]
        errors = [
            e for e in errors
            if e["type"] != "too_short" or not any(loc[: len(e["loc"])] == e["loc"]
                                                   for loc in located)
        ]  # fmt: skip
        raise ModelError([problem_from_pydantic(err, source, lines) for err in errors]) from None
    doc = _with_flow_ids(doc)
    problems = [
        ModelProblem(source, _line(lines, path), _field(path), reason)
        for path, reason in check_document(doc)
    ]
    if problems:
        raise ModelError(problems)
    # the version follows the content as given (hashing the validated document costs
    # seconds for large models)
    canonical = orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return SegmentationModel(doc, source, hashlib.sha256(canonical).hexdigest())


# --- whole-model checks ------------------------------------------------------


def check_document(doc: ModelDocument) -> list[tuple[Path_, str]]:
    """(path, reason) for every cross-reference or overlap problem."""
    problems: list[tuple[Path_, str]] = []
    names: dict[str, int] = {}
    for i, zone in enumerate(doc.zones):
        if zone.name in names:
            problems.append(
                (("zones", i, "name"), f"zone {zone.name!r} is declared twice "
                 f"(first as zones[{names[zone.name]}])")
            )  # fmt: skip
        names.setdefault(zone.name, i)
    known = set(names) | {INTERNET}
    for i, zone in enumerate(doc.zones):
        if zone.within is not None and zone.within not in names:
            problems.append((("zones", i, "within"), _unknown(zone.within, known)))
        elif zone.within == zone.name:
            problems.append((("zones", i, "within"), "a zone cannot be within itself"))
    problems += _within_cycles(doc, names)
    ids: dict[str, int] = {}
    for i, flow in enumerate(doc.flows):
        for key, refs in (("from", flow.source), ("to", flow.destination)):
            for j, ref in enumerate(refs):
                if ref != ANY_ZONE and ref not in known:
                    problems.append((("flows", i, key, j), _unknown(ref, known)))
        if flow.id in ids:
            first = ids[flow.id]
            problems.append((("flows", i, "id"), f"flow id {flow.id!r} is used twice "
                             f"(first flows[{first}])"))  # fmt: skip
        ids.setdefault(flow.id, i)
    if doc.defaults.dns is not None and doc.defaults.dns.zone not in names:
        problems.append((("defaults", "dns", "zone"), _unknown(doc.defaults.dns.zone, known)))
    if not problems:
        problems += _overlaps(doc)
    return problems


def _unknown(name: str, known: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown zone {name!r}{hint}"


def _within_cycles(doc: ModelDocument, names: dict[str, int]) -> list[tuple[Path_, str]]:
    parents = {z.name: z.within for z in doc.zones if z.within in names}
    out: list[tuple[Path_, str]] = []
    for name in parents:
        seen = [name]
        current = parents.get(name)
        while current is not None:
            if current in seen:
                if current == name:
                    cycle = " -> ".join([*seen, current])
                    out.append(
                        (("zones", names[name], "within"), f"zones nest in a cycle: {cycle}")
                    )
                break
            seen.append(current)
            current = parents.get(current)
    return out


def ancestors(doc: ModelDocument) -> dict[str, tuple[str, ...]]:
    """zone -> the zones it is declared ``within``, nearest first."""
    parents = {z.name: z.within for z in doc.zones}
    out: dict[str, tuple[str, ...]] = {}
    for name in parents:
        chain: list[str] = []
        current = parents[name]
        while current is not None and current not in chain and current != name:
            chain.append(current)
            current = parents.get(current)
        out[name] = tuple(chain)
    return out


def _overlaps(doc: ModelDocument) -> list[tuple[Path_, str]]:
    """CIDRs of two zones that overlap, unless one zone is declared within the other.

    Networks either nest or are disjoint, so one sort and a stack find every
    containment in O(n log n), for models of any size.
    """
    chains = ancestors(doc)
    entries = []  # (version, first address, -prefixlen, zone index, cidr index)
    for zi, zone in enumerate(doc.zones):
        for ci, net in enumerate(zone.cidrs):
            entries.append((net.version, int(net.network_address), -net.prefixlen, zi, ci))
    entries.sort()
    problems: list[tuple[Path_, str]] = []
    stack: list[tuple[int, int, int, int]] = []  # (version, last address, zone, cidr)
    for version, first, _neg, zi, ci in entries:
        net = doc.zones[zi].cidrs[ci]
        last = first | (
            (1 << (net.max_prefixlen - net.prefixlen)) - 1
        )  # (broadcast_address is slow)
        while stack and (stack[-1][0] != version or stack[-1][1] < first):
            stack.pop()
        if stack:
            _, _, pzi, pci = stack[-1]
            outer, inner = doc.zones[pzi], doc.zones[zi]
            pnet = outer.cidrs[pci]
            if pnet == net and pzi != zi:
                problems.append((
                    ("zones", zi, "cidrs", ci),
                    f"{net} is also in zone {outer.name!r}: a network belongs to one zone",
                ))  # fmt: skip
            elif pzi != zi and outer.name not in chains[inner.name]:
                problems.append((
                    ("zones", zi, "cidrs", ci),
                    f"{net} overlaps {pnet} of zone {outer.name!r}; if {inner.name!r} is "
                    f"part of {outer.name!r}, declare it: within: {outer.name}",
                ))  # fmt: skip
        stack.append((version, last, zi, ci))
    # a zone declared within another must really lie inside it
    by_name = {z.name: z for z in doc.zones}
    for zi, zone in enumerate(doc.zones):
        parent = by_name.get(zone.within) if zone.within else None
        if parent is None or not parent.cidrs:
            continue
        for ci, net in enumerate(zone.cidrs):
            if not any(inside(net, p) for p in parent.cidrs):
                problems.append((
                    ("zones", zi, "cidrs", ci),
                    f"{net} is not inside any network of {parent.name!r}, which it is declared "
                    "within",
                ))  # fmt: skip
    return problems


def _with_flow_ids(doc: ModelDocument) -> ModelDocument:
    """Flows without an id get a readable one derived from what they allow."""
    if all(f.id for f in doc.flows):
        return doc
    taken = {f.id for f in doc.flows if f.id}
    flows: list[Flow] = []
    for flow in doc.flows:
        if not flow.id:
            base = _slug(
                f"{'+'.join(flow.source)}-to-{'+'.join(flow.destination)}-{flow.protocol}"
                + (f"-{'_'.join(str(p) for p in flow.ports)}" if flow.ports else "")
            )
            fid, n = base, 2
            while fid in taken:
                fid, n = f"{base}-{n}", n + 1
            taken.add(fid)
            flow = flow.model_copy(update={"id": fid})
        flows.append(flow)
    return doc.model_copy(update={"flows": tuple(flows)})


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9_.:-]+", "-", text.lower().replace("*", "any")).strip("-._:")
    return slug[:120] or "flow"


# --- YAML with positions -----------------------------------------------------


def _parse_yaml(text: str, source: str) -> tuple[Any, dict[Path_, int]]:
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        data = (
            loader.construct_document(node)  # type: ignore[no-untyped-call]
            if node is not None
            else None
        )
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        reason = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise ModelError([ModelProblem(source, line, "", f"not valid YAML: {reason}")]) from None
    except yaml.YAMLError as exc:
        raise ModelError([ModelProblem(source, None, "", f"not valid YAML: {exc}")]) from None
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]
    lines: dict[Path_, int] = {}
    if node is not None:
        _index(node, (), lines)
    return data, lines


def _index(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, str(key.value))
            _index(value, sub, lines)
            lines[sub] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), lines)


def _line(lines: dict[Path_, int], path: Path_) -> int | None:
    for end in range(len(path), -1, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


def _field(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def problem_from_pydantic(err: Any, source: str, lines: dict[Path_, int]) -> ModelProblem:
    """A pydantic error as ``FILE:LINE: FIELD: reason``."""
    # pydantic's loc includes union/validator names that are not in the file
    path = tuple(
        p for p in err["loc"]
        if isinstance(p, int) or not (p.startswith(("function-", "tagged-union")) or "[" in p)
    )  # fmt: skip
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = f"unknown field {path[-1]!r}" if path else "unknown field"
    elif err["type"] == "missing":
        message = "is required"
    elif err["type"] == "literal_error":
        message = f"{err['input']!r}: {message}"
    return ModelProblem(source, _line(lines, path), _field(path), message)
