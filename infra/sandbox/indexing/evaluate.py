"""Matching parsed queries against indexed thing documents (pure).

A thing document is flattened into `field -> values`: `thingName`, `thingId`,
`thingGroupNames` (one value per group), `registry.version`, `attributes.<name>`,
`shadow.name.<shadow>.reported.<path>` / `.desired.<path>` / `.version`,
`connectivity.connected`. Arrays give one value per element under the same
field. Matching is case-insensitive (the guide: "Search is case insensitive");
field names are case-sensitive. A range compares numbers as numbers when the
value and both bounds are numbers, else as lowercase strings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from infra.sandbox.indexing.query import And, Match, Node, Not, Or, Range

__all__ = ["Fields", "flatten", "matches", "scalar_text"]

Fields = Mapping[str, list[Any]]


def scalar_text(value: Any) -> str:
    """How a leaf value reads in a query and in an aggregation bucket."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def flatten(document: Mapping[str, Any], prefix: str = "") -> dict[str, list[Any]]:
    """Leaf values of a nested document by dotted path (arrays: one value per element)."""
    out: dict[str, list[Any]] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Mapping):
            for key, child in value.items():
                walk(child, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for item in value:
                walk(item, path)
        elif value is not None and path:
            out.setdefault(path, []).append(value)

    walk(document, prefix)
    return out


@lru_cache(maxsize=512)
def _pattern(value: str, quoted: bool) -> re.Pattern[str] | None:
    """A regex for a value with wildcards; None when the value is plain text."""
    if quoted or not any(c in value for c in "*?\\"):
        return None
    parts: list[str] = []
    escaped = False
    for char in value:
        if escaped:
            parts.append(re.escape(char))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _number(text: Any) -> float | None:
    if isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        return float(text)
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _match_value(node: Match, value: Any) -> bool:
    text = scalar_text(value)
    pattern = _pattern(node.value, node.quoted)
    if pattern is not None:
        return pattern.fullmatch(text) is not None
    if text.lower() == node.value.lower():
        return True
    wanted, have = _number(node.value), _number(value)
    return wanted is not None and have is not None and wanted == have


def _in_range(node: Range, value: Any) -> bool:
    have = _number(value)
    low = None if node.low is None else _number(node.low)
    high = None if node.high is None else _number(node.high)
    numeric = (
        have is not None
        and (node.low is None or low is not None)
        and (node.high is None or high is not None)
    )
    if numeric:
        left: Any = have
        lo: Any = low
        hi: Any = high
    else:
        left = scalar_text(value).lower()
        lo = None if node.low is None else node.low.lower()
        hi = None if node.high is None else node.high.lower()
    if lo is not None and (left < lo or (left == lo and not node.include_low)):
        return False
    return not (hi is not None and (left > hi or (left == hi and not node.include_high)))


def _values(fields: Fields, field: str | None) -> list[Any]:
    if field is not None:
        return list(fields.get(field, ()))
    return [v for values in fields.values() for v in values]


def matches(node: Node, fields: Fields) -> bool:
    """Whether a thing with these flattened fields is a hit of the query."""
    if isinstance(node, And):
        return all(matches(n, fields) for n in node.nodes)
    if isinstance(node, Or):
        return any(matches(n, fields) for n in node.nodes)
    if isinstance(node, Not):
        return not matches(node.node, fields)
    values = _values(fields, node.field)
    if isinstance(node, Range):
        return any(_in_range(node, v) for v in values)
    if node.value == "*" and not node.quoted:
        return bool(values)
    return any(_match_value(node, v) for v in values)
