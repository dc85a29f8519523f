"""Label selectors: the string syntax and the LabelSelector object, and matching.

Follows "Labels and Selectors" (https://kubernetes.io/docs/concepts/overview/working-with-
objects/labels/#label-selectors) and apimachinery/pkg/labels/selector.go:

* equality-based ``a=b``, ``a==b``, ``a!=b``; set-based ``a in (x,y)``, ``a notin (x)``,
  ``a`` (exists), ``!a`` (does not exist); requirements joined by commas are ANDed;
* ``!=`` and ``notin`` also match objects that do not have the key;
* the empty selector matches everything.  (A Service with no selector is a different thing:
  it selects nothing; callers decide which they mean.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from knemu.apiserver.meta import naming
from knemu.errors import LocalError

EQUALS, NOT_EQUALS, IN, NOT_IN, EXISTS, DOES_NOT_EXIST = "=", "!=", "in", "notin", "exists", "!"
_LABEL_SELECTOR_OPS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}
# Tokens of the selector language: punctuation first (longest match), then identifiers.
_TOKEN = re.compile(r"\s*(==|!=|=|!|\(|\)|,|[^\s=!(),]+)")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in (EQUALS, IN):
            return present and value in self.values
        if self.op in (NOT_EQUALS, NOT_IN):
            return not present or value not in self.values
        if self.op == EXISTS:
            return present
        return not present

    def __str__(self) -> str:
        if self.op == EXISTS:
            return self.key
        if self.op == DOES_NOT_EXIST:
            return f"!{self.key}"
        if self.op in (EQUALS, NOT_EQUALS):
            return f"{self.key}{self.op}{self.values[0]}"
        return f"{self.key} {self.op} ({','.join(sorted(self.values))})"


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def empty(self) -> bool:
        return not self.requirements

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def matches(selector: Selector, labels: Mapping[str, str] | None) -> bool:
    return selector.matches(labels)


def _check_key(key: str, where: str) -> None:
    errs = naming.qualified_name(key)
    if errs:
        raise LocalError(f"label selector {where}: invalid key {key!r}: {'; '.join(errs)}")


def _check_value(value: str, key: str, where: str) -> None:
    errs = naming.label_value(value)
    if errs:
        raise LocalError(
            f"label selector {where}: invalid value {value!r} for key {key!r}: {'; '.join(errs)}"
        )


def _requirement(key: str, op: str, values: tuple[str, ...], where: str) -> Requirement:
    _check_key(key, where)
    for v in values:
        _check_value(v, key, where)
    return Requirement(key, op, tuple(sorted(set(values))))


class _Parser:
    """Recursive descent over the tokens of one selector string."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = self._lex(text)
        self.pos = 0

    def _lex(self, text: str) -> list[str]:
        tokens, pos = [], 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if m is None:  # pragma: no cover - the pattern matches any non-space character
                raise self._error(f"unexpected character at position {pos}")
            tokens.append(m.group(1))
            pos = m.end()
        return tokens

    def _error(self, what: str) -> LocalError:
        return LocalError(
            f"invalid label selector {self.text!r}: {what}; expected e.g. "
            "'app=web,tier!=db,env in (prod,staging),!canary'"
        )

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> str:
        tok = self._peek()
        if tok is None:
            raise self._error("unexpected end of selector")
        self.pos += 1
        return tok

    def parse(self) -> Selector:
        reqs: list[Requirement] = []
        if not self.tokens:
            return Selector()
        while True:
            reqs.append(self._requirement())
            tok = self._peek()
            if tok is None:
                return Selector(tuple(reqs))
            if tok != ",":
                raise self._error(f"expected ',' between requirements, found {tok!r}")
            self.pos += 1

    def _requirement(self) -> Requirement:
        tok = self._take()
        if tok == "!":
            return _requirement(self._identifier("a key after '!'"), DOES_NOT_EXIST, (), self.text)
        key = self._check_identifier(tok, "a label key")
        op = self._peek()
        if op is None or op == ",":
            return _requirement(key, EXISTS, (), self.text)
        self.pos += 1
        if op in ("=", "=="):
            return _requirement(key, EQUALS, (self._value(),), self.text)
        if op == "!=":
            return _requirement(key, NOT_EQUALS, (self._value(),), self.text)
        if op in ("in", "notin"):
            return _requirement(key, IN if op == "in" else NOT_IN, self._set(), self.text)
        raise self._error(f"unknown operator {op!r} after key {key!r} (use =, ==, !=, in, notin)")

    def _check_identifier(self, tok: str, what: str) -> str:
        if tok in ("(", ")", ",", "=", "==", "!=", "!"):
            raise self._error(f"expected {what}, found {tok!r}")
        return tok

    def _identifier(self, what: str) -> str:
        return self._check_identifier(self._take(), what)

    def _value(self) -> str:
        tok = self._peek()
        if tok is None or tok in (",", ")"):
            return ""  # "a=" selects the empty value, as in Kubernetes
        return self._identifier("a value")

    def _set(self) -> tuple[str, ...]:
        if self._take() != "(":
            raise self._error("expected '(' to open a set of values")
        values: list[str] = []
        while True:
            tok = self._take()
            if tok == ")":
                break
            if tok == ",":
                continue
            values.append(self._check_identifier(tok, "a value"))
        if not values:
            raise self._error("a set must hold at least one value")
        return tuple(values)


def parse_selector(text: str) -> Selector:
    """Parse ``kubectl get -l`` syntax; raises LocalError saying what is wrong."""
    return _Parser(text).parse()


def from_map(mapping: Mapping[str, Any] | None) -> Selector:
    """A Service-style selector (key: value, all must match)."""
    reqs = [_requirement(str(k), EQUALS, (str(v),), "selector") for k, v in (mapping or {}).items()]
    return Selector(tuple(sorted(reqs, key=lambda r: r.key)))


def from_label_selector(selector: Mapping[str, Any]) -> Selector:
    """metav1.LabelSelector: matchLabels plus matchExpressions, all ANDed."""
    reqs = list(from_map(selector.get("matchLabels")).requirements)
    for i, expr in enumerate(selector.get("matchExpressions") or []):
        where = f"matchExpressions[{i}]"
        if not isinstance(expr, Mapping):
            raise LocalError(f"label selector {where}: must be an object with key and operator")
        op_name, values = expr.get("operator"), expr.get("values") or []
        if op_name not in _LABEL_SELECTOR_OPS:
            raise LocalError(
                f"label selector {where}: operator {op_name!r} is not one of "
                "In, NotIn, Exists, DoesNotExist"
            )
        op = _LABEL_SELECTOR_OPS[op_name]
        if op in (IN, NOT_IN) and not values:
            raise LocalError(f"label selector {where}: operator {op_name} needs values")
        if op in (EXISTS, DOES_NOT_EXIST) and values:
            raise LocalError(f"label selector {where}: operator {op_name} takes no values")
        reqs.append(_requirement(str(expr.get("key", "")), op, tuple(map(str, values)), where))
    return Selector(tuple(reqs))
