"""Change capture: capture throughput, commit-to-enqueued latency, and what the triggers cost writers.

    .venv/bin/python bench/bench_cdc.py [--changes 50000] [--rounds 3] [--latency-rows 600]
                                        [--insert-rows 3000] [--loop uvloop|asyncio]
                                        [--modes changelog,binlog] [--rate 0]

`--modes` runs 1 and 2 for each capture mode, side by side in the same run: `changelog` (the
triggers and the ChangePoller) and `binlog` (BinlogCapture: python-mysql-replication in its reader
thread, no triggers). `--rate N` paces the latency writer at N commits/s instead of the random
5-35 ms gaps.

Starts a private MariaDB and Redis (as the tests do; ORCH_TEST_MYSQL_URL / ORCH_TEST_REDIS_URL
point it at running ones) and measures, with the real ChangePoller, rules and job layer:

1. Capture throughput: a changelog backlog of `--changes` rows (filled through the triggers before
   the poller starts) drained into enqueued jobs: rule matching with a condition, one job record
   per change, and the atomic write of jobs + position per 500 changes. Changes/s from the poller's
   start until the last change's job is in Redis; `--rounds` rounds, median.
2. Commit-to-enqueued latency at a 100 ms poll interval: one writer commits a row every 5-35 ms
   (random), noting the time COMMIT returned; a subscriber to the queue's wake-up channel notes
   when each atomic write landed (the script publishes once per write, after the jobs are in).
   p50/p99 over `--latency-rows` rows.
3. Trigger overhead: the same INSERTs into two identical tables, one with the capture triggers;
   single-row autocommit INSERTs and 100-row INSERTs, the two tables taking turns every 100 rows
   (so background noise hits both alike); 5 rounds at least, median.
Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncmy  # type: ignore[import-untyped,unused-ignore]

from orchestrator.cdc.admin import CdcAdmin
from orchestrator.cdc.binlog_capture import BinlogCapture
from orchestrator.cdc.binlog_position import BinlogPosition, parse_gtid_state
from orchestrator.cdc.model import CdcKeys
from orchestrator.cdc.poller import ChangePoller
from orchestrator.cdc.rules import Rule
from orchestrator.client import Client, connect_redis
from orchestrator.cluster.lease import LeaderLease
from orchestrator.config import Settings
from orchestrator.jobs.catalog import RegistryCatalog
from orchestrator.jobs.model import Keys
from orchestrator.jobs.store import JobStore
from orchestrator.jobs.submit import JobDefaults, Submitter
from orchestrator.plugins.build import build_registry
from tests.services import MariaDBServer, RedisServer

TABLE = (
    "CREATE TABLE {name} (id INT PRIMARY KEY AUTO_INCREMENT, status VARCHAR(20) NOT NULL, "
    "total DECIMAL(10,2) NOT NULL, note VARCHAR(100), "
    "updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))"
)
PLUGIN = {
    "name": "sink",
    "version": "1.0.0",
    "description": "bench",
    "author": "bench",
    "entry_point": "main.run",
    "parameters": {"tag": {"type": "string", "required": False}},
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


class Bench:
    def __init__(self, settings: Settings, mode: str = "changelog") -> None:
        rule = {"name": "paid", "table": "orders", "plugins": ["sink"], "conditions": {"status": "paid"}, "mode": mode}
        self.settings = settings.model_copy(update={"cdc": settings.cdc.model_copy(update={"rules": [Rule(**rule)]})})
        self.mode = mode

    async def db(self) -> Any:
        p = self.settings.mysql_params()
        assert p is not None
        return await asyncmy.connect(
            host=p.host, port=p.port, user=p.user, password=p.password, db=p.db, autocommit=True
        )

    async def sql(self, *statements: str) -> list[Any]:
        conn = await self.db()
        try:
            rows: list[Any] = []
            async with conn.cursor() as cur:
                for s in statements:
                    await cur.execute(s)
                    rows = list(await cur.fetchall() or [])
            return rows
        finally:
            conn.close()

    async def reset(self) -> None:
        redis = connect_redis(self.settings.redis_url or "")
        await redis.flushall()
        await redis.aclose()
        await self.sql(
            "DROP TABLE IF EXISTS orders", "DROP TABLE IF EXISTS plain", "DROP TABLE IF EXISTS orch_changelog"
        )
        await self.sql(TABLE.format(name="orders"), TABLE.format(name="plain"))
        if self.mode == "binlog":  # nothing to install; the stream starts at the binlog's current end
            ((gtid,),) = await self.sql("SELECT @@gtid_binlog_pos")
            redis = connect_redis(self.settings.redis_url or "")
            position = BinlogPosition(gtids=parse_gtid_state(str(gtid)))
            await redis.hset(CdcKeys.state, CdcKeys.BINLOG, position.to_json())  # type: ignore[misc]
            await redis.aclose()
            return
        redis = connect_redis(self.settings.redis_url or "")
        try:
            submitter = await Client.for_settings(self.settings, redis).submitter()
            await CdcAdmin(self.settings, redis, submitter).install(dry_run=False)
        finally:
            await redis.aclose()

    async def poller(self, interval_s: float) -> tuple[ChangePoller | BinlogCapture, list[asyncio.Task[None]], Any]:
        redis = connect_redis(self.settings.redis_url or "")
        registry = build_registry(self.settings, self.settings.venv_dir)
        await registry.load()
        store = JobStore(redis, result_ttl_s=self.settings.result_ttl_s)
        submitter = Submitter(
            store, RegistryCatalog(registry, store), set(self.settings.queues), JobDefaults.from_section(self.settings)
        )
        lease = LeaderLease(redis, "bench", ttl_s=10)
        mysql = self.settings.mysql_params()
        assert mysql is not None
        poller: ChangePoller | BinlogCapture
        if self.mode == "binlog":
            poller = BinlogCapture(self.settings, mysql, submitter=submitter, lease=lease, redis=redis)
        else:
            poller = ChangePoller(
                self.settings.cdc, mysql, interval_s=interval_s, submitter=submitter, lease=lease, redis=redis
            )
        lease_task = asyncio.create_task(lease.run())
        await lease.wait_gained()
        return poller, [lease_task], redis

    # 1.
    async def throughput(self, changes: int) -> dict[str, Any]:
        await self.reset()
        batch = 1000
        for start in range(0, changes, batch):
            values = ", ".join(f"('paid', {random.randint(1, 999)}.50, 'row {start + i}')" for i in range(batch))
            await self.sql(f"INSERT INTO orders (status, total, note) VALUES {values}")
        if self.mode == "binlog":
            ((backlog,),) = await self.sql("SELECT COUNT(*) FROM orders")
            ((gtid,),) = await self.sql("SELECT @@gtid_binlog_pos")
            target = int(str(gtid).rsplit("-", 1)[1])
        else:
            ((backlog,),) = await self.sql("SELECT COUNT(*) FROM orch_changelog")
        poller, tasks, redis = await self.poller(0.05)
        started = time.perf_counter()
        cpu0 = time.process_time()
        tasks.append(asyncio.create_task(poller.run()))
        while True:  # a benchmark may poll: the poller's own cursor is the finish line
            if isinstance(poller, BinlogCapture):
                if poller.last_error:
                    raise RuntimeError(poller.last_error)
                done = [g for g in poller.position.gtids.values() if int(g.rsplit("-", 1)[1]) >= target]
                if done:
                    break
            elif poller.cursor.high >= backlog:
                break
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        jobs = await redis.zcard(Keys.all_jobs)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await redis.aclose()
        assert jobs == backlog, (jobs, backlog)
        return {
            "changes": backlog,
            "seconds": round(elapsed, 3),
            "per_s": round(backlog / elapsed),
            "cpu_s": round(cpu, 2),  # this process (the binlog reader thread included)
        }

    # 2.
    async def latency(self, rows: int, interval_s: float, rate: float = 0) -> dict[str, Any]:
        await self.reset()
        poller, tasks, redis = await self.poller(interval_s)
        tasks.append(asyncio.create_task(poller.run()))
        landed: dict[str, float] = {}
        seen: set[str] = set()
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(Keys.wake_channel(self.settings.default_queue))

        async def watch() -> None:
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                at = time.time()
                for job in await redis.zrange(Keys.all_jobs, 0, -1):
                    job_id = job.decode()
                    if job_id not in seen:
                        seen.add(job_id)
                        landed[job_id] = at

        watcher = asyncio.create_task(watch())
        committed: dict[str, float] = {}
        conn = await self.db()
        await conn.autocommit(False)
        try:
            await asyncio.sleep(0.5)
            first = time.perf_counter()
            for i in range(rows):
                async with conn.cursor() as cur:
                    await cur.execute("INSERT INTO orders (status, total) VALUES ('paid', %s)", (i,))
                await conn.commit()
                committed[str(i)] = time.time()
                if rate:  # a steady pace: the next commit at its slot (no sleep when behind)
                    ahead = first + (i + 1) / rate - time.perf_counter()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                else:
                    await asyncio.sleep(random.uniform(0.005, 0.035))
            achieved = rows / (time.perf_counter() - first)
            deadline = time.monotonic() + 30
            while True:
                if len(landed) >= rows or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            # which row each job is for (the job ids differ by mode): the row's `total` is its index
            by_row: dict[str, float] = {}
            for job_id, at in landed.items():
                context = json.loads(await redis.hget(Keys.job(job_id), "context"))
                by_row[str(int(context["change_event"]["row"]["total"]))] = at
        finally:
            conn.close()
            watcher.cancel()
            for t in tasks:
                t.cancel()
            await asyncio.gather(watcher, *tasks, return_exceptions=True)
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await redis.aclose()
        samples = [(by_row[k] - committed[k]) * 1000 for k in committed if k in by_row]
        return {
            "mode": self.mode,
            "writes_per_s": round(achieved),
            "interval_ms": interval_s * 1000 if self.mode != "binlog" else None,
            "rows": rows,
            "delivered": len(samples),
            "p50_ms": round(percentile(samples, 50), 1),
            "p99_ms": round(percentile(samples, 99), 1),
            "max_ms": round(max(samples), 1),
        }

    # 3.
    async def overhead(self, rows: int, rounds: int) -> dict[str, Any]:
        """The same INSERTs into `plain` and `orders` (with triggers), alternating in small blocks so
        that the machine's background noise hits both alike; rows/s per table, median of the rounds."""
        await self.reset()
        conn = await self.db()
        block = 100
        values = ", ".join(f"('new', {i})" for i in range(100))
        spent: dict[str, dict[str, list[float]]] = {k: {"plain": [], "orders": []} for k in ("single", "batch100")}
        try:
            async with conn.cursor() as cur:
                for r in range(rounds):
                    took = {k: {"plain": 0.0, "orders": 0.0} for k in spent}
                    for b in range(rows // block):
                        order = ("plain", "orders") if (r + b) % 2 == 0 else ("orders", "plain")
                        for table in order:
                            started = time.perf_counter()
                            for i in range(block):
                                await cur.execute(f"INSERT INTO {table} (status, total) VALUES ('new', %s)", (i,))
                            took["single"][table] += time.perf_counter() - started
                            started = time.perf_counter()
                            for _ in range(5):  # 500 rows in 100-row statements
                                await cur.execute(f"INSERT INTO {table} (status, total) VALUES {values}")
                            took["batch100"][table] += time.perf_counter() - started
                    for kind, tables in took.items():
                        n = rows if kind == "single" else rows * 5
                        for table, seconds in tables.items():
                            spent[kind][table].append(n / seconds)
        finally:
            conn.close()
        result = {}
        for kind, tables in spent.items():
            plain, captured = statistics.median(tables["plain"]), statistics.median(tables["orders"])
            result[kind] = {
                "rows_per_s_without": round(plain),
                "rows_per_s_with": round(captured),
                "slowdown_pct": round((1 - captured / plain) * 100, 1),
            }
        return result


async def main(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    modes = args.modes.split(",")
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for _ in range(args.rounds):  # the modes take turns, so background noise hits both alike
        for mode in modes:
            runs[mode].append(await Bench(settings, mode).throughput(args.changes))
    latency = {m: await Bench(settings, m).latency(args.latency_rows, 0.1, args.rate) for m in modes}
    overhead = await Bench(settings).overhead(args.insert_rows, max(args.rounds, 5)) if args.insert_rows else None
    return {
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "loop": args.loop,
            "load_avg": os.getloadavg(),
        },
        "throughput": {
            m: {"rounds": r, "median_per_s": statistics.median(x["per_s"] for x in r)} for m, r in runs.items()
        },
        "latency": latency,
        "trigger_overhead": overhead,
    }


def cli() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-rows", type=int, default=600)
    parser.add_argument("--insert-rows", type=int, default=3000)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--modes", default="changelog,binlog")
    parser.add_argument("--rate", type=float, default=0.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cdc-") as tmp:
        base = Path(tmp)
        (base / "redis").mkdir()
        (base / "mariadb").mkdir()
        redis_server = RedisServer.from_env_or_start(base / "redis")
        mariadb = MariaDBServer.from_env_or_start(base / "mariadb")
        plugin = base / "plugins" / "sink"
        plugin.mkdir(parents=True)
        (plugin / "plugin.json").write_text(json.dumps(PLUGIN))
        (plugin / "main.py").write_text("def run(**kw):\n    return {}\n")
        settings = Settings(
            redis_url=redis_server.url,
            database_url=mariadb.url,
            plugins_dir=base / "plugins",
            state_dir=base / "state",
        )
        try:
            if args.loop == "uvloop":
                import uvloop

                result = uvloop.run(main(args, settings))
            else:
                result = asyncio.run(main(args, settings))
        finally:
            for server in (mariadb, redis_server):
                if not server.external:
                    server.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    cli()
