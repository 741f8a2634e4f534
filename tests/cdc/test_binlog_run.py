"""Binlog mode inside real `orchestrator run` processes: kill -9 of the leader mid-burst, the other
instance takes over from the stored position, and every change becomes exactly one job."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from orchestrator.cdc.model import CdcKeys
from orchestrator.jobs.model import Keys
from tests.cdc.helpers import LeaderRun, cdc_settings, db_connect, run_env, sql
from tests.cdc.test_binlog import ORDERS
from tests.jobs.helpers import wait_for


async def _writer(settings: Any, n: int, seed: int) -> None:
    """n one-row INSERT transactions, a tenth rolled back."""
    conn = await db_connect(settings, autocommit=False)
    try:
        for i in range(n):
            async with conn.cursor() as cur:
                await cur.execute("INSERT INTO orders (status, total) VALUES (%s, %s)", (f"w{seed}-{i}", i))
            if i % 10 == 3:
                await conn.rollback()
            else:
                await conn.commit()
    finally:
        conn.close()


@pytest.mark.timeout(180)
async def test_kill9_of_the_leader_in_a_5000_change_burst_the_other_resumes_and_each_change_is_one_job(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    rules = [{"name": "burst", "table": "orders", "plugins": ["recorder"], "mode": "binlog"}]
    settings = cdc_settings(tmp_path, redis_url, mysql_url, rules)
    await sql(settings, ORDERS)
    redis = aioredis.Redis.from_url(redis_url)
    env = run_env(settings)
    first = LeaderRun(settings, tmp_path / "first.log", **env)
    second = LeaderRun(settings, tmp_path / "second.log", **env)
    try:
        await first.start()
        await wait_for(lambda: redis.hget(CdcKeys.state, CdcKeys.BINLOG), timeout_s=60)  # first leads and streams
        await second.start()  # a follower until the leader is gone
        writers = [asyncio.create_task(_writer(settings, 1250, seed)) for seed in range(4)]

        async def delivering() -> bool:
            return bool(await redis.zcard(Keys.all_jobs) >= 500)

        # kill -9 while it delivers, mid-burst: the writers go on while no instance leads
        await wait_for(delivering, timeout_s=60, interval_s=0.005)
        await first.kill9()
        at_kill = json.loads(await redis.hget(CdcKeys.state, CdcKeys.BINLOG))["gtid"]
        assert not all(w.done() for w in writers)
        await asyncio.gather(*writers)
        statuses = {row[0] for row in await sql(settings, "SELECT status FROM orders")}
        assert len(statuses) == 4500  # 5,000 transactions, 500 rolled back

        async def all_delivered() -> bool:
            return bool(await redis.zcard(Keys.all_jobs) >= len(statuses))

        await wait_for(all_delivered, timeout_s=120)
        job_ids = [j.decode() for j in await redis.zrange(Keys.all_jobs, 0, -1)]
        contexts = await asyncio.gather(*(redis.hget(Keys.job(j), "context") for j in job_ids))
        events = [json.loads(c)["change_event"] for c in contexts]
        final = json.loads(await redis.hget(CdcKeys.state, CdcKeys.BINLOG))["gtid"]
    finally:
        for run in (first, second):
            if run.proc is not None and run.proc.returncode is None:
                await run.signal_and_wait(signal.SIGTERM)
        await redis.aclose()
    assert len(job_ids) == len(statuses) and sorted(e["row"]["status"] for e in events) == sorted(statuses)
    assert all(j == f"cdc:burst:{e['change_id']}:recorder" for j, e in zip(job_ids, events, strict=True))
    # the second instance went on from where the first stopped (the position moved past the kill)
    assert int(final.rsplit("-", 1)[1]) > int(at_kill.rsplit("-", 1)[1])
    assert "capturing 1 rule(s) from the binlog" in second.log()
