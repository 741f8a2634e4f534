"""The enqueue's producer side: triggers that overlap share one enqueue script call
(jobs/group_commit.py), and each still gets its own answer (created, an id that exists, a disabled
plugin, a throttle's QueueFull, a record that does not encode, a cancelled neighbour); an end
published the previous version's way is still heard, and arq's payload written without arq reads
back as arq's own. Real Redis; the records are read back from it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest
from arq.jobs import deserialize_job, serialize_job
from redis.exceptions import RedisError

from orchestrator.client import Client, connect_redis
from orchestrator.errors import QueueFull
from orchestrator.jobs.model import JobRecord, Keys, now, queue_score
from orchestrator.jobs.results import ResultListener
from orchestrator.jobs.store import JobStore
from orchestrator.jobs.submit import ARQ_FUNCTION, CatalogEntry, arq_payload, json_bytes
from orchestrator.jobs.throttle import PREFIX, publish_limits, read_use
from orchestrator.plugins.manifest import Manifest
from orchestrator.plugins.throttle import Throttle
from tests.jobs.helpers import wait_for
from tests.services import RedisServer


def _record(job_id: str, plugin: str = "probe") -> JobRecord:
    return JobRecord(job_id=job_id, plugin=plugin, queue="default", state="queued", enqueued_at=now())


async def _trigger(store: JobStore, job_id: str, *, plugin: str = "probe", throttled: bool = False) -> int:
    score = queue_score(round(now() * 1000, 3), 5)
    return await store.enqueue(_record(job_id, plugin), arq_payload=b"{}", score=score, push=True, throttled=throttled)


def _count_calls(store: JobStore) -> list[int]:
    """Counts the store's enqueue script calls (the real method runs: the count is all that is added)."""
    calls = [0]
    real = store.enqueue_many

    async def counted(*args: Any, **kwargs: Any) -> list[int]:
        calls[0] += 1
        return await real(*args, **kwargs)

    store.enqueue_many = counted  # type: ignore[method-assign]
    return calls


async def test_fifty_overlapping_triggers_share_a_few_script_calls_and_each_is_enqueued(redis_url: str) -> None:
    async with connect_redis(redis_url) as redis:
        store = JobStore(redis, result_ttl_s=60)
        assert await _trigger(store, "warm") == 1
        calls = _count_calls(store)
        ids = [f"j{i:02d}" for i in range(50)]  # (ids sort in arrival order: a tie in score keeps it)
        outcomes = await asyncio.gather(*(_trigger(store, i) for i in ids))
        assert outcomes == [1] * 50
        assert calls[0] == 1  # all 50 queued before the first call went: one call
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
        calls = _count_calls(store)
        capped = [_trigger(store, f"c{i}", plugin="capped", throttled=True) for i in range(8)]
        free = [_trigger(store, f"f{i}") for i in range(6)]
        results = await asyncio.gather(*capped, *free, return_exceptions=True)
        created = [r for r in results[:8] if r == 1]
        refused = [r for r in results[:8] if isinstance(r, QueueFull)]
        assert (len(created), len(refused)) == (3, 5), results
        assert results[8:] == [1] * 6  # the other plugin's jobs are not refused with them
        assert await redis.zcard(f"{PREFIX}wait:capped:") == 3
        usage = (await read_use(redis))["capped"]
        assert usage["refused"] == 5  # the shared call's refusal, sent again one by one, is not counted
        # the refused call, the capped jobs one by one, the others together again: not one call each
        assert calls[0] == 1 + 8 + 1


async def test_a_record_that_does_not_encode_fails_its_own_trigger_only(redis_url: str) -> None:
    async with connect_redis(redis_url) as redis:
        store = JobStore(redis, result_ttl_s=60)
        score = queue_score(round(now() * 1000, 3), 5)
        bad = JobRecord(job_id="bad", plugin="probe", queue="default", params={"x": object()}, enqueued_at=now())
        results = await asyncio.gather(
            _trigger(store, "a"),
            store.enqueue(bad, arq_payload=b"{}", score=score, push=True),
            _trigger(store, "b"),
            return_exceptions=True,
        )
        assert results[0] == 1 and results[2] == 1
        assert isinstance(results[1], TypeError)
        assert await store.states_of(["a", "bad", "b"]) == ["queued", None, "queued"]


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
        calls = _count_calls(store)
        assert await _trigger(store, "alone") == 1
        assert await _trigger(store, "next") == 1
        assert calls[0] == 2


