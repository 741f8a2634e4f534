"""Lua scripts in `.lua` files beside the Python that runs them, composed by concatenation only.

A script is made of, in this order: `local NAME = value` lines made from Python constants (a
constant keeps its one definition, in Python), the shared snippets it uses (this package's `lua/`
folder: the fence check, the argument cursor), then its own file `<package>/lua/<name>`. Nothing
is substituted inside a file's text, so what a reader sees in a `.lua` file is what Redis runs.

Every file starts with a header naming its KEYS, its ARGV (one line each, with meaning) and what
it returns; tests/redis/test_lua_scripts.py holds every file to that and loads every script.
The files are package data (hatch ships every file under orchestrator/) and are read once, when
the module that runs them is imported.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from importlib import resources

# What a constant may be: a number, a string, or a list of strings (a Lua table).
LuaValue = int | str | tuple[str, ...]

_NAME = re.compile(r"[A-Z][A-Z0-9_]*\Z")
# Printable ASCII, without the characters a quoted Lua string would need escaped.
_PLAIN = re.compile(r"[ -&(-\[\]-~]*\Z")
# The characters that are magic in a Lua pattern (each is taken literally after a %).
_PATTERN_MAGIC = re.compile(r"([\^$()%.\[\]*+\-?])")
# Lua numbers are doubles: larger integers would not be exact.
_MAX_EXACT_INT = 2**53


def script(package: str, name: str, *snippets: str, constants: Mapping[str, LuaValue] | None = None) -> str:
    """`constants` as `local` lines, then the `snippets` (each composed by script() too), then the
    file `lua/<name>` of `package`."""
    return "".join([declare(constants or {}), *snippets, read(package, name)])


def cursor() -> str:
    """The argument cursor (lua/cursor.lua) that scripts taking repeated groups of arguments use."""
    return script("orchestrator.redis", "cursor.lua")


def read(package: str, name: str) -> str:
    """The text of `<package>/lua/<name>` (package data)."""
    return resources.files(package).joinpath("lua", name).read_text(encoding="utf-8")


def declare(constants: Mapping[str, LuaValue]) -> str:
    """`local NAME = value` lines, one per constant."""
    lines = []
    for name, value in constants.items():
        if not _NAME.fullmatch(name):
            msg = f"Lua constant {name!r}: expected an upper-case name"
            raise ValueError(msg)
        lines.append(f"local {name} = {_literal(value)}\n")
    return "".join(lines)


def pattern(key_format: str, capture: str) -> str:
    """A Lua pattern matching the names `key_format` (a str.format template) makes, that captures
    the field `capture`: ("orch:push:{instance}:{token}", "instance") -> `^orch:push:(.+):.+$`.

    So a script that reads a name back depends on the one format Python builds the name with.
    A greedy capture takes the longest match: a field after it never contains the separator.
    """
    parts = ["^"]
    for literal_text, field, _, _ in string.Formatter().parse(key_format):
        parts.append(_PATTERN_MAGIC.sub(r"%\1", literal_text))
        if field is not None:
            parts.append("(.+)" if field == capture else ".+")
    return "".join(parts) + "$"


def _literal(value: LuaValue) -> str:
    if isinstance(value, bool):
        msg = "a Lua constant may not be a bool (pass '1'/'0' or a number)"
        raise TypeError(msg)
    if isinstance(value, int):
        if abs(value) > _MAX_EXACT_INT:
            msg = f"{value} is not exact as a Lua number"
            raise ValueError(msg)
        return str(value)
    if isinstance(value, str):
        return _quoted(value)
    return "{" + ", ".join(_quoted(v) for v in value) + "}"


def _quoted(text: str) -> str:
    if not _PLAIN.fullmatch(text):
        msg = f"Lua constant {text!r}: only printable ASCII without quotes or backslashes"
        raise ValueError(msg)
    return f"'{text}'"
