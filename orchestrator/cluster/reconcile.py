"""Reconciles the `running` records in Redis with the jobs that really run, after Redis lost writes.

Every transition is one atomic script, so a Redis restored from its append-only file (a SIGKILL
with `appendfsync everysec`, a failover to a replica that lagged) is a consistent *earlier* state:
it may have lost the last writes, never half of one. What can then disagree is Redis and the
processes' memory:

- a finish was acknowledged and then lost: the record says `running`, claimed by an instance that
  is alive and no longer runs the job. Its heartbeat is fresh, so the reaper never frees it: the
  job would stay `running` forever. The owner itself sees it (not in its worker tasks) and puts
  it back on its queue, fenced by the claim id (JobStore.finish refuses a claim that moved on);
- a record is `running` for an instance that is neither registered nor beating (the registry
  entry was lost, or the instance died before it was written): put back like a reaped instance's.

A claim that was lost (the record is `queued` again while a worker still runs it) needs nothing:
another claim runs it again and the first worker's outcome is refused by the claim fence.

And a Redis that came back empty, or from an old file, has lost what instances publish once at
start-up (queue names, plugin manifests): a client with only a Redis URL could no longer trigger.
Each pass republishes them when they are missing.

A job counts as missing only when two passes, `every_s` apart, both find it missing with the same
claim id: a claim whose reply is still on its way is never taken for a lost finish.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from orchestrator.cluster.status import ReconcileStatus
from orchestrator.components import BaseComponent, ComponentHealth
from orchestrator.jobs.model import JobRecord, Keys, now
from orchestrator.jobs.store import JobStore

logger = logging.getLogger(__name__)


class Reconciler(BaseComponent):
    """Puts back the jobs Redis says this instance runs while it does not (see the module docstring).

    Args:
        store: the job records.
        instance_id: this process.
        running_here: the ids of the jobs this process's workers run now.
        every_s: time between passes; a lost job is put back after two.
        republish: publishes this instance's queues and plugin manifests (called when they are gone).
    """

    name = "reconcile"

    def __init__(
        self,
        store: JobStore,
        instance_id: str,
        running_here: Callable[[], set[str]],
        *,
        every_s: float,
        republish: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.redis = store.redis
        self.instance_id = instance_id
        self.running_here = running_here
        self.every_s = every_s
        self.republish = republish
        self.republished = 0
        self.put_back = 0
        self.orphans_released = 0
        self.last_error: str | None = None
        # job id -> claim id (ours), and owner ids, found missing at the previous pass
        self._suspects: dict[str, str] = {}
        self._orphan_owners: set[str] = set()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.pass_once()
                self.last_error = None
            except (RedisError, OSError) as e:
                self.last_error = str(e)
                logger.warning("reconcile.failed error=%s", e)

    async def pass_once(self) -> list[str]:
        """One pass; returns the ids put back (or released with an orphaned owner) at this pass."""
        if self.republish is not None and await self.redis.exists(Keys.queues, Keys.plugins) < 2:
            await self.republish()
            self.republished += 1
            logger.warning("redis lost the published queues or plugins (restarted empty?): published them again")
        # the throttles' safety net: stale running counts dropped, held jobs the limits let start brought back
        await self.store.sweep_throttles()
        ids = [i.decode() for i in await self.redis.zrange(Keys.state("running"), 0, -1)]
        if not ids:
            self._suspects, self._orphan_owners = {}, set()
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(Keys.job(job_id), ["state", "instance", "claim"])
            rows: list[list[bytes | None]] = await pipe.execute()
        here = self.running_here()
        missing: dict[str, str] = {}
        owners: set[str] = set()
        for job_id, (state, owner, claim) in zip(ids, rows, strict=True):
            if state != b"running" or owner is None:
                continue
            if owner.decode() == self.instance_id:
                if job_id not in here and claim is not None:
                    missing[job_id] = claim.decode()
            else:
                owners.add(owner.decode())
        done = [job_id for job_id, claim in missing.items() if self._suspects.get(job_id) == claim]
        for job_id in done:
            await self._put_back(job_id, missing[job_id])
        self._suspects = {k: v for k, v in missing.items() if k not in done}
        done += await self._release_orphans(owners)
        return done

    async def _put_back(self, job_id: str, claim: str) -> None:
        raw = await self.redis.hgetall(Keys.job(job_id))  # type: ignore[misc]
        if not raw:
            return
        record = JobRecord.from_hash(raw, job_id=job_id)
        if record.state != "running" or record.claim != claim:
            return
        if await self.store.finish(record, "queued", {"attempt": max(record.attempt - 1, 0), "interrupted": now()}):
            self.put_back += 1
            logger.warning(
                "job %s (%s): recorded as running here, but no worker here runs it (Redis lost its outcome "
                "or claim): put back on queue %s",
                job_id, record.plugin, record.queue,
            )  # fmt: skip

    async def _release_orphans(self, owners: set[str]) -> list[str]:
        """Owners neither registered nor beating, at two passes in a row: release their jobs."""
        if not owners:
            self._orphan_owners = set()
            return []
        registered = {i.decode() for i in await self.redis.hkeys(Keys.instances)}  # type: ignore[misc]
        candidates = sorted(owners - registered)
        gone: set[str] = set()
        if candidates:
            async with self.redis.pipeline(transaction=False) as pipe:
                for owner in candidates:
                    pipe.exists(Keys.heartbeat(owner))
                alive = await pipe.execute()
            gone = {o for o, a in zip(candidates, alive, strict=True) if not a}
        released: list[str] = []
        confirmed = gone & self._orphan_owners
        for owner in sorted(confirmed):
            jobs = await self.store.release_instance(owner)
            self.orphans_released += len(jobs)
            if jobs:
                logger.warning("instance %s is unknown and silent: released %d job(s) it held", owner, len(jobs))
            released += jobs
        self._orphan_owners = gone - confirmed
        return released

    async def health(self) -> ComponentHealth:
        return ComponentHealth() if self.last_error is None else ComponentHealth.failing(self.last_error)

    async def status(self) -> ReconcileStatus:
        return {"put_back": self.put_back, "orphans_released": self.orphans_released, "republished": self.republished}
