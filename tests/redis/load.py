"""A producer that keeps triggering jobs through Redis outages, and the checks run after one."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from orchestrator.client import Client
from orchestrator.errors import OrchestratorError
from orchestrator.jobs.model import TERMINAL, Keys
from tests.jobs.helpers import wait_for


@dataclass
class Producer:
    """Triggers `probe` jobs with deterministic ids (load-0, load-1, ...); a trigger that raised
    is tried again under the same id (enqueue dedupes by id), so each id is acknowledged once.

    `acked` maps each acknowledged id to the time its trigger returned.
    """

    client: Client
    total: int
    params: dict[str, object] = field(default_factory=dict)
    interval_s: float = 0.0  # between triggers: spreads the load over a fault
    acked: dict[str, float] = field(default_factory=dict)
    failures: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        for i in range(self.total):
            job_id = f"load-{i}"
            while True:
                try:
                    await self.client.trigger("probe", {**self.params, "name": job_id}, job_id=job_id)
                    break
                except (RedisError, OSError, OrchestratorError):
                    self.failures += 1
                    await asyncio.sleep(0.05)
            self.acked[job_id] = time.time()
            self.progress.set()
            if self.interval_s:
                await asyncio.sleep(self.interval_s)

    async def wait_acked(self, n: int) -> None:
        while len(self.acked) < n:
            self.progress.clear()
            await self.progress.wait()


async def settle(client: Client, ids: list[str], timeout_s: float = 60) -> dict[str, str | None]:
    """Wait until every id is final or gone, and nothing is `running`; return id -> state (None: lost)."""

    async def states() -> dict[str, str | None] | None:
        try:
            found = dict(zip(ids, await client.store.states_of(ids), strict=True))
            running = await client.redis.zcard(Keys.state("running"))
        except (RedisError, OSError):
            return None
        if running or any(s is not None and s not in TERMINAL for s in found.values()):
            return None
        return found

    try:
        result: dict[str, str | None] = await wait_for(states, timeout_s=timeout_s, interval_s=0.2)
    except TimeoutError:
        running = [i.decode() for i in await client.redis.zrange(Keys.state("running"), 0, -1)]
        records = {i: await client.status(i) for i in ids + running}
        stuck = {i: r for i, r in records.items() if r is not None and r["state"] not in TERMINAL}
        raise AssertionError(f"not settled: running index {running}; not final: {stuck}") from None
    return result
