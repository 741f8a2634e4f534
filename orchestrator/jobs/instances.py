"""Instance liveness: a heartbeat key per process, and the reaper that frees a dead one's jobs.

arq marks a picked job with an in-progress key that only expires after the job timeout, so a
job whose worker was killed would wait that long. Every process renews `orch:heartbeat:<id>`
(TTL `instance_ttl_s`); every process also checks the others, and when a heartbeat is gone it
releases that instance's running jobs back to the queue in one atomic script. The plugin
children of a killed process die with it (the launcher's lifeline), so a released job never
runs twice at the same time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from typing import Any

from redis.exceptions import RedisError

from orchestrator.jobs.model import Keys, now
from orchestrator.jobs.state import JobStore

logger = logging.getLogger(__name__)

_TRIM_EVERY_S = 300.0


def new_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Heartbeat:
    """Registers this instance, renews its heartbeat, and reaps dead instances.

    Args:
        store: the job records (its Redis connection is used).
        instance_id: this process.
        info: what `orchestrator status` shows about this instance (queues, version, ...).
        interval_s: renewal period; also how often the others are checked.
        ttl_s: how long a heartbeat lives without renewal: the time to detect a dead instance.
    """

    name = "heartbeat"

    def __init__(
        self, store: JobStore, instance_id: str, info: dict[str, Any], *, interval_s: float, ttl_s: float
    ) -> None:
        self.store = store
        self.redis = store.redis
        self.instance_id = instance_id
        self.info = info
        self.interval_s = interval_s
        self.ttl_ms = int(ttl_s * 1000)
        self.healthy = False
        self.last_error: str | None = None
        self._last_trim = 0.0

    async def register(self) -> None:
        # A fixed ORCH_INSTANCE_ID that crashed and came back: its old jobs are free to run again.
        released = await self.store.release_instance(self.instance_id)
        if released:
            logger.warning("instance %s restarted: released %d interrupted job(s)", self.instance_id, len(released))
        await self.beat()
        self.healthy = True

    async def beat(self) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(Keys.heartbeat(self.instance_id), str(now()), px=self.ttl_ms)
            pipe.hset(Keys.instances, self.instance_id, json.dumps({**self.info, "seen_at": now()}))
            await pipe.execute()

    async def run(self) -> None:
        while True:
            try:
                await self.beat()
                await self.reap()
                if now() - self._last_trim > _TRIM_EVERY_S:
                    self._last_trim = now()
                    await self.store.trim_indexes()
                self.healthy, self.last_error = True, None
            except (RedisError, OSError) as e:
                # Redis went away: keep going, the next beat re-registers us.
                self.healthy, self.last_error = False, str(e)
                logger.warning("heartbeat.failed error=%s", e)
            await asyncio.sleep(self.interval_s)

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

    async def unregister(self) -> None:
        """Clean shutdown: our jobs were finished or put back already."""
        await self.store.release_instance(self.instance_id)

    async def instances(self) -> dict[str, Any]:
        return await self.store.published_json(Keys.instances)
