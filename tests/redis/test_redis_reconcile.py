"""No job stays `running` forever after Redis lost writes: a finish that was acknowledged and then
lost (Redis restored an earlier state) is put back by the instance that holds the claim, and a job
held by an instance nobody knows (its registry entry was lost too) is released."""

from __future__ import annotations

from pathlib import Path

from arq.constants import in_progress_key_prefix

from orchestrator.client import Client, connect_redis
from orchestrator.errors import JobError
from orchestrator.jobs.model import Keys
from tests.jobs.helpers import make_plugin, make_settings, run_app, wait_for


async def _as_if_still_running(client: Client, job_id: str, instance: str) -> None:
    """Rewind a finished job to the state Redis had while it ran (the finish lost, the claim kept)."""
    redis = client.redis
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(Keys.job(job_id), mapping={"state": "running", "instance": instance, "claim": f"{instance}:lost"})
        pipe.hdel(Keys.job(job_id), "finished_at", "result")
        pipe.zrem(Keys.state("succeeded"), job_id)
        pipe.zadd(Keys.state("running"), {job_id: 1.0})
        pipe.set(in_progress_key_prefix + job_id, "1")
        pipe.zadd(Keys.queue("default"), {job_id: 10**14})
        await pipe.execute()


async def _runs_again(client: Client, job_id: str) -> None:
    async def done() -> bool:
        job = await client.status(job_id)
        return job is not None and job["state"] == "succeeded" and job.get("result") is not None

    await wait_for(done, timeout_s=30)
    assert await client.redis.zcard(Keys.state("running")) == 0
    assert not await client.redis.exists(in_progress_key_prefix + job_id)


async def test_a_lost_finish_of_a_live_instance_is_put_back(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url, instance_ttl_s=1.0, heartbeat_interval_s=0.3)
    async with run_app(settings) as app, Client(connect_redis(redis_url), owns_redis=True) as client:
        job = await client.trigger("probe", {"name": "lost-finish"})
        assert (await client.result(job.job_id, timeout_s=30))["state"] == "succeeded"
        await _as_if_still_running(client, job.job_id, app.identity.instance_id)
        await _runs_again(client, job.job_id)
        status = await app.supervisor.status()  # type: ignore[union-attr]
        assert status["reconcile"]["put_back"] == 1


async def test_a_job_held_by_an_unknown_silent_instance_is_released(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url, instance_ttl_s=1.0, heartbeat_interval_s=0.3)
    async with run_app(settings) as app, Client(connect_redis(redis_url), owns_redis=True) as client:
        job = await client.trigger("probe", {"name": "orphan"})
        assert (await client.result(job.job_id, timeout_s=30))["state"] == "succeeded"
        await _as_if_still_running(client, job.job_id, "gone-instance")
        await _runs_again(client, job.job_id)
        status = await app.supervisor.status()  # type: ignore[union-attr]
        assert status["reconcile"]["orphans_released"] == 1


async def test_a_redis_that_came_back_empty_gets_queues_and_plugins_published_again(
    tmp_path: Path, redis_url: str
) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url, instance_ttl_s=1.0, heartbeat_interval_s=0.3)
    async with run_app(settings), Client(connect_redis(redis_url), owns_redis=True) as client:
        await client.redis.flushall()  # what a restart without persistence leaves

        async def trigger() -> str | None:
            try:
                return (await client.trigger("probe", {"name": "after-empty"})).job_id
            except JobError:
                return None

        job_id = await wait_for(trigger, timeout_s=30, interval_s=0.2)
        assert (await client.result(job_id, timeout_s=30))["state"] == "succeeded"