async def test_a_client_hears_an_end_the_previous_version_publishes_alone(redis_url: str) -> None:
    """Side by side in a rolling upgrade, an older finish script publishes the record without the id
    in front: the listener still files it by its id."""
    async with connect_redis(redis_url) as redis:
        listener = ResultListener(redis)
        listener.start()
        try:
            await wait_for(lambda: listener.live)
            listener.expect("old-1")
            record = JobRecord(job_id="old-1", plugin="probe", queue="default", state="succeeded", result=7)
            flat = [x for kv in record.to_hash().items() for x in kv]
            await redis.publish(listener.channel, json.dumps(flat))
            final = await listener.wait("old-1", within_s=5)
            assert final is not None and (final["state"], final["result"]) == ("succeeded", 7)
        finally:
            await listener.close()


@pytest.mark.parametrize("job_id", ["0f3a", 'quote"and\\slash', "cdc:orders:17:plugin", "naïve-✓"])
def test_the_arq_payload_is_what_arq_itself_makes(job_id: str) -> None:
    """Written without arq's serialize_job on the hot path, byte for byte what it makes, and arq reads it back."""
    made = serialize_job(ARQ_FUNCTION, (job_id,), {}, None, 1_796_000_000_123, serializer=json_bytes)
    assert arq_payload(job_id, 1_796_000_000_123) == made
    assert list(deserialize_job(arq_payload(job_id, 5), deserializer=json.loads).args) == [job_id]


def test_the_enqueue_fields_are_the_records_hash_and_a_derived_record_is_a_replaced_one() -> None:
    record = JobRecord(
        job_id="p1", plugin="probe", queue="default", params={"n": 1, "big": 10**30}, priority=2, source="cdc",
        max_retries=3, retry_backoff_s=1.5, timeout_s=60.0, enqueued_at=1_796_000_000.25, batch_id="b",
        context={"change_event": {"row": {"id": 1}}}, trace={"traceparent": "00-ab-cd-01"}, notify="orch:done-to:x",
    )  # fmt: skip
    flat = record.to_enqueue_fields()
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    assert fields == record.to_hash()
    assert JobRecord.from_hash(fields) == record
    assert record.derive(job_id="p2", trace=None) == dataclasses.replace(record, job_id="p2", trace=None)
    assert record.job_id == "p1" and record.trace is not None  # the template is left as it was


class _OneManifest:
    """A catalog of one plugin (as a client with only a Redis URL reads it from running instances)."""

    def __init__(self) -> None:
        manifest = {"name": "probe", "version": "1.0.0", "entry_point": "main.run", "parameters": {}}
        self.entry = CatalogEntry(Manifest.model_validate(manifest), enabled=True, state="ready")

    async def lookup(self, name: str) -> CatalogEntry | None:
        return self.entry if name == "probe" else None


async def test_an_end_heard_before_the_trigger_returns_is_kept_for_the_wait(redis_url: str) -> None:
    """A fast job's end can reach the client's listener before its enqueue's reply reaches the
    trigger (both ride the same loop turns, and the shared call adds some): it must not be lost to
    the 5 s recheck. Here the end is delivered, and heard, inside the trigger's own write."""
    async with connect_redis(redis_url) as redis:
        client = Client(redis, catalog=_OneManifest(), queues={"default": 1})
        try:
            client._results.start()
            await wait_for(lambda: client._results.live)
            real = client.store.enqueue

            async def enqueue_then_end(record: JobRecord, **kwargs: Any) -> int:
                outcome = await real(record, **kwargs)
                ended = dataclasses.replace(record, state="succeeded", result=42)
                flat = [x for kv in ended.to_hash().items() for x in kv]
                await redis.publish(client._results.channel, f"{record.job_id}\n{json.dumps(flat)}")
                await wait_for(lambda: record.job_id in client._results._ended)  # heard before the reply
                return outcome

            client.store.enqueue = enqueue_then_end  # type: ignore[method-assign]
            job = await client.trigger("probe", {})
            final = await client.result(job.job_id, timeout_s=2)  # the recheck would take 5 s
            assert (final["state"], final["result"]) == ("succeeded", 42)
        finally:
            await client.close()
