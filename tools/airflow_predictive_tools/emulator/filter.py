"""Compute Engine list ``filter`` expressions, evaluated on JSON resources for the emulator.

Supports what clients write in practice: ``labels.pool = etl``, ``status != TERMINATED``,
``name = worker-*``, ``labels.pool:*`` (key present), ``name : work`` (substring),
``name eq 'work.*'`` / ``ne`` (RE2-style full match), joined with ``AND``/``OR``/juxtaposition,
``NOT`` and parentheses, e.g. ``(labels.pool = etl) AND (status = RUNNING)``.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

_TOKEN = re.compile(r"""\s*(\(|\)|"[^"]*"|'[^']*'|!=|>=|<=|=|:|<|>|[^\s()=!:<>"']+)""")
_OPERATORS = {"=", "!=", ":", "<", ">", "<=", ">=", "eq", "ne"}


class FilterError(ValueError):
    """A filter expression the emulator cannot parse."""


def matches(resource: dict[str, Any], expression: str | None) -> bool:
    """Return whether a JSON resource satisfies a Compute Engine list filter.

    :param resource: the resource as returned by the API (camelCase keys).
    :param expression: the ``filter`` query parameter; empty matches everything.
    """
    if not expression or not expression.strip():
        return True
    parser = _Parser(_tokens(expression), expression)
    result = parser.expression(resource)
    if parser.position != len(parser.tokens):
        raise FilterError(f"Invalid list filter expression {expression!r}")
    return result


def _tokens(expression: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    text = expression.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match:
            raise FilterError(f"Invalid list filter expression {expression!r}")
        tokens.append(match.group(1))
        position = match.end()
        while position < len(text) and text[position].isspace():
            position += 1
    return tokens


class _Parser:
    def __init__(self, tokens: list[str], source: str) -> None:
        self.tokens = tokens
        self.position = 0
        self.source = source

    def _peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            raise FilterError(f"Invalid list filter expression {self.source!r}: unexpected end")
        self.position += 1
        return token

    def expression(self, resource: dict) -> bool:
        result = self.term(resource)
        while self._peek() is not None and self._peek().upper() == "OR":
            self._take()
            result = self.term(resource) or result
        return result

    def term(self, resource: dict) -> bool:
        result = self.factor(resource)
        while self._peek() is not None and self._peek() != ")" and self._peek().upper() != "OR":
            if self._peek().upper() == "AND":
                self._take()
            result = self.factor(resource) and result
        return result

    def factor(self, resource: dict) -> bool:
        token = self._take()
        if token == "(":
            result = self.expression(resource)
            if self._take() != ")":
                raise FilterError(f"Invalid list filter expression {self.source!r}: missing ')'")
            return result
        if token.upper() == "NOT" or token == "-":
            return not self.factor(resource)
        operator = self._take()
        if operator not in _OPERATORS:
            raise FilterError(
                f"Invalid list filter expression {self.source!r}: expected an operator after {token!r}"
            )
        return _compare(_lookup(resource, token), operator, _unquote(self._take()))


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        return token[1:-1]
    return token


def _lookup(resource: Any, path: str) -> Any:
    value = resource
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return None
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _compare(value: Any, operator: str, wanted: str) -> bool:
    if operator == ":":
        if wanted == "*":
            return value is not None
        if isinstance(value, list):
            return any(wanted.lower() in _text(v).lower() for v in value)
        return value is not None and wanted.lower() in _text(value).lower()
    if operator in ("eq", "ne"):
        found = value is not None and re.fullmatch(wanted, _text(value)) is not None
        return found if operator == "eq" else not found
    if operator in ("=", "!="):
        found = value is not None and fnmatch.fnmatchcase(_text(value), wanted)
        return found if operator == "=" else not found
    if value is None:
        return False
    try:
        left, right = float(value), float(wanted)
    except (TypeError, ValueError):
        left, right = _text(value), wanted  # type: ignore[assignment]
    return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[operator]
