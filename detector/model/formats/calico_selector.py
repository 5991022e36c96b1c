"""Calico's selector language: parse, evaluate, and turn into Kubernetes-style selectors.

Supported: ``k == 'v'``, ``k != 'v'``, ``k in {'a', 'b'}``, ``k not in {...}``,
``has(k)``, ``!has(k)``, ``all()``, ``global()`` (as all()), ``!``, ``&&``,
``||`` and parentheses. Anything else (``contains``, ``starts with``,
``ends with``) is refused with the position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from detector.errors import DetectorError

__all__ = ["Expr", "SelectorError", "conjunct_labels", "parse_selector", "to_label_selector"]

_TOKEN = re.compile(
    r"""\s*(?:(?P<op>==|!=|&&|\|\||[!(){},])|(?P<str>'[^']*'|"[^"]*")
    |(?P<word>[A-Za-z0-9_./-]+))""",
    re.VERBOSE,
)


class SelectorError(DetectorError):
    """A selector segwatch cannot read; says where."""


@dataclass(frozen=True)
class Expr:
    """A node: ``op`` in and/or/not/eq/ne/in/notin/has/nothas/all; ``args`` its operands."""

    op: str
    args: tuple[Any, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        op, a = self.op, self.args
        if op == "all":
            return True
        if op == "and":
            return all(x.matches(labels) for x in a)
        if op == "or":
            return any(x.matches(labels) for x in a)
        if op == "not":
            return not bool(a[0].matches(labels))
        if op == "has":
            return bool(a[0] in labels)
        if op == "nothas":
            return bool(a[0] not in labels)
        have = labels.get(a[0])
        if op == "eq":
            return bool(have == a[1])
        if op == "ne":
            return bool(have != a[1])
        if op == "in":
            return bool(have in a[1])
        if op == "notin":
            return bool(have not in a[1])
        raise AssertionError(op)

    def dnf(self) -> list[list[Expr]]:
        """Disjunctive normal form: a list of conjunctions of atoms (negations pushed in)."""
        if self.op == "or":
            return [c for x in self.args for c in x.dnf()]
        if self.op == "and":
            out: list[list[Expr]] = [[]]
            for x in self.args:
                out = [left + right for left in out for right in x.dnf()]
            return out
        if self.op == "not":
            inner: Expr = self.args[0]
            return inner.negated().dnf()
        return [[] if self.op == "all" else [self]]

    def negated(self) -> Expr:
        op, a = self.op, self.args
        flip = {"eq": "ne", "ne": "eq", "in": "notin", "notin": "in"}
        if op in flip:
            return Expr(flip[op], a)
        if op == "and":
            return Expr("or", tuple(x.negated() for x in a))
        if op == "or":
            return Expr("and", tuple(x.negated() for x in a))
        if op == "not":
            negated: Expr = a[0]
            return negated
        if op == "has":
            return Expr("nothas", a)
        if op == "nothas":
            return Expr("has", a)
        raise SelectorError("!all() selects nothing")


def parse_selector(text: str) -> Expr:
    """Parse a Calico selector; an empty one is ``all()``.

    :raises SelectorError: with the position of the first thing not understood.
    """
    tokens = _tokens(text)
    if not tokens:
        return Expr("all")
    parser = _Parser(tokens, text)
    expr = parser.or_()
    if parser.i != len(tokens):
        parser.fail("unexpected text")
    return expr


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise SelectorError(f"selector {text!r}: cannot read {text[pos : pos + 20]!r} at {pos}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        out.append((kind, value, m.start(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, int]], text: str) -> None:
        self.tokens, self.text, self.i = tokens, text, 0

    def peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str, int]:
        if self.i >= len(self.tokens):
            self.fail("unexpected end")
        token = self.tokens[self.i]
        self.i += 1
        return token

    def fail(self, what: str) -> None:
        pos = self.tokens[self.i][2] if self.i < len(self.tokens) else len(self.text)
        raise SelectorError(f"selector {self.text!r}: {what} at {pos}")

    def expect(self, value: str) -> None:
        if self.peek() != value:
            self.fail(f"expected {value!r}")
        self.i += 1

    def or_(self) -> Expr:
        parts = [self.and_()]
        while self.peek() == "||":
            self.i += 1
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else Expr("or", tuple(parts))

    def and_(self) -> Expr:
        parts = [self.unary()]
        while self.peek() == "&&":
            self.i += 1
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else Expr("and", tuple(parts))

    def unary(self) -> Expr:
        if self.peek() == "!":
            self.i += 1
            return Expr("not", (self.unary(),))
        if self.peek() == "(":
            self.i += 1
            inner = self.or_()
            self.expect(")")
            return inner
        kind, word, _ = self.take()
        if kind != "word":
            self.i -= 1
            self.fail(f"unexpected {word!r}")
        if word in ("all", "global", "has") and self.peek() == "(":
            self.i += 1
            if word == "has":
                _, key, _ = self.take()
                self.expect(")")
                return Expr("has", (key,))
            self.expect(")")
            return Expr("all")
        return self.comparison(word)

    def comparison(self, key: str) -> Expr:
        op = self.peek()
        if op in ("==", "!="):
            self.i += 1
            value = self.string()
            return Expr("eq" if op == "==" else "ne", (key, value))
        negate = False
        if op == "not":
            self.i += 1
            negate = True
            op = self.peek()
        if op == "in":
            self.i += 1
            self.expect("{")
            values: list[str] = []
            while self.peek() != "}":
                values.append(self.string())
                if self.peek() == ",":
                    self.i += 1
            self.expect("}")
            return Expr("notin" if negate else "in", (key, frozenset(values)))
        self.fail(
            f"after {key!r}: expected ==, !=, in or not in (contains, starts with and "
            "ends with are not supported)"
        )
        raise AssertionError

    def string(self) -> str:
        kind, value, _ = self.take()
        if kind != "str":
            self.i -= 1
            self.fail("expected a quoted string")
        return value[1:-1]


def conjunct_labels(atoms: list[Expr]) -> dict[str, str] | None:
    """Labels satisfying every atom of a conjunction, or None if they contradict."""
    labels: dict[str, str] = {}
    for atom in atoms:
        if atom.op == "eq":
            labels.setdefault(atom.args[0], atom.args[1])
        elif atom.op == "in" and atom.args[0] not in labels:
            labels[atom.args[0]] = sorted(atom.args[1])[0] if atom.args[1] else ""
        elif atom.op == "has":
            labels.setdefault(atom.args[0], "present")
    if not all(a.matches(labels) for a in atoms):
        return None
    return labels


def to_label_selector(atoms: list[Expr], skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A Kubernetes-style label selector for a conjunction (keys in ``skip`` left out)."""
    match: dict[str, str] = {}
    exprs: list[dict[str, Any]] = []
    for atom in atoms:
        key = atom.args[0]
        if key in skip:
            continue
        if atom.op == "eq":
            match[key] = atom.args[1]
        elif atom.op == "ne":
            exprs.append({"key": key, "operator": "NotIn", "values": [atom.args[1]]})
        elif atom.op in ("in", "notin"):
            exprs.append(
                {
                    "key": key,
                    "operator": "In" if atom.op == "in" else "NotIn",
                    "values": sorted(atom.args[1]),
                }
            )
        elif atom.op == "has":
            exprs.append({"key": key, "operator": "Exists"})
        elif atom.op == "nothas":
            exprs.append({"key": key, "operator": "DoesNotExist"})
    out: dict[str, Any] = {}
    if match:
        out["matchLabels"] = match
    if exprs:
        out["matchExpressions"] = exprs
    return out
