"""The leader lease: one Redis key with a TTL, renewed by its holder, and a fencing token.

The scheduler, change capture and housekeeping must run on exactly one instance at a time. The
instance that holds `orch:leader` runs them; it renews the key every `ttl / 3`. When the holder
dies (or stalls past the TTL) the key expires and another eligible instance takes it within about
`ttl + ttl / 3`.

Expiry alone cannot stop a *stale* leader (a process paused by SIGSTOP, a VM migration, a long GC)
from finishing a write it started before it was paused. So every new holder gets a token from a
counter that only grows (`orch:leader:epoch`), and every leader-only write carries the token it
was made under: the Lua script compares it with the token stored in `orch:leader` and refuses the
write when they differ (`FencedError`). See Kleppmann, "How to do distributed locking" (2016).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from orchestrator.cluster.status import LeaderStatus, LeaseHolder, Published
from orchestrator.components import BaseComponent, ComponentHealth, StatusBlock
from orchestrator.jobs.model import Keys, now
from orchestrator.redis import scripts as lua
from orchestrator.redis.fence import Fence, fence_lua, raise_if_fenced

logger = logging.getLogger(__name__)

# The lease's scripts (lua/*.lua: each file's header names its KEYS, ARGV and reply).
_TAKE_OR_RENEW = lua.script("orchestrator.cluster", "take_or_renew.lua")
_RESIGN = lua.script("orchestrator.cluster", "resign.lua")
_PUBLISH = lua.script("orchestrator.cluster", "publish.lua", fence_lua())


class LeaderLease(BaseComponent):
    """Holds (or watches) the leader lease.

    Args:
        redis: the shared connection pool.
        instance_id: this process.
        ttl_s: how long the lease outlives its last renewal; a dead leader is replaced within
            about `ttl_s * 4 / 3`.
        eligible: False for `--role worker`: it never leads, but still knows who does.
    """

    name = "leader"

    def __init__(self, redis: Redis, instance_id: str, *, ttl_s: float, eligible: bool = True) -> None:
        self.redis = redis
        self.instance_id = instance_id
        self.ttl_s = ttl_s
        self.eligible = eligible
        self.token: int | None = None
        self.since: float | None = None
        self.holder: LeaseHolder | None = None  # as last read from Redis
        self.last_error: str | None = None
        self._valid_until = 0.0  # loop time: we may act as leader until then without a renewal
        self._gained = asyncio.Event()
        self._lost = asyncio.Event()
        self._lost.set()
        self._take = redis.register_script(_TAKE_OR_RENEW)
        self._resign = redis.register_script(_RESIGN)
        self._publish = redis.register_script(_PUBLISH)

    # -- what others ask --
    @property
    def is_leader(self) -> bool:
        return self.token is not None and asyncio.get_running_loop().time() < self._valid_until

    def fence(self) -> Fence | None:
        """The token to carry on a leader-only write, or None when this instance does not lead now."""
        return Fence(self.token) if self.token is not None and self.is_leader else None

    async def wait_gained(self) -> None:
        await self._gained.wait()

    async def wait_lost(self) -> None:
        await self._lost.wait()

    # -- the loop --
    async def run(self) -> None:
        interval_s = self.ttl_s / 3
        try:
            while True:
                await self._step()
                await asyncio.sleep(interval_s)
        finally:
            self._set_lost("stopping")

    async def _step(self) -> None:
        loop = asyncio.get_running_loop()
        if self.token is not None and loop.time() >= self._valid_until:
            # No successful renewal for a whole TTL (Redis away, or this process was paused):
            # another instance may lead by now.
            self._set_lost("the lease was not renewed within its TTL")
        if not self.eligible:
            await self._read_holder()
            return
        started = loop.time()
        ours = str(self.token) if self.token is not None else ""
        try:
            held, token, third = await self._take(
                keys=[Keys.leader, Keys.leader_epoch],
                args=[self.instance_id, now(), int(self.ttl_s * 1000), ours],
            )
        except (RedisError, OSError) as e:
            self.last_error = f"{type(e).__name__}: {e}"
            logger.warning("leader.renew_failed error=%s", e)
            return
        self.last_error = None
        if held:
            # Count the TTL from before the call: Redis may have set the expiry any time after.
            self._valid_until = started + self.ttl_s
            if self.token is None:
                self.token, self.since = int(token), float(third)
                logger.info("leader: this instance leads now (token %d)", self.token)
                self._lost.clear()
                self._gained.set()
            self.holder = {"instance_id": self.instance_id, "since": self.since, "token": self.token}
        else:
            if self.token is not None:
                self._set_lost(f"the lease is held by {_text(third) or 'nobody'} now")
            self.holder = {"instance_id": _text(third), "token": int(token) if token else None, "since": None}

    async def _read_holder(self) -> None:
        try:
            self.holder = await self.current()
            self.last_error = None
        except (RedisError, OSError) as e:
            self.last_error = f"{type(e).__name__}: {e}"

    def _set_lost(self, why: str, *, level: int = logging.WARNING) -> None:
        if self.token is not None:
            logger.log(level, "leader: this instance no longer leads (token %d): %s", self.token, why)
        self.token, self.since = None, None
        self._gained.clear()
        self._lost.set()

    async def resign(self) -> None:
        """Clean shutdown: hand the lease over now rather than after the TTL."""
        token = self.token
        self._set_lost("shutting down, the lease is handed over", level=logging.INFO)
        if token is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._resign(keys=[Keys.leader], args=[self.instance_id, token])

    async def drain(self) -> None:
        await self.resign()

    async def publish(self, name: str, status: dict[str, StatusBlock], fence: Fence) -> None:
        """Publish a leader-only component's status, `{status_key: status()}` (refused with
        FencedError for a stale leader)."""
        data: Published = {"status": status, "instance_id": self.instance_id, "token": fence.token, "at": now()}
        try:
            await self._publish(
                keys=[Keys.leader, Keys.component_status], args=[fence.arg, name, json.dumps(data, default=str)]
            )
        except ResponseError as e:
            raise_if_fenced(e)

    async def published(self) -> dict[str, Published]:
        """Leader-only components' statuses as the leader last published them, by component name."""
        raw = await self.redis.hgetall(Keys.component_status)  # type: ignore[misc]
        return {k.decode(): parse_published(v) for k, v in raw.items()}

    # -- reads --
    async def current(self) -> LeaseHolder | None:
        """The holder as Redis has it, or None."""
        return await read_holder(self.redis)

    async def health(self) -> ComponentHealth:
        role = "leader" if self.is_leader else "standby" if self.eligible else "worker-only"
        if self.last_error:
            return ComponentHealth.failing(self.last_error, role=role)
        return ComponentHealth(detail={"role": role})

    async def status(self) -> LeaderStatus:
        holder: LeaseHolder = await self.current() or {"instance_id": None, "since": None, "token": None}
        return {**holder, "is_leader": self.is_leader, "eligible": self.eligible}


async def read_holder(redis: Redis) -> LeaseHolder | None:
    """The lease holder as Redis has it, or None."""
    raw = await redis.hgetall(Keys.leader)  # type: ignore[misc]
    if not raw:
        return None
    data = {k.decode(): v.decode() for k, v in raw.items()}
    return {"instance_id": data.get("instance"), "since": float(data["since"]), "token": int(data["token"])}


async def read_leader(redis: Redis) -> dict[str, Any] | None:
    """The lease holder as `Client.leader()` documents it: {instance_id, since, token}, or None."""
    holder = await read_holder(redis)
    return None if holder is None else {**holder}


def parse_published(raw: bytes | str) -> Published:
    """One entry of `orch:component-status` as LeaderLease.publish wrote it (its JSON, read back)."""
    published: Published = json.loads(raw)
    return published


def _text(value: Any) -> str | None:
    if value is None or value is False:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
