"""Redis restarted under load: SHUTDOWN (it saves) loses nothing; SIGKILL loses at most what its
appendfsync policy allows; afterwards no job is left `running` (records and arq's keys reconciled).

The load: a producer triggers jobs with deterministic ids, trying again under the same id while
Redis is away; a job is *acknowledged* when its trigger returned. The app runs in-process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest

from orchestrator.client import Client, connect_redis
from tests.jobs.helpers import make_plugin, make_settings, run_app
from tests.redis.load import Producer, settle
from tests.redis.servers import RedisProc

# everysec: Redis fsyncs once a second and, when the disk is slow, may postpone its write() for
# up to 2 s more (redis.conf, "appendfsync"): the acknowledged writes of that window can be lost.
EVERYSEC_WINDOW_S = 3.0


async def _fault_under_load(
    tmp_path: Path, policy: Literal["always", "everysec"], fault: Callable[[RedisProc], None]
) -> tuple[dict[str, float], dict[str, str | None], float]:
    """Returns (acknowledged id -> when, id -> final state or None when lost, when the fault hit)."""
    server = RedisProc(tmp_path / "redis", ["--appendonly", "yes", "--appendfsync", policy]).start()
    make_plugin(tmp_path / "plugins")
    settings = make_settings(
        tmp_path, server.url, queues={"default": {"concurrency": 8}}, instance_ttl_s=2.0, heartbeat_interval_s=0.5
    )
    try:
        async with (
            run_app(settings),
            Client(connect_redis(server.url), owns_redis=True, queues={"default": 8}) as client,
        ):
            producer = Producer(client, total=240)
            load = asyncio.create_task(producer.run())
            try:
                await producer.wait_acked(120)
                hit_at = time.time()
                fault(server)
                server.start()
                await load
            finally:
                load.cancel()
            states = await settle(client, list(producer.acked))
            return producer.acked, states, hit_at
    finally:
        server.stop()


def _check(acked: dict[str, float], states: dict[str, str | None]) -> set[str]:
    """Every acknowledged job that Redis kept ended succeeded; returns the lost ones."""
    lost = {job_id for job_id, state in states.items() if state is None}
    assert {s for s in states.values() if s is not None} == {"succeeded"}, states
    assert len(acked) == 240
    return lost


@pytest.mark.timeout(180)
async def test_shutdown_and_restart_mid_load_loses_nothing(tmp_path: Path) -> None:
    acked, states, _ = await _fault_under_load(tmp_path, "everysec", RedisProc.shutdown)
    assert _check(acked, states) == set()


@pytest.mark.timeout(180)
async def test_sigkill_with_appendfsync_always_loses_nothing(tmp_path: Path) -> None:
    acked, states, _ = await _fault_under_load(tmp_path, "always", RedisProc.kill9)
    assert _check(acked, states) == set()


@pytest.mark.timeout(180)
async def test_sigkill_with_appendfsync_everysec_loses_only_the_last_seconds(tmp_path: Path) -> None:
    acked, states, hit_at = await _fault_under_load(tmp_path, "everysec", RedisProc.kill9)
    lost = _check(acked, states)
    too_old = {job_id for job_id in lost if acked[job_id] < hit_at - EVERYSEC_WINDOW_S}
    assert too_old == set(), f"lost jobs acknowledged more than {EVERYSEC_WINDOW_S}s before the kill: {too_old}"
