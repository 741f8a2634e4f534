"""How deep decoded JSON may nest: parsing and every later walk (validation, encoding, a plugin's
own json.loads) recurse once per level, and Python's limit (~1000) turns a hostile document into a
RecursionError far from where it came in. Checked where JSON enters: the HTTP API and plugin.json.
"""

from __future__ import annotations

import json
from typing import Any

# Real job params and manifests nest a handful of levels; 64 leaves room and stays far from the limit.
MAX_DEPTH = 64


class TooDeep(ValueError):
    """A JSON document that nests deeper than MAX_DEPTH (or than Python can parse)."""


def depth(value: Any) -> int:
    """The nesting depth of decoded JSON (a scalar is 0), walked without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            level += 1
            deepest = max(deepest, level)
            stack.extend((child, level) for child in item if isinstance(child, (dict, list)))
    return deepest


def loads(text: str | bytes) -> Any:
    """`json.loads` that raises TooDeep (a ValueError) instead of RecursionError or a deep value.

    Raises:
        json.JSONDecodeError: not JSON.
        TooDeep: nests deeper than MAX_DEPTH.
    """
    try:
        value = json.loads(text)
    except RecursionError as e:
        raise TooDeep(f"nested deeper than {MAX_DEPTH} levels") from e
    if depth(value) > MAX_DEPTH:
        raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
    return value
