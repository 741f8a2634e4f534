"""The round-trip shortcuts keep every queue guarantee: a worker claims the job its wake-up named
only when it is the queue's head (priorities hold), and a client that hears job ends on its own
channel loses none when that connection drops. Real Redis, real workers, real plugin processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from orchestrator.client import Client, connect_redis
from orchestrator.jobs.model import JobRecord, now, queue_score
from orchestrator.jobs.store import JobStore
from orchestrator.redis.packing import with_hiredis_packing
from tests.jobs.helpers import make_plugin, make_settings, run_app, wait_for

_TTL_MS = 60_000


async def _enqueue(store: JobStore, job_id: str, priority: int, *, defer_s: float = 0.0) -> None:
    ts = now()
    record = JobRecord(
        job_id=job_id,
        plugin="probe",
        queue="default",
        priority=priority,
        state="deferred" if defer_s else "queued",
        enqueued_at=ts,
        defer_until=ts + defer_s if defer_s else None,
    )
    score = round((ts + defer_s) * 1000, 3) if defer_s else queue_score(round(ts * 1000, 3), priority)
    assert await store.enqueue(record, arq_payload=b"{}", score=score) == 1


async def test_a_wake_up_claims_its_job_only_when_it_is_the_head(redis_url: str) -> None:
    async with connect_redis(redis_url) as redis:
        await redis.flushdb()
        store = JobStore(redis, result_ttl_s=60)
        await _enqueue(store, "low", priority=9)
        await _enqueue(store, "high", priority=1)
        await _enqueue(store, "later", priority=5, defer_s=30)

        # The wake-up named "low", but "high" waits ahead of it: nothing is claimed, read first.
        assert await store.claim_head("default", "low", "i1", in_progress_ttl_ms=_TTL_MS, look_ahead_ms=1000) is None
        assert await store.states_of(["low", "high"]) == ["queued", "queued"]

        claimed = await store.claim_head("default", "high", "i1", in_progress_ttl_ms=_TTL_MS, look_ahead_ms=60_000)
        assert claimed is not None
        records, more, next_due_ms = claimed
        assert [r.job_id for r in records] == ["high"]
        assert records[0].claim and records[0].state == "running"
        assert more  # "low" is still ready
        assert next_due_ms is not None and next_due_ms > now() * 1000  # "later" is due within the look-ahead

        # Another worker heard the same wake-up first: this one gets nothing, and no second claim.
        again = await store.claim_head("default", "low", "i1", in_progress_ttl_ms=_TTL_MS, look_ahead_ms=1000)
        assert again is not None and [r.job_id for r in again[0]] == ["low"]
        late = await store.claim_head("default", "low", "i2", in_progress_ttl_ms=_TTL_MS, look_ahead_ms=0)
        assert late is None  # "low" is no longer in the ready range: not the head
        assert await store.states_of(["high", "low"]) == ["running", "running"]


async def test_a_client_hears_the_ends_of_its_jobs_without_subscribing_per_job(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    async with run_app(make_settings(tmp_path, redis_url)), Client(connect_redis(redis_url), owns_redis=True) as client:
        first = await client.trigger("probe", {"name": "first"})
        assert (await client.result(first.job_id, timeout_s=20))["state"] == "succeeded"
        await wait_for(lambda: client._results.live)  # the first wait started the listener

        before = await _subscribe_calls(client.redis)
        jobs = [await client.trigger("probe", {"name": f"n{i}"}) for i in range(5)]
        record = await client.store.get(jobs[0].job_id)
        assert record is not None and record.notify is not None  # the client's own channel
        results = await asyncio.gather(*(client.result(j.job_id, timeout_s=20) for j in jobs))
        assert [r["result"]["name"] for r in results] == [f"n{i}" for i in range(5)]
        assert all(r["state"] == "succeeded" for r in results)
        assert await _subscribe_calls(client.redis) == before  # no SUBSCRIBE per waited job

        # A job waited for long after it ended is still answered (from what the listener heard).
        late = await client.trigger("probe", {"name": "late"})
        await wait_for(lambda: _succeeded(client, late.job_id), timeout_s=20)
        assert (await client.result(late.job_id, timeout_s=5))["result"]["name"] == "late"
        assert await _subscribe_calls(client.redis) == before


async def test_a_dropped_listener_connection_loses_no_end(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    async with run_app(make_settings(tmp_path, redis_url)), Client(connect_redis(redis_url), owns_redis=True) as client:
        first = await client.trigger("probe", {})
        await client.result(first.job_id, timeout_s=20)
        await wait_for(lambda: client._results.live)
        slow = await client.trigger("probe", {"name": "slow", "sleep": 1.0})
        waiting = asyncio.create_task(client.result(slow.job_id, timeout_s=20))
        await asyncio.sleep(0.2)
        # Every pub/sub connection goes (the workers' too: they subscribe again by themselves).
        async with connect_redis(redis_url) as admin:
            assert await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
        final = await waiting
        assert final["state"] == "succeeded" and final["result"]["name"] == "slow"
        # The next wait starts listening again.
        after = await client.trigger("probe", {"name": "after"})
        assert (await client.result(after.job_id, timeout_s=20))["result"]["name"] == "after"


async def _succeeded(client: Client, job_id: str) -> bool:
    job = await client.status(job_id)
    return job is not None and job["state"] == "succeeded"


async def _subscribe_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_subscribe", {}).get("calls", 0))


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "0" * 40, 2, "orch:job:a", "orch:queue:default", "", 86_400_000, 1.5, 1796013143.338312),
        ("CLIENT SETINFO", "LIB-NAME", "redis-py"),
        ("SET", b"bin\x00\xff", "é", -3, 10**30, 1e20),
    ],
)
def test_hiredis_packing_sends_what_redis_py_would(args: tuple[object, ...]) -> None:
    python_packed = b"".join(Connection().pack_command(*args))
    assert b"".join(with_hiredis_packing(Connection)().pack_command(*args)) == python_packed


def test_hiredis_packing_refuses_what_redis_py_refuses() -> None:
    with pytest.raises(DataError):
        with_hiredis_packing(Connection)().pack_command("SET", "k", None)
    with pytest.raises(DataError):
        with_hiredis_packing(Connection)().pack_command("SET", "k", True)


async def test_a_retry_due_before_the_idle_tick_runs_when_due(tmp_path: Path, redis_url: str) -> None:
    """A worker that had room is not woken by a job's end; the retry announces itself instead."""
    make_plugin(tmp_path / "plugins", max_retries=1, retry_backoff=0.1)
    settings = make_settings(tmp_path, redis_url, poll_delay_s=60.0)
    async with run_app(settings), Client(connect_redis(redis_url), owns_redis=True) as client:
        job = await client.trigger("probe", {"fail_until_file": str(tmp_path / "never")})
        final = await client.result(job.job_id, timeout_s=20)  # well inside the 60 s idle tick
        assert final["state"] == "failed" and final["attempt"] == 2


async def test_a_job_enqueued_while_the_claim_reads_does_not_start_before_its_enqueue(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim's first clock read can predate a job that its read then finds (the job was
    enqueued while the read was on its way, and a priority's score is below its enqueue time).
    The clock is set back for that first read to make the race happen every time: the job's
    started_at (the trace's queue wait, the wait histogram) must still not precede its enqueue."""
    import orchestrator.jobs.store as store_module

    async with connect_redis(redis_url) as redis:
        await redis.flushdb()
        store = JobStore(redis, result_ttl_s=60)
        await _enqueue(store, "late", priority=5)
        record = await store.get("late")
        assert record is not None and record.enqueued_at is not None
        enqueued_at = record.enqueued_at
        reads = iter([enqueued_at - 0.5])  # the claim began half a second before the enqueue
        monkeypatch.setattr(store_module, "now", lambda: next(reads, None) or now())
        claimed, _ = await store.claim("default", 10, "i1", in_progress_ttl_ms=_TTL_MS, look_ahead_ms=0)
        assert [r.job_id for r in claimed] == ["late"]
        assert claimed[0].started_at is not None and claimed[0].started_at >= enqueued_at
