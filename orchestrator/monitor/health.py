"""One health model, used by GET /health and by `orchestrator health`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError


@dataclass
class ComponentHealth:
    status: str  # "ok" | "failing"
    error: str | None = None
    detail: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.error:
            out["error"] = self.error
        if self.detail:
            out.update(self.detail)
        return out


async def redis_health(redis: Redis, timeout_s: float = 2.0) -> ComponentHealth:
    try:
        async with asyncio.timeout(timeout_s):
            await redis.ping()
        return ComponentHealth("ok")
    except (RedisError, OSError, TimeoutError) as e:
        return ComponentHealth("failing", error=f"{type(e).__name__}: {e}")


def task_health(task: asyncio.Task[Any] | None, name: str) -> ComponentHealth:
    if task is None:
        return ComponentHealth("ok", detail={"enabled": False})
    if task.done():
        exc = None if task.cancelled() else task.exception()
        return ComponentHealth("failing", error=f"{name} stopped: {exc!r}")
    return ComponentHealth("ok")


def overall(components: dict[str, ComponentHealth]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body): 200 when every component is ok, else 503 naming the failing ones."""
    failing = [name for name, c in components.items() if c.status != "ok"]
    body = {
        "status": "ok" if not failing else "failing",
        "failing": failing,
        "components": {name: c.to_json() for name, c in components.items()},
    }
    return (200 if not failing else 503), body
