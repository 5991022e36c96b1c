"""The one YAML loader of segwatch: safe, and strict about what a hostile or careless
file can do.

- **No aliases.** ``*name`` is refused at its line: an alias bomb ("billion laughs")
  expands exponentially, and no segwatch file needs one.
- **No duplicate keys.** ``cidrs`` written twice is an error at the second, instead
  of the last one silently winning.
- **Bounded nesting** (:data:`MAX_DEPTH` levels): deeper is an error, not a
  RecursionError.
- YAML 1.1's base-60 numbers are off (``19:00`` stays a string).

Every reader uses it: models (and the worker's model topic), detection rules,
imported policies, the settings file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

__all__ = ["MAX_DEPTH", "StrictLoader", "load", "load_all"]

MAX_DEPTH = 64


class StrictLoader(yaml.SafeLoader):
    """SafeLoader without aliases, duplicate keys, deep nesting or base-60 numbers."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):  # type: ignore[no-untyped-call]
            event = self.get_event()  # type: ignore[no-untyped-call]
            raise ComposerError(None, None, f"aliases are not allowed (*{event.anchor}): "
                                "write the value out", event.start_mark)  # fmt: skip
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                    event.start_mark)  # fmt: skip
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the constructor says so
                break
            if duplicate:
                raise ConstructorError(None, None, f"duplicate key {key!r}: each key once",
                                       key_node.start_mark)  # fmt: skip
            seen.add(key)
        return super().construct_mapping(node, deep)


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _NUMBER_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver(  # type: ignore[no-untyped-call]
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
StrictLoader.add_implicit_resolver(  # type: ignore[no-untyped-call]
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def load(text: str) -> Any:
    """One document.

    :raises yaml.YAMLError: not YAML, or an alias, a duplicate key, too deep.
    """
    return yaml.load(text, Loader=StrictLoader)


def load_all(text: str) -> Iterator[Any]:
    """Every document of a ``---``-separated stream (see :func:`load`)."""
    return yaml.load_all(text, Loader=StrictLoader)
