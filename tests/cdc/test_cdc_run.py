"""Change capture inside a real app: the plugin gets `change_event`; kill -9 mid-burst loses and doubles nothing."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from orchestrator.jobs.model import Keys
from tests.cdc.helpers import LeaderRun, cdc_settings, db_connect, install, run_env, sql
from tests.cdc.test_capture import ORDERS
from tests.jobs.helpers import read_events, run_app, wait_for


async def test_the_plugin_receives_the_change_event_and_status_and_metrics_show_the_rule(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    record = tmp_path / "events.jsonl"
    rules = [{"name": "orders", "table": "orders", "plugins": ["recorder"], "params": {"record": str(record)}}]
    settings = cdc_settings(tmp_path, redis_url, mysql_url, rules)
    await sql(settings, ORDERS)
    await install(settings)
    async with run_app(settings) as app:
        await sql(settings, "INSERT INTO orders (status) VALUES ('new')", "UPDATE orders SET status = 'paid'")
        events = await wait_for(lambda: len(read_events(record)) == 2 and read_events(record))
        assert app.http is not None
        base = f"http://127.0.0.1:{app.http.bound_port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/status") as response:
                status = await response.json()
            async with session.get(f"{base}/metrics") as response:
                metrics = await response.text()
    by_job = {e["job"]: e["change_event"] for e in events}
    assert by_job["cdc:orders:2:recorder"]["before"]["status"] == "new"
    assert by_job["cdc:orders:2:recorder"]["row"]["status"] == "paid"
    rule = status["cdc"]["rules"][0]
    assert status["cdc"]["enabled"] is True
    assert {k: rule[k] for k in ("name", "table", "mode", "enabled", "position", "delivered", "last_error")} == {
        "name": "orders",
        "table": "testdb.orders",
        "mode": "changelog",
        "enabled": True,
        "position": 2,
        "delivered": 2,
        "last_error": None,
    }
    assert 'orchestrator_cdc_delivered_total{rule="orders"} 2.0' in metrics
    assert "orchestrator_cdc_up 1.0" in metrics
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: scripts/test installs Debian's prometheus package")
    proc = await asyncio.create_subprocess_exec(promtool, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=PIPE)
    out, err = await proc.communicate(metrics.encode())
    assert proc.returncode == 0, (out + err).decode()


async def test_without_database_url_change_capture_is_off_and_says_so(tmp_path: Path, redis_url: str) -> None:
    from tests.jobs.helpers import make_settings

    async with run_app(make_settings(tmp_path, redis_url)) as app:
        assert app.http is not None
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{app.http.bound_port}/status") as response,
        ):
            status = await response.json()
    assert status["cdc"] == {"enabled": False, "reason": "no DATABASE_URL set", "rules": []}


async def _writer(settings: Any, n: int, seed: int, halfway: asyncio.Barrier, resume: asyncio.Event) -> None:
    """n transactions of one statement each (INSERT, UPDATE or DELETE), a tenth of them rolled back;
    halfway through, all writers wait for `resume` (the test kills the orchestrator meanwhile)."""
    rng = random.Random(seed)
    conn = await db_connect(settings, autocommit=False)
    try:
        for i in range(n):
            if i == n // 2:
                await halfway.wait()
                await resume.wait()
            async with conn.cursor() as cur:
                kind = rng.random()
                if kind < 0.6:
                    await cur.execute("INSERT INTO orders (status, total) VALUES ('new', %s)", (rng.randint(1, 99),))
                elif kind < 0.9:
                    await cur.execute("UPDATE orders SET total = total + 1 WHERE id = %s", (rng.randint(1, 2000),))
                else:
                    await cur.execute("DELETE FROM orders WHERE id = %s", (rng.randint(1, 2000),))
            if rng.random() < 0.1:
                await conn.rollback()
            else:
                await conn.commit()
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_kill9_during_a_burst_of_5000_writes_then_restart_every_change_becomes_one_job(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    rules = [{"name": "burst", "table": "orders", "plugins": ["recorder"]}]
    settings = cdc_settings(tmp_path, redis_url, mysql_url, rules)
    settings = settings.model_copy(update={"db_change_polling_interval_s": 0.1})
    await sql(settings, ORDERS)
    await install(settings)
    redis = aioredis.Redis.from_url(redis_url)
    env = run_env(settings)
    first = LeaderRun(settings, tmp_path / "first.log", **env)
    second = LeaderRun(settings, tmp_path / "second.log", **env)
    try:
        await first.start()
        halfway, resume = asyncio.Barrier(5), asyncio.Event()
        writers = [asyncio.create_task(_writer(settings, 1250, seed, halfway, resume)) for seed in range(4)]
        await halfway.wait()  # 2,500 statements done
        # kill -9 as soon as the first instance is delivering, then the burst goes on while it is dead
        await wait_for(lambda: redis.zcard(Keys.all_jobs), timeout_s=60, interval_s=0.005)
        await first.kill9()
        resume.set()
        await second.start()
        await asyncio.gather(*writers)
        ids = [row[0] for row in await sql(settings, "SELECT id FROM orch_changelog ORDER BY id")]
        assert len(ids) > 3000  # committed changes of the 5,000 statements (rollbacks, misses excluded)

        async def all_delivered() -> bool:
            return bool(await redis.zcard(Keys.all_jobs) >= len(ids))

        await wait_for(all_delivered, timeout_s=120)
        job_ids = [j.decode() for j in await redis.zrange(Keys.all_jobs, 0, -1)]
        assert sorted(job_ids) == sorted(f"cdc:burst:{i}:recorder" for i in ids)
        # one record and one queue entry per change, and each carries its own change
        queued = await redis.zcard(Keys.queue(settings.default_queue))
        assert queued == len(ids)
        sample = await redis.hget(Keys.job(job_ids[0]), "context")
        assert json.loads(sample)["change_event"]["change_id"] == job_ids[0].split(":")[2]
    finally:
        for run in (first, second):
            if run.proc is not None and run.proc.returncode is None:
                await run.signal_and_wait(signal.SIGTERM)
        await redis.aclose()
