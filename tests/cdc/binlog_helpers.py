"""Helpers of the binlog-mode tests: BinlogCapture on a real lease, settled against the server's GTID."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from orchestrator.cdc import build as cdc
from orchestrator.cdc.binlog_capture import BinlogCapture
from orchestrator.cdc.binlog_position import parse_gtid_state
from orchestrator.cdc.binlog_snapshot import Progress, progress_field
from orchestrator.cdc.model import CdcKeys
from orchestrator.client import connect_redis
from orchestrator.cluster.lease import LeaderLease
from orchestrator.config import Settings
from orchestrator.jobs.shared import Identity, make_shared
from orchestrator.plugins.build import build_registry
from orchestrator.plugins.launcher import Launcher
from tests.cdc.helpers import Rig, sql
from tests.jobs.helpers import wait_for


async def server_gtids(settings: Settings) -> dict[int, str]:
    ((pos,),) = await sql(settings, "SELECT @@gtid_binlog_pos")
    return parse_gtid_state(str(pos))


def covers(position: dict[int, str], target: dict[int, str]) -> bool:
    """Every domain of `target` was delivered up to its sequence number."""
    return all(
        d in position and int(position[d].rsplit("-", 1)[1]) >= int(g.rsplit("-", 1)[1]) for d, g in target.items()
    )


@dataclass
class BinlogRig(Rig):
    settings: Settings | None = None

    @property
    def capture(self) -> BinlogCapture:
        assert isinstance(self.poller, BinlogCapture)
        return self.poller

    async def settle(self) -> None:
        """Return once everything committed so far was delivered (the position covers the server's)."""
        assert self.settings is not None
        target = await server_gtids(self.settings)
        await wait_for(lambda: covers(self.capture.position.gtids, target) or self.capture.last_error, timeout_s=30)
        assert self.capture.last_error is None, self.capture.last_error

    async def progress(self, rule: str) -> Progress | None:
        """The stored progress of a binlog rule's snapshot."""
        return Progress.from_json(await self.store.redis.hget(CdcKeys.state, progress_field(rule)))  # type: ignore[misc]

    async def snapshot_done(self, rule: str) -> Progress:
        """Wait until the leader delivered the rule's snapshot to its end."""

        async def done() -> Progress | None:
            progress = await self.progress(rule)
            return progress if progress is not None and progress.done else None

        result: Progress = await wait_for(done, timeout_s=30, interval_s=0.02)
        return result


@contextlib.asynccontextmanager
async def binlog_capture(settings: Settings) -> AsyncIterator[BinlogRig]:
    """BinlogCapture holding a real lease on the test Redis (as `run` builds it), until the block ends."""
    redis = connect_redis(settings.redis_url or "")
    registry = build_registry(settings, settings.venv_dir)
    await registry.load()
    identity = Identity("cdc-test", "leader", "test", served_queues={})
    shared = make_shared(settings, redis, identity, registry, Launcher())
    lease = LeaderLease(redis, "cdc-test", ttl_s=settings.leader_ttl_s)
    [capture] = cdc.build(settings, shared, lease=lease)
    assert isinstance(capture, BinlogCapture), capture
    lease_task = asyncio.create_task(lease.run())
    task: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(lease.wait_gained(), 10)
        task = asyncio.create_task(capture.run())
        await wait_for(lambda: capture.connected or capture.last_error, timeout_s=20)
        yield BinlogRig(capture, shared.store, lease, settings)  # type: ignore[arg-type]
    finally:
        for t in (task, lease_task):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        await redis.aclose()
