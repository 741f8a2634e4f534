"""The enqueue's producer side: triggers that overlap share one enqueue script call
(jobs/group_commit.py), and each still gets its own answer (created, an id that exists, a disabled
plugin, a throttle's QueueFull, a cancelled neighbour); the record packed into `spec` and arq's
payload written without arq read back as before. Real Redis; the records are read back from it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest
from arq.jobs import deserialize_job, serialize_job
from redis.asyncio import Redis
from redis.exceptions import RedisError

from orchestrator.client import connect_redis
from orchestrator.errors import QueueFull
from orchestrator.jobs.model import JobRecord, Keys, now, queue_score
from orchestrator.jobs.store import JobStore
from orchestrator.jobs.submit import ARQ_FUNCTION, arq_payload, json_bytes
from orchestrator.jobs.throttle import PREFIX, publish_limits, read_use
from orchestrator.plugins.throttle import Throttle
from tests.services import RedisServer


def _record(job_id: str, plugin: str = "probe") -> JobRecord:
    return JobRecord(job_id=job_id, plugin=plugin, queue="default", state="queued", enqueued_at=now())


async def _trigger(store: JobStore, job_id: str, *, plugin: str = "probe", throttled: bool = False) -> int:
    score = queue_score(round(now() * 1000, 3), 5)
    return await store.enqueue(_record(job_id, plugin), arq_payload=b"{}", score=score, push=True, throttled=throttled)


async def _script_calls(redis: Redis) -> int:
    stats: dict[str, Any] = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0)) + int(stats.get("cmdstat_eval", {}).get("calls", 0))


async def test_fifty_overlapping_triggers_share_a_few_script_calls_and_each_is_enqueued(redis_url: str) -> None:
    async with connect_redis(redis_url) as redis:
        store = JobStore(redis, result_ttl_s=60)
        assert await _trigger(store, "warm") == 1  # loads the script (a lone trigger: one call)
        before = await _script_calls(redis)
        ids = [f"j{i}" for i in range(50)]
        outcomes = await asyncio.gather(*(_trigger(store, i) for i in ids))
        calls = await _script_calls(redis) - before
        assert outcomes == [1] * 50
        # the first goes alone, the 49 that arrived meanwhile in the next call
        assert calls <= 3, calls
        assert await store.states_of(ids) == ["queued"] * 50
        # arrival order is queue order (equal priority): FIFO holds across the shared call
        queued = [m.decode() for m in await redis.zrange(Keys.queue("default"), 0, -1)]
        assert queued == ["warm", *ids]


async def test_an_id_used_twice_in_one_call_is_created_once_and_a_disabled_plugin_refused(redis_url: str) -> None:
    async with connect_redis(redis_url) as redis:
        store = JobStore(redis, result_ttl_s=60)
        await redis.hset(Keys.plugin_enabled, "off", "0")  # type: ignore[misc]
        outcomes = await asyncio.gather(
            _trigger(store, "same"), _trigger(store, "same"), _trigger(store, "other", plugin="off"),
            _trigger(store, "fine"),
        )  # fmt: skip
        assert list(outcomes) == [1, 0, -1, 1]
        assert await store.states_of(["same", "other", "fine"]) == ["queued", None, "queued"]


async def test_a_throttle_refuses_only_the_triggers_past_its_cap_and_counts_each_refusal_once(
    redis_url: str,
) -> None:
    async with connect_redis(redis_url) as redis:
        store = JobStore(redis, result_ttl_s=60)
        await publish_limits(redis, {"capped": Throttle(max_queued=3)})
        results = await asyncio.gather(
            *(_trigger(store, f"c{i}", plugin="capped", throttled=True) for i in range(8)), return_exceptions=True
        )
        created = [r for r in results if r == 1]
        refused = [r for r in results if isinstance(r, QueueFull)]
        assert (len(created), len(refused)) == (3, 5), results
        assert await redis.zcard(f"{PREFIX}wait:capped:") == 3
        usage = (await read_use(redis))["capped"]
        assert usage["refused"] == 5  # the shared call's refusal, sent again one by one, is not counted


async def test_a_cancelled_trigger_does_not_cancel_the_others_in_its_call(redis_url: str) -> None:
    async with connect_redis(redis_url) as redis:
        store = JobStore(redis, result_ttl_s=60)
        tasks = [asyncio.create_task(_trigger(store, f"k{i}")) for i in range(30)]
        await asyncio.sleep(0)  # every task has queued its job; the first call is being sent
        tasks[0].cancel()
        tasks[10].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        assert isinstance(results[10], asyncio.CancelledError)
        others = [r for i, r in enumerate(results) if i not in (0, 10)]
        assert others == [1] * 28
        # the cancelled callers stopped waiting; their jobs went in with the call all the same
        assert await store.states_of([f"k{i}" for i in range(30)]) == ["queued"] * 30


async def test_a_redis_that_is_gone_fails_every_trigger_of_the_call_and_the_next_ones_work(
    redis_url: str, redis_server: RedisServer
) -> None:
    if redis_server.external:
        pytest.skip("stops the Redis server: only one this suite started")
    async with connect_redis(redis_url) as redis:
        store = JobStore(redis, result_ttl_s=60)
        assert await _trigger(store, "up") == 1
        redis_server.stop()
        results = await asyncio.gather(*(_trigger(store, f"r{i}") for i in range(5)), return_exceptions=True)
        assert all(isinstance(r, RedisError) for r in results), results  # each told, none left hanging
        redis_server.start()
        assert await _trigger(store, "after") == 1
        assert await store.states_of(["after"]) == ["queued"]  # (the restarted test server keeps no data)


async def test_a_lone_trigger_goes_alone_in_one_call(redis_url: str) -> None:
    async with connect_redis(redis_url) as redis:
        store = JobStore(redis, result_ttl_s=60)
        await _trigger(store, "load")
        before = await _script_calls(redis)
        assert await _trigger(store, "alone") == 1
        assert await _script_calls(redis) - before == 1


@pytest.mark.parametrize("job_id", ["0f3a", 'quote"and\\slash', "cdc:orders:17:plugin", "naïve-✓"])
def test_the_arq_payload_is_what_arq_itself_makes(job_id: str) -> None:
    """Written without arq's serialize_job on the hot path, byte for byte what it makes, and arq reads it back."""
    made = serialize_job(ARQ_FUNCTION, (job_id,), {}, None, 1_796_000_000_123, serializer=json_bytes)
    assert arq_payload(job_id, 1_796_000_000_123) == made
    assert list(deserialize_job(arq_payload(job_id, 5), deserializer=json.loads).args) == [job_id]


def test_a_packed_record_reads_back_whole_and_a_field_of_its_own_wins_over_spec() -> None:
    record = JobRecord(
        job_id="p1", plugin="probe", queue="default", params={"n": 1, "big": 10**30}, priority=2, source="cdc",
        max_retries=3, retry_backoff_s=1.5, timeout_s=60.0, enqueued_at=1_796_000_000.25, batch_id="b",
        context={"change_event": {"row": {"id": 1}}}, trace={"traceparent": "00-ab-cd-01"}, notify="orch:done-to:x",
    )  # fmt: skip
    flat = record.to_enqueue_fields()
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    assert "params" not in fields and "spec" in fields  # packed
    assert fields["context"] and fields["notify"] == "orch:done-to:x"  # read by name: fields of their own
    assert JobRecord.from_hash(fields) == record
    # a workflow step's enqueue time (and a resume's source) are written by name later: they win
    fields["enqueued_at"] = "1796000001.5"
    fields["source"] = "retry"
    again = JobRecord.from_hash(fields)
    assert (again.enqueued_at, again.source, again.params) == (1_796_000_001.5, "retry", record.params)
    assert record.derive(job_id="p2", trace=None) == dataclasses.replace(record, job_id="p2", trace=None)
