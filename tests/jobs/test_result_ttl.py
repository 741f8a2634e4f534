"""No acknowledged job expires while it waits: the result TTL starts when the job ends.

A 5 s `result_ttl_s`, a job deferred 10 s and a batch whose one job fails and waits 6-12 s for its
retry: records, the log of the first attempt and the batch have no TTL while they wait, the jobs
run, and a TTL of at most 5 s starts at their end. Housekeeping keeps the index entries of a job
that waited longer than the TTL."""

from __future__ import annotations

from pathlib import Path

from orchestrator.client import Client, connect_redis
from orchestrator.jobs.model import JobRecord, Keys, now
from orchestrator.jobs.store import JobStore
from tests.jobs.helpers import make_plugin, make_settings, run_app, wait_for

TTL_S = 5


async def test_jobs_waiting_past_the_result_ttl_run_and_then_expire(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    make_plugin(tmp_path / "plugins", "flaky", max_retries=1, retry_backoff=12)
    ready = tmp_path / "ready"
    settings = make_settings(tmp_path, redis_url, result_ttl_s=TTL_S)
    client = Client(connect_redis(redis_url), owns_redis=True, result_ttl_s=TTL_S)
    async with run_app(settings), client:
        redis = client.redis
        deferred = await client.trigger("probe", {"name": "late"}, defer_s=2 * TTL_S)
        batch = await client.batch([{"plugin": "flaky", "params": {"fail_until_file": str(ready)}}])
        retried = batch["job_ids"][0]
        await wait_for(lambda: _state(client, retried, "deferred"), timeout_s=20)  # the first attempt failed
        ready.touch()
        waiting = [Keys.job(deferred.job_id), Keys.job(retried), Keys.log(retried), Keys.batch(batch["batch_id"])]
        assert [await redis.pttl(k) for k in waiting] == [-1] * 4  # no TTL while they wait

        done = await client.result(deferred.job_id, timeout_s=30)
        assert done["state"] == "succeeded", done
        assert 0 < await redis.pttl(Keys.job(deferred.job_id)) <= TTL_S * 1000
        assert (await client.result(retried, timeout_s=30))["state"] == "succeeded"
        assert [line async for _, line in client.logs(retried)] == ["working on x"] * 2  # both attempts' lines
        assert 0 < await redis.pttl(Keys.log(retried)) <= TTL_S * 1000
        assert await client.store.close_ended_batches() == 1
        assert 0 < await redis.pttl(Keys.batch(batch["batch_id"])) <= TTL_S * 1000


async def test_housekeeping_keeps_the_index_entries_of_a_job_that_waits(redis_url: str) -> None:
    """An index entry older than the TTL is dropped only when its record is gone."""
    redis = connect_redis(redis_url)
    try:
        store = JobStore(redis, result_ttl_s=TTL_S)
        long_ago = now() - 10 * TTL_S
        for job_id in ("waiting", "expired"):
            record = JobRecord(job_id=job_id, plugin="probe", queue="default", state="deferred", enqueued_at=long_ago)
            await store.enqueue(record, arq_payload=b"", score=(now() + 3600) * 1000)
        await redis.delete(Keys.job("expired"))  # as if it had ended and expired
        assert await store.trim_indexes() == 3  # expired's entries: its state's, its plugin's, all jobs'
        for key in (Keys.state("deferred"), Keys.plugin_jobs("probe"), Keys.all_jobs):
            assert [i.decode() for i in await redis.zrange(key, 0, -1)] == ["waiting"]
    finally:
        await redis.aclose()


async def _state(client: Client, job_id: str, state: str) -> bool:
    record = await client.status(job_id)
    return record is not None and record["state"] == state
