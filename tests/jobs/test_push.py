"""Pushes: an enqueue hands a job due now, and first in line, straight to a worker that offered a
free slot, claimed for it (JobStore's enqueue script, QueueWorker.on_push). Every queue guarantee
holds: priorities, no push to a channel nobody reads, a push that finds no room goes back to the
queue, the offer stays equal to the free slots and is withdrawn at shutdown. Real Redis, real
workers, real plugin processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from orchestrator.client import Client, connect_redis
from orchestrator.jobs.model import Keys
from tests.jobs.helpers import make_plugin, make_settings, read_events, run_app, wait_for

_OFFERS = Keys.offers("default")


async def _offer(redis: Redis, channel: str, slots: int) -> None:
    await redis.hset(_OFFERS, channel, str(slots))  # type: ignore[misc]


async def _offered(redis: Redis, channel: str) -> int | None:
    value = await redis.hget(_OFFERS, channel)  # type: ignore[misc]
    return None if value is None else int(value)


async def test_an_enqueue_pushes_only_a_job_due_now_and_first_in_line(tmp_path: Path, redis_url: str) -> None:
    """No worker runs here: a plain subscriber plays the worker, so each push is seen as it is sent."""
    make_plugin(tmp_path / "plugins")
    leader_only = run_app(make_settings(tmp_path, redis_url), role="leader")  # publishes the plugins, runs no worker
    async with (
        leader_only,
        Client(connect_redis(redis_url), owns_redis=True) as client,
        connect_redis(redis_url) as sub_redis,
    ):
        channel = Keys.push_channel("fake", "t0")
        pubsub = sub_redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(channel)

        await _offer(client.redis, channel, 1)
        first = await client.trigger("probe", {"name": "first"})
        message = await _next_push(pubsub, 5)
        assert message is not None
        job_id, claim, _started_at, _fields = json.loads(message["data"])
        assert job_id == first.job_id and claim.startswith("fake:push:")
        record = await client.store.get(first.job_id)
        assert record is not None and record.state == "running" and record.instance == "fake" and record.attempt == 1
        assert await _offered(client.redis, channel) == 0

        # No slot offered: queued as usual, and it stays first in line.
        waiting = await client.trigger("probe", {"name": "waiting"}, priority=5)
        await _offer(client.redis, channel, 1)
        # Behind a ready job of higher priority: not pushed (priorities hold) ...
        behind = await client.trigger("probe", {"name": "behind"}, priority=9)
        # ... and a deferred one is not due: not pushed either.
        later = await client.trigger("probe", {"name": "later"}, defer_s=60)
        assert await _next_push(pubsub, 0.5) is None
        assert await client.store.states_of([waiting.job_id, behind.job_id, later.job_id]) == [
            "queued",
            "queued",
            "deferred",
        ]
        # Ahead of everything waiting: pushed.
        urgent = await client.trigger("probe", {"name": "urgent"}, priority=0)
        message = await _next_push(pubsub, 5)
        assert message is not None and json.loads(message["data"])[0] == urgent.job_id
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_an_offer_nobody_reads_is_dropped_and_the_job_waits_in_its_queue(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    leader_only = run_app(make_settings(tmp_path, redis_url), role="leader")
    async with leader_only, Client(connect_redis(redis_url), owns_redis=True) as client:
        ghost = Keys.push_channel("ghost", "t0")  # a worker that died without withdrawing its offer
        await _offer(client.redis, ghost, 3)
        job = await client.trigger("probe", {})
        assert await client.store.states_of([job.job_id]) == ["queued"]
        assert await _offered(client.redis, ghost) is None


async def test_an_idle_worker_gets_its_jobs_pushed_and_its_offer_stays_exact(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url, queues={"default": {"concurrency": 3}}, instance_id="w-exact")
    async with run_app(settings), Client(connect_redis(redis_url), owns_redis=True) as client:
        channel = await _channel_of(client.redis, "w-exact")
        assert await _offered(client.redis, channel) == 3

        slow = await client.trigger("probe", {"name": "slow", "sleep": 1.0})
        await wait_for(lambda: _state(client, slow.job_id, "running"))
        running = await client.redis.hget(Keys.job(slow.job_id), "claim")  # type: ignore[misc]
        assert running is not None and running.decode().startswith("w-exact:push:")  # started by the push
        assert await _offered(client.redis, channel) == 2

        # A burst: some pushed, the rest through the queue; every slot comes back afterwards.
        burst = await asyncio.gather(*(client.trigger("probe", {"name": f"b{i}"}) for i in range(20)))
        results = await asyncio.gather(*(client.result(j.job_id, timeout_s=30) for j in [slow, *burst]))
        assert all(r["state"] == "succeeded" for r in results)
        await wait_for(lambda: _offer_is(client.redis, channel, 3))


async def test_a_push_that_finds_no_room_goes_back_to_the_queue(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url, queues={"default": {"concurrency": 1}}, instance_id="w-full")
    async with run_app(settings), Client(connect_redis(redis_url), owns_redis=True) as client:
        channel = await _channel_of(client.redis, "w-full")
        await wait_for(lambda: _offer_is(client.redis, channel, 1))
        slow = await client.trigger("probe", {"name": "slow", "sleep": 1.0})
        await wait_for(lambda: _state(client, slow.job_id, "running"))
        # The offer runs ahead of the worker (as when a claim and a push cross): one push too many.
        await _offer(client.redis, channel, 1)
        extra = await client.trigger("probe", {"name": "extra"})
        final = await client.result(extra.job_id, timeout_s=30)
        assert final["state"] == "succeeded" and final["attempt"] == 1  # put back, then run once
        assert final["result"]["attempt"] == 1
        record = await client.store.get(extra.job_id)
        assert record is not None and record.interrupted is not None  # it was pushed, and went back
        slow_final = await client.result(slow.job_id, timeout_s=30)
        assert slow_final["state"] == "succeeded"
        assert final["started_at"] >= slow_final["finished_at"]  # it waited for the only slot
        await wait_for(lambda: _offer_is(client.redis, channel, 1))


async def test_a_push_lost_on_its_way_is_put_back_and_runs(tmp_path: Path, redis_url: str) -> None:
    """PUBLISH counted a reader, but the worker never got the message (its connection died with it
    in the buffer): the record says the instance runs the job while it does not, and the instance's
    reconciler puts it back (two passes, `instance_ttl_s` apart)."""
    make_plugin(tmp_path / "plugins")
    settings = make_settings(
        tmp_path, redis_url, queues={"default": {"concurrency": 2}}, instance_id="w-lost", instance_ttl_s=1.0
    )
    async with (
        run_app(settings),
        Client(connect_redis(redis_url), owns_redis=True) as client,
        connect_redis(redis_url) as sub_redis,
    ):
        real = await _channel_of(client.redis, "w-lost")
        # The message goes to a reader that drops it, in the worker's name.
        lost = Keys.push_channel("w-lost", "gone")
        pubsub = sub_redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(lost)
        await client.redis.hdel(_OFFERS, real)  # type: ignore[misc]
        await _offer(client.redis, lost, 1)
        job = await client.trigger("probe", {"name": "lost"})
        assert await _next_push(pubsub, 5) is not None
        record = await client.store.get(job.job_id)
        assert record is not None and record.state == "running" and record.instance == "w-lost"
        final = await client.result(job.job_id, timeout_s=30)
        assert final["state"] == "succeeded" and final["result"]["name"] == "lost"
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_garbage_on_the_push_channel_is_logged_and_the_worker_goes_on(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url, queues={"default": {"concurrency": 1}}, instance_id="w-junk")
    async with run_app(settings), Client(connect_redis(redis_url), owns_redis=True) as client:
        channel = await _channel_of(client.redis, "w-junk")
        no_fields = json.dumps(["id", "c", 1.0, [None] * 13]).encode()  # the right shape, nothing in it
        for junk in (b"not json", b"[1, 2]", b'["id", "claim", "now", []]', b'["id", "c", 1.0, [1, 2, 3]]', no_fields):
            assert await client.redis.publish(channel, junk) == 1
        job = await client.trigger("probe", {"name": "after"})
        final = await client.result(job.job_id, timeout_s=30)
        assert final["state"] == "succeeded" and final["result"]["name"] == "after"


async def test_a_stopping_worker_withdraws_its_offer(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url, queues={"default": {"concurrency": 2}}, instance_id="w-stop")
    async with connect_redis(redis_url) as redis:
        async with run_app(settings):
            channel = await _channel_of(redis, "w-stop")
            await wait_for(lambda: _offer_is(redis, channel, 2))
        assert await _offered(redis, channel) is None
        # With no offer and no worker, a trigger waits in its queue for the next worker.
        leader_only = run_app(make_settings(tmp_path, redis_url), role="leader")
        async with leader_only, Client(connect_redis(redis_url), owns_redis=True) as client:
            job = await client.trigger("probe", {})
            assert await client.store.states_of([job.job_id]) == ["queued"]


async def test_two_processes_given_one_instance_id_never_run_a_push_twice(tmp_path: Path, redis_url: str) -> None:
    """A misconfiguration (the same ORCH_INSTANCE_ID twice) must not turn a push into two runs: each
    process reads a channel of its own."""
    make_plugin(tmp_path / "plugins")
    events = tmp_path / "events.jsonl"
    settings = make_settings(tmp_path, redis_url, queues={"default": {"concurrency": 2}}, instance_id="twin")
    async with run_app(settings), run_app(settings), Client(connect_redis(redis_url), owns_redis=True) as client:
        await wait_for(lambda: _offer_count_is(client.redis, 2))  # both processes offer, on two channels
        jobs = [await client.trigger("probe", {"name": f"j{i}", "record": str(events)}) for i in range(10)]
        finals = [await client.result(j.job_id, timeout_s=30) for j in jobs]
        assert all(f["state"] == "succeeded" for f in finals)
    starts = [e["job"] for e in read_events(events) if e["event"] == "start"]
    assert sorted(starts) == sorted(j.job_id for j in jobs)  # each job ran exactly once


async def _channel_of(redis: Redis, instance_id: str) -> str:
    """The push channel the worker process of `instance_id` offers slots on (once it has)."""
    prefix = f"orch:push:{instance_id}:"

    async def find() -> str | None:
        fields = await redis.hkeys(_OFFERS)  # type: ignore[misc]
        return next((f.decode() for f in fields if f.decode().startswith(prefix)), None)

    channel: str = await wait_for(find)
    return channel


async def _offer_count_is(redis: Redis, channels: int) -> bool:
    return int(await redis.hlen(_OFFERS)) == channels  # type: ignore[misc]


async def _next_push(pubsub: PubSub, within_s: float) -> dict[str, Any] | None:
    """The next message (the subscription's confirmation is skipped), or None after `within_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while (left := deadline - loop.time()) > 0:
        message: dict[str, Any] | None = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if message is not None:
            return message
    return None


async def _state(client: Client, job_id: str, state: str) -> bool:
    return await client.store.states_of([job_id]) == [state]


async def _offer_is(redis: Redis, channel: str, slots: int) -> bool:
    return await _offered(redis, channel) == slots
