"""Reading the documents other tools write: YAML streams, JSON, and ``List`` wrappers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

from detector import yamlsafe
from detector.model.formats._derive import ImportProblem

__all__ = ["Document", "read_documents"]

Document = tuple[str, dict[str, Any]]  # (where: "file" or "file#3", the object)


def read_documents(paths: Sequence[str | Path]) -> Iterator[Document]:
    """Every object in the files: YAML multi-document streams or JSON; ``items`` of
    ``kind: List`` (and ``...List``) unwrapped.

    :raises ImportProblem: a file cannot be read or parsed.
    """
    for path in paths:
        name = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ImportProblem(
                name, f"cannot read: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        try:
            if text.lstrip()[:1] in ("{", "["):
                docs: list[Any] = [orjson.loads(text)]
            else:
                docs = [d for d in yamlsafe.load_all(text) if d is not None]
        except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{name}:{mark.line + 1}" if mark is not None else name
            raise ImportProblem(where, f"not valid YAML/JSON: {exc}") from None
        for i, doc in enumerate(docs, 1):
            where = name if len(docs) == 1 else f"{name}#{i}"
            yield from _unwrap(doc, where)


def _unwrap(doc: Any, where: str) -> Iterator[Document]:
    if isinstance(doc, list):
        for j, item in enumerate(doc):
            yield from _unwrap(item, f"{where}[{j}]")
        return
    if not isinstance(doc, dict):
        raise ImportProblem(where, "expected an object (a policy or a List of them)")
    kind = str(doc.get("kind", ""))
    if kind == "List" or (kind.endswith("List") and isinstance(doc.get("items"), list)):
        for j, item in enumerate(doc.get("items") or []):
            yield from _unwrap(item, f"{where} items[{j}]")
        return
    yield where, doc
