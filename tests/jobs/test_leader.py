"""The leader lease against a real Redis: one holder, takeover after expiry, fencing of stale writes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from orchestrator.cluster.lease import LeaderLease
from orchestrator.errors import FencedError
from orchestrator.jobs.model import Keys
from orchestrator.jobs.store import Checkpoint, JobStore
from orchestrator.jobs.submit import JobRequest, Submitter
from orchestrator.redis.fence import Fence
from tests.jobs.helpers import make_plugin, make_settings, wait_for


@pytest.fixture
async def redis(redis_url: str) -> aioredis.Redis:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_one_holder_and_a_new_token_for_each_new_holder(redis: aioredis.Redis) -> None:
    a = LeaderLease(redis, "a", ttl_s=1.0)
    b = LeaderLease(redis, "b", ttl_s=1.0)
    await a._step()
    await b._step()
    assert a.is_leader and not b.is_leader
    first = a.fence()
    assert first is not None and b.fence() is None
    assert b.holder is not None and b.holder["instance_id"] == "a"

    await a._step()  # a renewal keeps the token
    assert a.fence() == first

    # a stops renewing (dead or paused): the key expires and b takes over with a larger token
    await wait_for(lambda: _gone(redis), timeout_s=5)
    await b._step()
    second = b.fence()
    assert second is not None and second.token > first.token

    # a comes back: it learns it lost the lease, and does not take it from b
    await a._step()
    assert not a.is_leader and a.fence() is None
    assert (await a.current()) == {"instance_id": "b", "since": pytest.approx(b.since), "token": second.token}


async def _gone(redis: aioredis.Redis) -> bool:
    return not await redis.exists(Keys.leader)


async def test_resign_hands_over_at_once(redis: aioredis.Redis) -> None:
    a = LeaderLease(redis, "a", ttl_s=30.0)
    b = LeaderLease(redis, "b", ttl_s=30.0)
    await a._step()
    await a.resign()
    assert not a.is_leader
    await b._step()
    assert b.is_leader


async def test_a_worker_only_instance_never_leads_but_knows_who_does(redis: aioredis.Redis) -> None:
    worker = LeaderLease(redis, "w", ttl_s=1.0, eligible=False)
    await worker._step()
    assert not worker.is_leader and worker.holder is None
    leader = LeaderLease(redis, "l", ttl_s=1.0)
    await leader._step()
    await worker._step()
    assert not worker.is_leader
    assert worker.holder is not None and worker.holder["instance_id"] == "l"


async def test_a_stale_token_is_refused_and_nothing_is_written(
    tmp_path: Path, redis_url: str, redis: aioredis.Redis
) -> None:
    """The bulk enqueue with a checkpoint (the scheduler's and change capture's write) carries the
    fence: a stale leader's jobs and checkpoint are refused together."""
    from orchestrator.client import Client
    from orchestrator.plugins.build import build_registry

    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url)
    registry = build_registry(settings, settings.venv_dir)
    await registry.load()
    client = Client.for_settings(settings, redis, registry)  # type: ignore[arg-type]
    submitter: Submitter = await client.submitter()

    old = LeaderLease(redis, "old", ttl_s=1.0)
    await old._step()
    stale = old.fence()
    assert stale is not None
    await redis.delete(Keys.leader)  # the lease expired
    new = LeaderLease(redis, "new", ttl_s=30.0)
    await new._step()
    current = new.fence()
    assert current is not None and current.token > stale.token

    jobs = [await submitter.prepare(JobRequest("probe", job_id=f"j{i}", source="schedule")) for i in range(3)]
    with pytest.raises(FencedError):
        await submitter.write_many(jobs, fence=stale, checkpoint=Checkpoint("test:position", {"pos": "9"}))
    assert not await redis.exists("test:position")
    assert await JobStore(redis, result_ttl_s=60).get("j0") is None  # type: ignore[arg-type]

    outcomes = await submitter.write_many(jobs, fence=current, checkpoint=Checkpoint("test:position", {"pos": "9"}))
    assert outcomes == [1, 1, 1]
    assert await redis.hget("test:position", "pos") == b"9"
    # a replay of the same round enqueues nothing twice
    assert await submitter.write_many(jobs, fence=current) == [0, 0, 0]

    with pytest.raises(FencedError):
        await old.publish("scheduler", {"schedules": []}, Fence(stale.token))
    await new.publish("scheduler", {"schedules": []}, current)
    published = await new.published()
    assert published["scheduler"]["instance_id"] == "new"


async def test_leadership_events(redis: aioredis.Redis) -> None:
    a = LeaderLease(redis, "a", ttl_s=1.0)
    run = asyncio.create_task(a.run())
    try:
        await asyncio.wait_for(a.wait_gained(), 5)
        assert a.is_leader
        await redis.delete(Keys.leader)
        await redis.hset(Keys.leader, mapping={"instance": "other", "token": "999", "since": "0"})
        await asyncio.wait_for(a.wait_lost(), 5)
        assert not a.is_leader
    finally:
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
