"""Sentinel failover with jobs in flight, against real redis-server and sentinel processes.

A primary, one replica and two sentinels; a real `orchestrator run` connected through
`redis+sentinel://`; a producer that triggers through the same URL with the default settings
(with Sentinel, `redis_wait_replicas` is 1: a trigger returns only once the replica holds the
job). `SENTINEL FAILOVER` in the middle: the process never exits, /health shows redis failing and
then ok, and every acknowledged job ends `succeeded` with none left running. And a trigger that no
replica confirms fails with one line, and its retry under the same id enqueues nothing twice."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from orchestrator.client import Client, Triggered, connect_redis
from orchestrator.jobs.model import Keys
from orchestrator.plugins.build import build_registry
from orchestrator.redis.connection import NotReplicated
from tests.jobs.helpers import RunProcess, make_plugin, make_settings, wait_for
from tests.redis.load import Producer, settle
from tests.redis.servers import RedisProc, cli
from tests.services import free_port

SERVICE = "orchmain"


@dataclass
class SentinelSetup:
    primary: RedisProc
    replica: RedisProc
    sentinels: list[RedisProc]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def primary_port(self) -> int:
        return int(cli(self.sentinels[0].port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE).split()[-1])


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[SentinelSetup]:
    primary = RedisProc(tmp_path / "primary").start()
    replica = RedisProc(tmp_path / "replica", ["--replicaof", "127.0.0.1", str(primary.port)]).start()
    started = [primary, replica]
    try:
        deadline = time.monotonic() + 30
        while "master_link_status:up" not in cli(replica.port, "INFO", "replication"):
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.05)
        conf = (
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 2000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
        )
        sentinels = [RedisProc(tmp_path / f"sentinel{i}", sentinel_conf=conf).start() for i in range(2)]
        started += sentinels
        yield SentinelSetup(primary, replica, sentinels)
    finally:
        for proc in reversed(started):
            proc.stop()


async def _failover(setup: SentinelSetup) -> None:
    """SENTINEL FAILOVER, once a sentinel knows the replica (it learns it from the primary's INFO)."""

    def ask() -> bool:
        return cli(setup.sentinels[0].port, "SENTINEL", "FAILOVER", SERVICE) == "OK"

    await wait_for(ask, timeout_s=30, interval_s=0.2)
    await wait_for(lambda: setup.primary_port() == setup.replica.port, timeout_s=30)


@pytest.mark.timeout(240)
async def test_failover_with_jobs_in_flight_loses_no_acknowledged_job(
    tmp_path: Path, sentinel_setup: SentinelSetup
) -> None:
    make_plugin(tmp_path / "plugins")
    http_port = free_port()
    settings = make_settings(tmp_path, sentinel_setup.url, http_port=http_port, queues={"default": {"concurrency": 4}})
    run = RunProcess(settings, tmp_path / "run.log", ORCH_INSTANCE_TTL_S="2")
    await run.start()
    assert run.proc is not None
    seen: list[str] = []
    stop_polling = asyncio.Event()

    async def poll_health(http: aiohttp.ClientSession) -> None:
        while not stop_polling.is_set():
            try:
                async with http.get(f"http://127.0.0.1:{http_port}/health") as r:
                    body = await r.json()
                    state = body["components"].get("redis", {}).get("status", "absent")
            except aiohttp.ClientError:
                state = "unreachable"
            if not seen or seen[-1] != state:
                seen.append(state)
            await asyncio.sleep(0.05)

    assert settings.redis_wait_replicas == 1  # the default with redis+sentinel://
    client = Client.for_settings(settings, connect_redis(sentinel_setup.url))
    try:
        async with client, aiohttp.ClientSession() as http:
            await wait_for(client.queues, timeout_s=30)
            poller = asyncio.create_task(poll_health(http))
            producer = Producer(client, total=90, params={"sleep": 0.1}, interval_s=0.1)
            load = asyncio.create_task(producer.run())
            try:
                await producer.wait_acked(30)
                await _failover(sentinel_setup)
                await load
            finally:
                load.cancel()
            states = await settle(client, list(producer.acked), timeout_s=120)
            await wait_for(lambda: seen[-1] == "ok", timeout_s=30)
            stop_polling.set()
            await poller
            async with http.get(f"http://127.0.0.1:{http_port}/status") as r:
                status = await r.json()
            # every component reconnected without a restart: the lease, the heartbeat, the workers
            async with http.get(f"http://127.0.0.1:{http_port}/health") as r:
                health = await r.json()
        assert set(states.values()) == {"succeeded"}, {k: v for k, v in states.items() if v != "succeeded"}
        assert len(states) == 90
        assert run.proc.returncode is None, run.log()
        assert "failing" in seen and seen[-1] == "ok", seen
        assert health["status"] == "ok", health
        errors = [line for line in run.log().splitlines() if '"level": "error"' in line]  # a restart's traceback
        assert status["leader"]["is_leader"] is True, status
        assert status["components"]["workers"]["restarts"] == 0, (status, errors)
        assert status["redis"]["sentinel"]["failovers"] >= 1
        assert status["redis"]["sentinel"]["last_failover"]["to"] == f"127.0.0.1:{sentinel_setup.replica.port}"
        assert await run.signal_and_wait(signal.SIGTERM) == 0, run.log()
    finally:
        await client.redis.aclose()
        if run.proc.returncode is None:
            await run.kill9()


async def test_unconfirmed_trigger_fails_in_one_line_and_its_retry_enqueues_once(tmp_path: Path) -> None:
    """A primary with no replica yet: the trigger is written but not confirmed (NotReplicated, one
    line); retried under the same id once a replica is there, it is confirmed and not enqueued again."""
    primary = RedisProc(tmp_path / "primary").start()
    replica = RedisProc(tmp_path / "replica", ["--replicaof", "127.0.0.1", str(primary.port)])
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, primary.url, redis_wait_replicas=1, redis_wait_timeout_s=0.2)
    registry = build_registry(settings, settings.venv_dir)
    await registry.load()
    client = Client.for_settings(settings, connect_redis(primary.url), registry)
    try:
        with pytest.raises(NotReplicated) as raised:
            await client.trigger("probe", job_id="order-1")
        assert str(raised.value) == (
            "redis: the write reached 0 of the 1 replica(s) redis_wait_replicas asks for within 0.2 s: "
            "a failover may lose it (retry with the same job id)"
        )
        replica.start()
        retried = await wait_for(lambda: _trigger_confirmed(client, "order-1"), timeout_s=30, interval_s=0.2)
        assert retried.created is False  # the first write stood: nothing enqueued twice
        assert await client.redis.zcard(Keys.all_jobs) == 1
        assert cli(replica.port, "EXISTS", Keys.job("order-1")) == "1"
    finally:
        await client.redis.aclose()
        replica.stop()
        primary.stop()


async def _trigger_confirmed(client: Client, job_id: str) -> Triggered | None:
    try:
        return await client.trigger("probe", job_id=job_id)
    except NotReplicated:
        return None
