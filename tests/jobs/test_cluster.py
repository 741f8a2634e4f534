"""Several real `orchestrator run` processes on one Redis: one leader, takeover, fencing after a
stall, and one outcome per job when an instance is paused past its TTL."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from orchestrator.client import Client, connect_redis
from orchestrator.errors import FencedError
from orchestrator.jobs.model import Keys
from orchestrator.jobs.store import Checkpoint
from orchestrator.jobs.submit import JobRequest
from orchestrator.redis.fence import Fence
from tests.jobs.conftest import StartRun
from tests.jobs.helpers import RunProcess, make_plugin, make_settings, read_events, wait_for
from tests.services import free_port

TTL_S = 2.0


def _env(name: str, port: int) -> dict[str, str]:
    return {
        "ORCH_INSTANCE_ID": name,
        "ORCH_HTTP_PORT": str(port),
        "ORCH_LEADER_TTL_S": str(TTL_S),
        "ORCH_INSTANCE_TTL_S": str(TTL_S),
    }


class Instance:
    def __init__(self, name: str, proc: RunProcess, port: int) -> None:
        self.name, self.proc, self.port = name, proc, port

    async def status(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.port}/status") as r:
            assert r.status == 200
            return await r.json()  # type: ignore[no-any-return]

    async def up(self) -> bool:
        try:
            await self.status()
        except aiohttp.ClientError:
            return False
        return True


async def _start(start_run: StartRun, settings: Any, tmp_path: Path, name: str) -> Instance:
    port = free_port()
    proc = await start_run(settings, tmp_path / f"{name}.log", **_env(name, port))
    instance = Instance(name, proc, port)
    await wait_for(instance.up, timeout_s=30, interval_s=0.1)
    return instance


async def _leader(redis: aioredis.Redis) -> dict[str, str] | None:
    raw = await redis.hgetall(Keys.leader)
    return {k.decode(): v.decode() for k, v in raw.items()} or None


@pytest.fixture
async def redis(redis_url: str) -> aioredis.Redis:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.mark.slow
async def test_one_leader_and_takeover_when_it_is_killed(
    tmp_path: Path, redis_url: str, redis: aioredis.Redis, start_run: StartRun
) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url)
    a = await _start(start_run, settings, tmp_path, "a")
    b = await _start(start_run, settings, tmp_path, "b")
    first = await wait_for(lambda: _leader(redis), timeout_s=10)
    leader, other = (a, b) if first["instance"] == "a" else (b, a)
    # every instance names the same leader; exactly one says it leads
    for inst in (a, b):
        status = await inst.status()
        assert status["leader"]["instance_id"] == leader.name
        assert status["leader"]["token"] == int(first["token"])
        assert status["leader"]["is_leader"] is (inst is leader)
    assert "this instance leads now" in leader.proc.log()

    await leader.proc.kill9()
    # the lease expires (TTL) and the other instance takes it at its next renewal step (TTL / 3)
    taken = await wait_for(lambda: _holder_is(redis, other.name), timeout_s=TTL_S * 3)
    assert int(taken["token"]) > int(first["token"])
    status = await other.status()
    assert status["leader"]["is_leader"] is True and status["leader"]["instance_id"] == other.name
    assert await other.proc.signal_and_wait(signal.SIGTERM) == 0


async def _holder_is(redis: aioredis.Redis, name: str) -> dict[str, str] | None:
    leader = await _leader(redis)
    return leader if leader and leader["instance"] == name else None


@pytest.mark.slow
async def test_a_paused_leader_loses_the_lease_and_its_old_token_is_refused(
    tmp_path: Path, redis_url: str, redis: aioredis.Redis, start_run: StartRun
) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url)
    a = await _start(start_run, settings, tmp_path, "a")
    await wait_for(lambda: _holder_is(redis, "a"), timeout_s=10)
    b = await _start(start_run, settings, tmp_path, "b")
    old_token = (await a.status())["leader"]["token"]

    assert a.proc.proc is not None
    a.proc.proc.send_signal(signal.SIGSTOP)
    try:
        await wait_for(lambda: _holder_is(redis, "b"), timeout_s=TTL_S * 3)
    finally:
        a.proc.proc.send_signal(signal.SIGCONT)
    await wait_for(lambda: "no longer leads" in a.proc.log(), timeout_s=10)
    status = await a.status()
    assert status["leader"]["is_leader"] is False and status["leader"]["instance_id"] == "b"
    assert (await b.status())["leader"]["is_leader"] is True

    # a leader-only write made under a's old token is refused, and writes nothing
    async with Client(connect_redis(redis_url), owns_redis=True) as client:
        submitter = await client.submitter()
        job = await submitter.prepare(JobRequest("probe", job_id="late-write", source="schedule"))
        with pytest.raises(FencedError):
            await submitter.write_many([job], fence=Fence(old_token), checkpoint=Checkpoint("late", {"x": "1"}))
        assert await client.status("late-write") is None
    assert not await redis.exists("late")
    for inst in (a, b):
        assert await inst.proc.signal_and_wait(signal.SIGTERM) == 0


@pytest.mark.slow
async def test_a_job_of_an_instance_paused_past_its_ttl_has_one_outcome(
    tmp_path: Path, redis_url: str, start_run: StartRun
) -> None:
    """Instance a runs a job and is paused (SIGSTOP) past its TTL; b releases and runs the job.
    When a resumes it finds itself reaped, stops its plugin's process group and records nothing:
    the record shows one outcome, from b."""
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url, heartbeat_interval_s=0.5)
    record = tmp_path / "events.jsonl"
    a = await _start(start_run, settings, tmp_path, "a")
    async with Client(connect_redis(redis_url), owns_redis=True) as client:
        job = await client.trigger("probe", {"sleep": 8.0, "record": str(record)})
        await wait_for(lambda: [e for e in read_events(record) if e["event"] == "start"])
        first_pid = read_events(record)[0]["pid"]
        b = await _start(start_run, settings, tmp_path, "b")
        assert a.proc.proc is not None
        a.proc.proc.send_signal(signal.SIGSTOP)
        try:
            await wait_for(lambda: _running_on(client, job.job_id, "b"), timeout_s=20)
        finally:
            a.proc.proc.send_signal(signal.SIGCONT)
        await wait_for(lambda: "presumed dead" in a.proc.log(), timeout_s=10)
        done = await client.result(job.job_id, timeout_s=30)
        assert done["state"] == "succeeded" and done["instance"] == "b", done
        assert done["attempt"] == 1
    events = read_events(record)
    ends = [e for e in events if e["event"] == "end"]
    assert len(ends) == 1, events  # a's plugin process was stopped before it finished
    starts = [e["pid"] for e in events if e["event"] == "start"]
    assert len(starts) == 2 and starts[0] == first_pid and starts[1] != first_pid  # a's run, then b's
    assert "not recorded" not in b.proc.log()
    for inst in (a, b):
        assert await inst.proc.signal_and_wait(signal.SIGTERM) == 0


async def _running_on(client: Client, job_id: str, instance: str) -> bool:
    job = await client.status(job_id)
    return job is not None and job["state"] == "running" and job["instance"] == instance
