"""Throttles in Redis: the effective limits of each plugin, read by the transition scripts, and what
they count (lua/throttle.lua holds the enforcement and names every key).

- The limits live in `orch:throttle:limits:<plugin>`, so every instance's claims read the same ones
  and a change takes effect at the next claim anywhere. Each instance writes its config's
  `[plugins.NAME.throttle]` over the manifest's `throttle` there at start and after a plugin reload;
  `orchestrator plugins throttle NAME ...` (or `PUT /api/plugins/{name}/throttle`) writes a live
  change that instances then leave alone until it is reset.
- Producers read the limits through `ThrottleBook` (cached for `ttl_s`, one second): the key
  template, and whether a job's plugin is throttled at all (only those jobs are counted for
  `max_queued`). The caps themselves are read inside the enqueue script.
- A job enqueued while its plugin had no throttle carries no key and is not counted for max_queued;
  a limit set while jobs run counts the jobs that start after it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

from redis.asyncio import Redis
from typing_extensions import TypedDict

from orchestrator.errors import JobError
from orchestrator.plugins.throttle import Throttle, render_key
from orchestrator.redis import scripts as lua

PREFIX = "orch:throttle:"
# "try": refuse like "refuse" but count no refusal (a shared call, sent again job by job)
BacklogMode = Literal["refuse", "try", "count"]
# Held jobs one release moves back at most (the sweep moves the rest, e.g. after a limit is removed).
_RELEASE_MAX = 100
# How late a rate's waiting job may be claimed and still keep the schedule (lua/throttle.lua): the
# starts a busy machine woke late for are caught up within this much.
_CATCH_UP_MS = 1000
_LIMIT_FIELDS = ("concurrency", "rate", "key", "max_queued")


def limits_key(plugin: str) -> str:
    return f"{PREFIX}limits:{plugin}"


def lua_functions() -> str:
    """lua/throttle.lua with its constants: composed into every script that claims, leaves or enqueues."""
    return lua.script(
        "orchestrator.jobs",
        "throttle.lua",
        constants={
            "T_PREFIX": PREFIX, "JOB_PREFIX": "orch:job:", "QUEUE_PREFIX": "orch:queue:", "WAKE_PREFIX": "orch:wake:",
            "RELEASE_MAX": _RELEASE_MAX, "THROTTLE_CATCH_UP_MS": _CATCH_UP_MS,
        },
    )  # fmt: skip


def to_fields(throttle: Throttle) -> dict[str, str]:
    """The limits hash of one plugin (the scripts read concurrency, interval_ms, rate and max_queued)."""
    fields = {k: str(v) for k, v in throttle.model_dump(include=set(_LIMIT_FIELDS)).items() if v is not None}
    if throttle.interval_ms is not None:
        fields["interval_ms"] = repr(throttle.interval_ms)
    return fields


def from_fields(raw: Mapping[bytes, bytes]) -> tuple[Throttle | None, bool]:
    """(the limits, set live?) from a limits hash."""
    data = {k.decode(): v.decode() for k, v in raw.items()}
    live = data.pop("live", None) == "1"
    values: dict[str, Any] = {k: data[k] for k in _LIMIT_FIELDS if k in data}
    for k in ("concurrency", "max_queued"):
        if k in values:
            values[k] = int(values[k])
    throttle = Throttle.model_validate(values)
    return (None if throttle.is_empty() else throttle), live


class ThrottleBook:
    """The effective limits as Redis holds them, cached for `ttl_s` per plugin (producers read this).

    Args:
        redis: the shared connection.
        ttl_s: how stale a read may be; a live change reaches every producer within it.
    """

    def __init__(self, redis: Redis, *, ttl_s: float = 1.0) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Throttle | None]] = {}

    async def get(self, plugin: str) -> Throttle | None:
        cached = self._cache.get(plugin)
        if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
            return cached[1]
        throttle, _ = from_fields(await self.redis.hgetall(limits_key(plugin)))  # type: ignore[misc]
        self._cache[plugin] = (time.monotonic(), throttle)
        return throttle

    async def key_for(self, plugin: str, params: dict[str, Any]) -> tuple[bool, str | None]:
        """(throttled?, the job's key such as 'user_id=42' or None) for a job of `plugin` with `params`."""
        throttle = await self.get(plugin)
        if throttle is None:
            return False, None
        if throttle.key is None:
            return True, None
        try:
            return True, render_key(throttle.key, params)
        except KeyError as e:
            msg = f"plugin {plugin!r}: its throttle key {throttle.key!r} needs the parameter {e.args[0]}"
            raise JobError(msg) from e


async def publish_limits(redis: Redis, effective: Mapping[str, Throttle | None]) -> None:
    """Write each plugin's limits from config and manifest, leaving alone those changed live."""
    names = list(effective)
    if not names:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hget(limits_key(name), "live")
        live = await pipe.execute()
    async with redis.pipeline(transaction=True) as pipe:
        for name, flag in zip(names, live, strict=True):
            if flag == b"1":
                continue
            throttle = effective[name]
            pipe.delete(limits_key(name))
            if throttle is not None and not throttle.is_empty():
                pipe.hset(limits_key(name), mapping=to_fields(throttle))
        await pipe.execute()


async def set_live(redis: Redis, plugin: str, throttle: Throttle | None) -> None:
    """A live change (`orchestrator plugins throttle`): these limits until reset (None: the instances'
    config again, written back by `publish_limits` at their next start or plugin reload, or by the caller)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(limits_key(plugin))
        if throttle is not None:
            pipe.hset(limits_key(plugin), mapping={**to_fields(throttle), "live": "1"})
        await pipe.execute()


class KeyUse(TypedDict):
    """One plugin/key's use of its limits (`/status` `throttles`)."""

    plugin: str
    key: str
    running: int
    held: int
    """Jobs held back by the limits (out of their queue until a slot or a start frees)."""
    concurrency: int | None
    rate: str | None
    max_queued: int | None


class PluginThrottle(TypedDict):
    """One throttled plugin: its limits, whether they were set live, its counters and its keys in use."""

    limits: dict[str, Any]
    live: bool
    throttled: int
    """How many times a job was held back."""
    refused: int
    """Jobs refused by max_queued (a trigger, an API call, a batch)."""
    over_cap: int
    """Jobs schedules and change capture enqueued past max_queued (they are never refused)."""
    keys: list[KeyUse]


async def read_use(redis: Redis) -> dict[str, PluginThrottle]:
    """Every throttled plugin's limits, counters and per-key use (a few reads, pipelined)."""
    limit_keys = [k.decode() async for k in redis.scan_iter(match=f"{PREFIX}limits:*", count=200)]
    seen = [k.decode() for k in await redis.zrange(f"{PREFIX}keys", 0, -1)]
    async with redis.pipeline(transaction=False) as pipe:
        for k in limit_keys:
            pipe.hgetall(k)
        pipe.hgetall(f"{PREFIX}counters")
        for k in seen:
            pipe.zcard(f"{PREFIX}run:{k}")
            pipe.zcard(f"{PREFIX}held:{k}")
        replies = await pipe.execute()
    out: dict[str, PluginThrottle] = {}
    for k, raw in zip(limit_keys, replies, strict=False):
        throttle, live = from_fields(raw)
        if throttle is not None:
            out[k.removeprefix(f"{PREFIX}limits:")] = {
                "limits": throttle.model_dump(exclude_none=True), "live": live, "throttled": 0, "refused": 0,
                "over_cap": 0, "keys": [],
            }  # fmt: skip
    counters = {k.decode(): int(v) for k, v in replies[len(limit_keys)].items()}
    for name, entry in out.items():
        entry["throttled"] = counters.get(f"throttled:{name}", 0)
        entry["refused"] = counters.get(f"refused:{name}", 0)
        entry["over_cap"] = counters.get(f"over_cap:{name}", 0)
    counts = replies[len(limit_keys) + 1 :]
    for i, k in enumerate(seen):
        plugin, _, key = k.partition(":")
        running, held = counts[2 * i], counts[2 * i + 1]
        if plugin in out and (running or held):
            limits = out[plugin]["limits"]
            out[plugin]["keys"].append(
                {
                    "plugin": plugin, "key": key, "running": running, "held": held,
                    "concurrency": limits.get("concurrency"), "rate": limits.get("rate"),
                    "max_queued": limits.get("max_queued"),
                }
            )  # fmt: skip
    return out
