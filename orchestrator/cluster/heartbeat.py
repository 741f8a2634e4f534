"""Instance liveness: a heartbeat key per process, and the reaper that frees a dead one's jobs.

arq marks a picked job with an in-progress key that only expires after the job timeout, so a
job whose worker was killed would wait that long. Every process renews `orch:heartbeat:<id>`
(TTL `instance_ttl_s`); every process also checks the others, and when a heartbeat is gone it
releases that instance's running jobs back to the queue in one atomic script. The plugin
children of a killed process die with it (the launcher's lifeline), so a released job does not
run twice at the same time.

A process that only *stalls* past the TTL (SIGSTOP, a frozen VM) still has its children when its
jobs are released. Two things keep that to one outcome per job: the finish script refuses an
outcome whose claim was released (JobStore.finish), and the stalled process, on its next beat,
finds its registry entry gone and stops those jobs' process groups without recording them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from orchestrator.cluster.status import HeartbeatStatus, HousekeepingStatus
from orchestrator.components import BaseComponent, ComponentHealth
from orchestrator.jobs.model import Keys, now
from orchestrator.jobs.store import JobStore
from orchestrator.redis import scripts as lua

logger = logging.getLogger(__name__)

# Renew the heartbeat and the registry entry (lua/beat.lua: its header names its KEYS, ARGV and reply).
_BEAT = lua.script("orchestrator.cluster", "beat.lua")


def new_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Heartbeat(BaseComponent):
    """Registers this instance, renews its heartbeat, and reaps dead instances.

    When it finds its own registry entry gone (this process stalled past `ttl_s`, say under
    SIGSTOP, and another instance released its jobs), it calls `on_evicted` so the workers stop
    those jobs without recording them: the jobs run elsewhere now.

    Args:
        store: the job records (its Redis connection is used).
        instance_id: this process.
        info: what `orchestrator status` shows about this instance (queues, version, ...).
        interval_s: renewal period; also how often the others are checked.
        ttl_s: how long a heartbeat lives without renewal: the time to detect a dead instance.
        on_evicted: called when this instance finds it was presumed dead.
    """

    name = "heartbeat"

    def __init__(
        self,
        store: JobStore,
        instance_id: str,
        info: dict[str, Any],
        *,
        interval_s: float,
        ttl_s: float,
        on_evicted: Callable[[], int] | None = None,
    ) -> None:
        self.store = store
        self.redis = store.redis
        self.instance_id = instance_id
        self.info = info
        self.interval_s = interval_s
        self.ttl_ms = int(ttl_s * 1000)
        self.on_evicted = on_evicted
        self.healthy = False
        self.last_error: str | None = None
        self.evictions = 0
        self._beat = self.redis.register_script(_BEAT)

    async def start(self) -> None:
        """Registered before the workers run, so another instance never takes this one for dead."""
        await self.register()

    async def register(self) -> None:
        # A fixed ORCH_INSTANCE_ID that crashed and came back: its old jobs are free to run again.
        released = await self.store.release_instance(self.instance_id)
        if released:
            logger.warning("instance %s restarted: released %d interrupted job(s)", self.instance_id, len(released))
        await self.beat()
        self.healthy = True

    async def beat(self) -> bool:
        """Renew; False when our registry entry had been reaped (we were presumed dead)."""
        info = json.dumps({**self.info, "seen_at": now()})
        keys = [Keys.heartbeat(self.instance_id), Keys.instances]
        return bool(await self._beat(keys=keys, args=[self.instance_id, now(), self.ttl_ms, info]))

    async def run(self) -> None:
        while True:
            try:
                if not await self.beat():
                    self._evicted()
                await self.reap()
                self.healthy, self.last_error = True, None
            except (RedisError, OSError) as e:
                # Redis went away: keep going, the next beat re-registers us.
                self.healthy, self.last_error = False, str(e)
                logger.warning("heartbeat.failed error=%s", e)
            await asyncio.sleep(self.interval_s)

    def _evicted(self) -> None:
        self.evictions += 1
        stopped = self.on_evicted() if self.on_evicted else 0
        logger.warning(
            "instance %s was presumed dead (no heartbeat for %.1fs) and its jobs were released: "
            "stopped %d job(s) here without recording them",
            self.instance_id, self.ttl_ms / 1000, stopped,
        )  # fmt: skip

    async def reap(self) -> list[str]:
        """Release the jobs of every instance whose heartbeat has expired."""
        ids = [i.decode() for i in await self.redis.hkeys(Keys.instances)]  # type: ignore[misc]
        others = [i for i in ids if i != self.instance_id]
        if not others:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for other in others:
                pipe.exists(Keys.heartbeat(other))
            alive = await pipe.execute()
        released: list[str] = []
        for other, is_alive in zip(others, alive, strict=True):
            if is_alive:
                continue
            jobs = await self.store.release_instance(other)
            logger.warning("instance %s is gone: released %d job(s) back to the queue", other, len(jobs))
            released += jobs
        return released

    async def drain(self) -> None:
        """Clean shutdown (after the workers drained): our jobs were finished or put back already."""
        with contextlib.suppress(RedisError, OSError):
            await self.store.release_instance(self.instance_id)

    async def health(self) -> ComponentHealth:
        return ComponentHealth() if self.healthy else ComponentHealth.failing(self.last_error or "not registered")

    async def status(self) -> HeartbeatStatus:
        return {"evictions": self.evictions}


class Housekeeping(BaseComponent):
    """Leader-only chores: drop index entries whose job records have expired, start the TTL of
    batches whose jobs all ended.

    Args:
        store: the job records.
        every_s: how often.
    """

    name = "housekeeping"
    leader_only = True

    def __init__(self, store: JobStore, *, every_s: float = 300.0) -> None:
        self.store = store
        self.every_s = every_s
        self.trimmed = 0
        self.last_run_at: float | None = None

    async def run(self) -> None:
        while True:
            try:
                self.trimmed += await self.store.trim_indexes()
                await self.store.close_ended_batches()
                self.last_run_at = now()
            except (RedisError, OSError) as e:
                logger.warning("housekeeping.failed error=%s", e)
            await asyncio.sleep(self.every_s)

    async def status(self) -> HousekeepingStatus:
        return {"index_entries_trimmed": self.trimmed, "last_run_at": self.last_run_at}


async def read_instances(store: JobStore) -> dict[str, dict[str, Any]]:
    """Instance id -> what it published (queues, role, version, started_at, seen_at), plus `alive`:
    its heartbeat key still exists (a dead one stays listed until another instance reaps it)."""
    published = await store.published_json(Keys.instances)
    ids = sorted(published)
    if not ids:
        return {}
    async with store.redis.pipeline(transaction=False) as pipe:
        for instance_id in ids:
            pipe.exists(Keys.heartbeat(instance_id))
        alive = await pipe.execute()
    return {i: {**published[i], "alive": bool(a)} for i, a in zip(ids, alive, strict=True)}
