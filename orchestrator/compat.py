"""The old scheduler module's calls, for code written against it (synchronous, as they were).

    from orchestrator import compat as scheduler     # instead of the old scheduler module

    task_id = scheduler.trigger_plugin("data_processor", {"operation": "sync_data"}, priority="high")
    scheduler.get_task_status(task_id)   # {"task_id", "status": "pending|running|success|failed|cancelled", ...}

Each call connects with the process's settings (`REDIS_URL`, or the embedded Redis of
`ORCH_STATE_DIR` when one runs), does one thing through `orchestrator.Client` and disconnects. In
async code use `Client` itself: these calls run their own event loop and refuse to run inside one.
Manifests are the ones running instances published, so no plugins folder is needed here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import RedisError

from orchestrator.client import Client
from orchestrator.config import load_settings
from orchestrator.errors import ConfigError
from orchestrator.redis.configured import open_redis

T = TypeVar("T")

# The old system's task statuses, from ours.
OLD_STATUS = {
    "queued": "pending",
    "deferred": "pending",
    "running": "running",
    "succeeded": "success",
    "failed": "failed",
    "cancelled": "cancelled",
}
# The old calls said "normal" and "medium" where we say "default".
_PRIORITY_ALIASES = {"normal": "default", "medium": "default"}


def _call(action: Callable[[Client], Awaitable[T]]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        msg = "orchestrator.compat is for synchronous code: in async code, use orchestrator.Client"
        raise RuntimeError(msg)

    async def run() -> T:
        settings = load_settings()
        async with (
            open_redis(settings, settings.state_dir, start_embedded=False) as (redis, _),
            Client(redis, result_ttl_s=settings.result_ttl_s) as client,
        ):
            return await action(client)

    return asyncio.run(run())


def _priority(priority: str | int | None) -> str | int | None:
    return _PRIORITY_ALIASES.get(priority, priority) if isinstance(priority, str) else priority


def trigger_plugin(plugin_name: str, params: dict[str, Any] | None = None, priority: str | int = "default") -> str:
    """Enqueue; returns the task (job) id. Raises JobError/ParamsError, nothing enqueued."""

    async def go(client: Client) -> str:
        return (await client.trigger(plugin_name, params or {}, priority=_priority(priority), source="api")).job_id

    return _call(go)


def get_task_status(task_id: str) -> dict[str, Any] | None:
    """The old shape: {task_id, plugin_name, status, result, error, created_at, started_at,
    completed_at, retries}, plus `state` (ours) and `job` (the whole job record). None if unknown."""

    async def go(client: Client) -> dict[str, Any] | None:
        return _old_shape(await client.status(task_id))

    return _call(go)


def batch_trigger_plugins(tasks: list[dict[str, Any]]) -> list[str]:
    """A list of {"plugin_name" (or "plugin"), "params", "priority"}; all valid or nothing enqueued;
    returns the task ids in order."""
    entries = [
        {
            "plugin": t.get("plugin_name") or t.get("plugin") or t.get("name"),
            "params": t.get("params") or {},
            **({"priority": _priority(t["priority"])} if t.get("priority") is not None else {}),
        }
        for t in tasks
    ]

    async def go(client: Client) -> list[str]:
        return list((await client.batch(entries))["job_ids"])

    return _call(go)


def execute_plugin(
    plugin_name: str, params: dict[str, Any] | None = None, timeout: float | None = None
) -> dict[str, Any]:
    """Run now (high priority) and wait: {"status": "success"|"failed"|"cancelled", "result", "error",
    "task_id"}."""

    async def go(client: Client) -> dict[str, Any]:
        job = await client.trigger(plugin_name, params or {}, priority="high", source="api")
        done = await client.result(job.job_id, timeout_s=timeout)
        return {"task_id": job.job_id, "status": OLD_STATUS[done["state"]], "result": done["result"],
                "error": done["error"]}  # fmt: skip

    return _call(go)


def add_scheduled_task(task: dict[str, Any]) -> str:
    """The seed's dict shape (`{"plugin", "params", "cron": "0 2 * * *"}` or `"every"`); returns the
    schedule id. A bad cron, unknown plugin or bad params raise, and nothing is stored."""

    async def go(client: Client) -> str:
        return await client.add_scheduled_task(task)

    return _call(go)


def enable_plugin(plugin_name: str) -> bool:
    async def go(client: Client) -> bool:
        await client.set_enabled(plugin_name, True)
        return True

    return _call(go)


def disable_plugin(plugin_name: str) -> bool:
    async def go(client: Client) -> bool:
        await client.set_enabled(plugin_name, False)
        return True

    return _call(go)


def reload_plugin(plugin_name: str | None = None) -> bool:
    """Every running instance re-reads the plugin (or the whole folder)."""

    async def go(client: Client) -> bool:
        await client.reload_plugins(plugin_name)
        return True

    return _call(go)


def health_check() -> dict[str, Any]:
    """{"status": "healthy"|"unhealthy", "redis": bool, "instances": alive count, "leader": ..., "queues": ...}:
    healthy when Redis answers and at least one instance is alive."""

    async def go(client: Client) -> dict[str, Any]:
        instances = await client.instances()
        alive = sum(1 for i in instances.values() if i.get("alive"))
        stats = await client.stats()
        return {
            "status": "healthy" if alive else "unhealthy",
            "redis": True,
            "instances": alive,
            "leader": await client.leader(),
            "queues": stats["queues"],
            "tasks": stats["states"],
        }

    try:
        return _call(go)
    except (RedisError, OSError, ConfigError) as e:
        return {"status": "unhealthy", "redis": False, "error": str(e)}


def _old_shape(job: dict[str, Any] | None) -> dict[str, Any] | None:
    if job is None:
        return None
    return {
        "task_id": job["job_id"],
        "plugin_name": job["plugin"],
        "status": OLD_STATUS[job["state"]],
        "state": job["state"],
        "result": job["result"],
        "error": job["error"],
        "created_at": job["enqueued_at"],
        "started_at": job["started_at"],
        "completed_at": job["finished_at"],
        "retries": max(job["attempt"] - 1, 0),
        "job": job,
    }
