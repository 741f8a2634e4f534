"""Job parameters against a plugin's declared parameters: validation, defaults, CLI coercion."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any, Protocol

from orchestrator.errors import ParamsError


# What the checks read of a manifest, so that this module does not import manifest.py (which
# imports `type_matches` from here): `Manifest` and its `ParamSpec` have these attributes.
class DeclaredParam(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def required(self) -> bool: ...
    @property
    def default(self) -> Any: ...
    @property
    def enum(self) -> list[Any] | None: ...


class DeclaresParams(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def parameters(self) -> Mapping[str, DeclaredParam]: ...


_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def json_type(value: Any) -> str:
    """The JSON type name of a Python value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def type_matches(type_: str, value: Any) -> bool:
    """Whether `value` is of the declared parameter type. Booleans are not numbers."""
    actual = json_type(value)
    return actual == type_ or (type_ == "number" and actual == "integer")


def validate_params(manifest: DeclaresParams, params: dict[str, Any]) -> dict[str, Any]:
    """Check job parameters against the declaration; return them with defaults filled in.

    Raises:
        ParamsError: listing every problem (missing, wrong type, not in enum, unknown name).
    """
    problems: list[str] = []
    declared = manifest.parameters
    for key in params:
        if key not in declared:
            known = ", ".join(declared) or "none"
            problems.append(f"unknown parameter '{key}' (declared: {known})")
    out: dict[str, Any] = {}
    for name, spec in declared.items():
        if name not in params or (params[name] is None and spec.required):
            if spec.required:
                problems.append(f"'{name}' is required ({spec.type})")
            elif spec.default is not None:
                out[name] = copy.deepcopy(spec.default)  # a mutable default must not be shared between jobs
            continue
        value = params[name]
        if value is None:  # explicit null for an optional parameter: passed through as None
            out[name] = None
        elif not type_matches(spec.type, value):
            problems.append(f"'{name}' must be {spec.type}, got {json_type(value)} {value!r:.60}")
        elif spec.enum is not None and value not in spec.enum:
            problems.append(f"'{name}' must be one of {', '.join(map(repr, spec.enum))}, got {value!r:.60}")
        else:
            out[name] = value
    if problems:
        raise ParamsError(manifest.name, problems)
    return out


def coerce_cli_params(manifest: DeclaresParams, pairs: list[str]) -> dict[str, Any]:
    """Turn command-line `key=value` strings into values of the declared types.

    Undeclared keys are parsed as JSON when they parse, else kept as strings; `validate_params`
    refuses them later with the full list of declared names.

    Raises:
        ParamsError: a pair without `=`, or a value that does not parse as its declared type.
    """
    out: dict[str, Any] = {}
    problems: list[str] = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"{pair!r}: expected KEY=VALUE")
            continue
        spec = manifest.parameters.get(key)
        try:
            out[key] = _coerce(spec.type if spec else None, raw)
        except ValueError as e:
            problems.append(f"'{key}': {e}")
    if problems:
        raise ParamsError(manifest.name, problems)
    return out


def _coerce(type_: str | None, raw: str) -> Any:
    text = raw.strip()
    if type_ == "string":
        return raw
    if type_ == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
    if type_ == "number":
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
    if type_ == "boolean":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"expected true/false/1/0/yes/no, got {raw!r}")
    try:
        value = json.loads(text)
    except ValueError:
        if type_ is None:
            return raw
        raise ValueError(f"expected a JSON {type_}, got {raw!r}") from None
    if type_ is not None and not type_matches(type_, value):
        raise ValueError(f"expected a JSON {type_}, got {json_type(value)}")
    return value
