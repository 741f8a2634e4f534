"""One health model, used by GET /health and by `orchestrator health`, and the Redis probe."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from orchestrator.components import BaseComponent, ComponentHealth


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
    """

    name = "redis"

    def __init__(self, redis: Redis, url: str, *, timeout_s: float = 2.0) -> None:
        self.redis = redis
        self.url = url
        self.timeout_s = timeout_s

    async def run(self) -> None:
        # Nothing to do between probes: health() pings on demand.
        await asyncio.Event().wait()

    async def health(self) -> ComponentHealth:
        return await redis_health(self.redis, self.timeout_s)

    async def status(self) -> dict[str, Any]:
        return {"redis": self.url}


def overall(components: dict[str, ComponentHealth]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body): 200 when every component is ok, else 503 naming the failing ones."""
    failing = [name for name, c in components.items() if c.status != "ok"]
    body = {
        "status": "ok" if not failing else "failing",
        "failing": failing,
        "components": {name: c.to_json() for name, c in components.items()},
    }
    return (200 if not failing else 503), body
