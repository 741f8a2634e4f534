"""Unknown keys in the config file, found from the settings models themselves.

`Settings` ignores unknown names because the environment holds many unrelated ones; the TOML file
holds only ours, so a key no model declares there is a typo (`shutdown_grase_s`) or a section that
does not exist (`[plugins.x.throttle]`). The walk descends through every field typed as a model, a
`dict[str, Model]` or a `list[Model]`, so a new section needs only its model. Where a model
reshapes its input before validation (a `mode="before"` validator), its keys are left to the
model's own `extra="forbid"`.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import AliasChoices, BaseModel


def unknown_keys(data: dict[str, Any], model: type[BaseModel], where: str = "") -> Iterator[str]:
    """One message per key of `data` (read from TOML) that `model` does not declare, with the closest name."""
    names = _accepted(model)
    reshaped = _reshaped_fields(model)
    for key, value in data.items():
        path = f"{where}{key}"
        field = names.get(key)
        if field is None:
            close = difflib.get_close_matches(key, list(model.model_fields), n=1, cutoff=0.6)
            hint = f" (did you mean {where + close[0]!r}?)" if close else ""
            yield f"unknown {'section' if isinstance(value, dict) else 'key'} {path!r}{hint}"
            continue
        if field in reshaped:
            continue
        yield from _walk(value, model.model_fields[field].annotation, path)


def _walk(value: Any, annotation: Any, path: str) -> Iterator[str]:
    sub = _model_in(annotation)
    if sub is not None and isinstance(value, dict):
        yield from unknown_keys(value, sub, f"{path}.")
        return
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in args if origin is not typing.Annotated else args[:1]:
            if _model_in(arg) is not None or typing.get_origin(arg) in (dict, list):
                yield from _walk(value, arg, path)
                return
    elif origin is dict and len(args) == 2 and isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, args[1], f"{path}.{key}")
    elif origin is list and args and isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, args[0], f"{path}[{i}]")


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if _reshapes_input(annotation) or annotation.model_config.get("extra") == "allow":
            return None
        return annotation
    return None


def _accepted(model: type[BaseModel]) -> dict[str, str]:
    """Every name a key may have -> the field's name (the name itself and its aliases)."""
    names: dict[str, str] = {}
    for name, info in model.model_fields.items():
        names[name] = name
        for alias in (info.alias, info.validation_alias):
            if isinstance(alias, str):
                names[alias] = name
            elif isinstance(alias, AliasChoices):
                names.update((choice, name) for choice in alias.choices if isinstance(choice, str))
    return names


def _reshapes_input(model: type[BaseModel]) -> bool:
    validators = model.__pydantic_decorators__.model_validators.values()
    return any(v.info.mode in ("before", "wrap") for v in validators)


def _reshaped_fields(model: type[BaseModel]) -> set[str]:
    """Fields whose value a `before`/`wrap`/`plain` validator reshapes (their keys are the model's to check)."""
    fields: set[str] = set()
    for v in model.__pydantic_decorators__.field_validators.values():
        if v.info.mode in ("before", "wrap", "plain"):
            fields.update(v.info.fields)
    return fields
