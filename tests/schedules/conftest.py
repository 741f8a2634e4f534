"""Fixtures of the schedule tests: a scheduler on a real Redis and a real lease, driven by a clock
the test moves (`Rig.at(t)` moves it and waits for one whole round: no sleeping, no polling)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator.client import Client, connect_redis
from orchestrator.cluster.lease import LeaderLease
from orchestrator.plugins.build import build_registry
from orchestrator.schedules.model import ScheduleSpec
from orchestrator.schedules.scheduler import Scheduler
from orchestrator.schedules.store import ScheduleStore
from orchestrator.tracing.facade import Tracing
from tests.jobs.helpers import make_plugin, make_settings


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class Rig:
    client: Client
    store: ScheduleStore
    clock: FakeClock
    tmp_path: Path
    settings: Any
    schedulers: list[Scheduler] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def scheduler(
        self, *, config: Sequence[ScheduleSpec] = (), instance: str = "test-1", tracing: Tracing | None = None
    ) -> AsyncIterator[Scheduler]:
        """A running scheduler with its own lease (it leads at once when nobody else does)."""
        lease = LeaderLease(self.client.redis, instance, ttl_s=30.0)
        sched = Scheduler(self.store, self.client.submitter, lease, config=config, clock=self.clock, tracing=tracing)
        tasks = [asyncio.create_task(lease.run()), asyncio.create_task(sched.run())]
        try:
            await sched.step()
            yield sched
        finally:
            await lease.resign()  # first: a cancelled lease loop forgets its token
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def at(self, sched: Scheduler, t: float) -> None:
        self.clock.t = t
        await sched.step()

    async def job_ids(self, prefix: str = "sched:") -> list[str]:
        rows = await self.client.list(limit=1000)
        return sorted(r["job_id"] for r in rows if r["job_id"].startswith(prefix))


@pytest.fixture
async def rig(tmp_path: Path, redis_url: str) -> AsyncIterator[Rig]:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url)
    registry = build_registry(settings, settings.venv_dir)
    await registry.load()
    redis = connect_redis(redis_url)
    try:
        client = Client.for_settings(settings, redis, registry)
        yield Rig(client, ScheduleStore(redis), FakeClock(1_000_000.5), tmp_path, settings)
    finally:
        await redis.aclose()
