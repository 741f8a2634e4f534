"""One health model, used by GET /health and by `orchestrator health`, and the Redis probe."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from typing_extensions import TypedDict

from orchestrator.components import BaseComponent, ComponentHealth
from orchestrator.redis.connection import pool_stats
from orchestrator.redis.sentinel import PrimaryWatch


class ConnectionsStatus(TypedDict):
    """The pool's connections (`redis_max_connections` bounds them) and this instance's budget."""

    max: int
    in_use: int
    idle: int
    budget: dict[str, int] | None
    """Connections each part may hold at its busiest, and their `total` (README, "Connection budget")."""


# "from" is a keyword: the functional form.
Failover = TypedDict("Failover", {"from": str, "to": str, "at": float})


class SentinelStatus(TypedDict):
    failovers: int
    """Times the pool saw the primary move since this process started."""
    last_failover: Failover | None
    """The primary's addresses before and after (host:port), and when (epoch seconds)."""


class RedisStatus(TypedDict):
    """`/status` `redis`: where this instance is connected, its connections, Sentinel failovers."""

    url: str
    """The Redis URL, password masked."""
    connections: ConnectionsStatus
    sentinel: SentinelStatus | None
    """Null unless the URL is a `redis+sentinel://` one."""


async def redis_health(redis: Redis, timeout_s: float = 2.0) -> ComponentHealth:
    try:
        async with asyncio.timeout(timeout_s):
            await redis.ping()
        return ComponentHealth("ok")
    except (RedisError, OSError, TimeoutError) as e:
        return ComponentHealth("failing", error=f"{type(e).__name__}: {e}")


class RedisProbe(BaseComponent):
    """The Redis connection as a component: healthy while a PING answers within `timeout_s`.

    Args:
        redis: the shared connection pool.
        url: shown in /status, password masked.
        budget: the connections each part of this instance may hold (redis_conn.connection_budget),
            shown in /status next to the pool's bound and what is open now.
    """

    name = "redis"

    def __init__(self, redis: Redis, url: str, *, timeout_s: float = 2.0, budget: dict[str, int] | None = None) -> None:
        self.redis = redis
        self.url = url
        self.timeout_s = timeout_s
        self.budget = budget
        self.watch = PrimaryWatch(redis)

    async def run(self) -> None:
        # health() pings on demand; with a Sentinel URL, follow the primary between probes.
        await self.watch.run()

    async def health(self) -> ComponentHealth:
        if self.watch.moving is not None:
            old, new = self.watch.moving
            return ComponentHealth.failing(f"failover: the primary moved from {old} to {new}; reconnecting")
        return await redis_health(self.redis, self.timeout_s)

    async def status(self) -> RedisStatus:
        pool = pool_stats(self.redis)
        connections: ConnectionsStatus = {
            "max": pool["max"], "in_use": pool["in_use"], "idle": pool["idle"], "budget": self.budget,
        }  # fmt: skip
        sentinel: SentinelStatus | None = None
        if self.watch.active:
            last = self.watch.last_failover
            failover: Failover | None = {"from": last["from"], "to": last["to"], "at": last["at"]} if last else None
            sentinel = {"failovers": self.watch.failovers, "last_failover": failover}
        return {"url": self.url, "connections": connections, "sentinel": sentinel}


def overall(components: dict[str, ComponentHealth]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body): 200 when every component is ok, else 503 naming the failing ones."""
    failing = [name for name, c in components.items() if c.status != "ok"]
    body = {
        "status": "ok" if not failing else "failing",
        "failing": failing,
        "components": {name: c.to_json() for name, c in components.items()},
    }
    return (200 if not failing else 503), body
