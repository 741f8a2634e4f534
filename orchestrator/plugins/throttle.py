"""A plugin's throttle: how many of its jobs may run at once and start per second across the whole
cluster, per plugin or per value of a key over the params, and how many may wait.

Declared in plugin.json (`"throttle"`, the author's default) and in config
(`[plugins.NAME.throttle]`, which wins); enforced in Redis by the job layer (jobs/throttle.py).
`limits` stays the child's rlimits: the two never mix.
"""

from __future__ import annotations

import re
import string
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["PERIODS", "Throttle", "parse_rate", "render_key"]

# "10/s" -> 10 starts per second; the unit names what the count is per.
PERIODS = {"s": 1_000, "m": 60_000, "h": 3_600_000}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_rate(text: str) -> tuple[int, int]:
    """'10/s' -> (10, 1000): starts and the period in ms. ValueError with the accepted forms otherwise."""
    match = _RATE.match(text)
    if not match or int(match.group(1)) == 0:
        msg = f"rate {text!r}: expected a positive count per s, m or h, like '10/s', '5/m' or '100/h'"
        raise ValueError(msg)
    return int(match.group(1)), PERIODS[match.group(2)]


def key_fields(template: str) -> list[str]:
    """The param names a key template uses; ValueError for anything but `{name}` placeholders."""
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        msg = f"key {template!r}: {e}"
        raise ValueError(msg) from e
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not _IDENT.match(name) or spec or conversion:
            msg = f"key {template!r}: placeholders are plain param names, like '{{user_id}}'"
            raise ValueError(msg)
        names.append(name)
    if not names:
        msg = f"key {template!r}: name at least one param, like '{{user_id}}'"
        raise ValueError(msg)
    return names


def render_key(template: str, params: dict[str, Any]) -> str:
    """The key a job counts under, as people read it: '{user_id}' over {'user_id': 42} -> 'user_id=42'.

    A template that is more than one bare placeholder keeps its text: '{org}/{user}' -> '{org}/{user}=a/b'.
    Raises KeyError naming the first param the job lacks.
    """
    names = key_fields(template)
    value = template.format_map({n: params[n] for n in names})
    label = names[0] if template == "{" + names[0] + "}" else template
    return f"{label}={value}"


class Throttle(BaseModel):
    """`[plugins.NAME.throttle]` / plugin.json `"throttle"`. Every limit is optional and cluster-wide.

    Attributes:
        concurrency: most jobs running at once (per key when `key` is set).
        rate: most starts per period, like "10/s", "5/m", "100/h", spread evenly (one every 100 ms for 10/s).
        key: a template over the params, like "{user_id}": each value gets its own limits.
        max_queued: most jobs waiting (queued or deferred) per key; a trigger beyond it is refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: Annotated[int, Field(gt=0)] | None = None
    rate: str | None = None
    key: str | None = None
    max_queued: Annotated[int, Field(gt=0)] | None = None

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate(value)
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None:
            key_fields(value)
        return value

    def merged(self, override: Throttle | None) -> Throttle:
        """`override`'s limits where it sets them, these elsewhere (config over the manifest)."""
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_unset=True))

    @property
    def interval_ms(self) -> float | None:
        """Time between two starts at the rate, or None without one."""
        if self.rate is None:
            return None
        count, period_ms = parse_rate(self.rate)
        return period_ms / count

    def is_empty(self) -> bool:
        return self.concurrency is None and self.rate is None and self.max_queued is None
