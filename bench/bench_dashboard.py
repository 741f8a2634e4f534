"""What one dashboard poll and one `orchestrator top` frame cost against a Redis holding many jobs.

    .venv/bin/python bench/bench_dashboard.py [--jobs 10000,200000] [--samples 50]

Starts a private redis-server, writes N finished job records spread over the last two hours (the
record hash and the indexes, as the job scripts leave them: 97% succeeded, 2% failed, 1%
cancelled; 1% of the jobs in a `warehouse` queue), then times the client reads the page and `top`
make. Prints JSON: per size, the median and p95 in ms of each read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.cli.top import read_snapshot
from orchestrator.client import Client
from orchestrator.jobs.model import JobRecord, Keys


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _fill(client: Client, n: int) -> None:
    now = time.time()
    rng = random.Random(13)
    await client.redis.hset(Keys.queues, mapping={"default": "8", "warehouse": "1"})  # type: ignore[misc]
    batch = 5000
    for start in range(0, n, batch):
        async with client.redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + batch, n)):
                job_id = f"bench{i:08d}"
                enqueued = now - 7200 + 7200 * i / n
                finished = enqueued + rng.uniform(0.01, 2)
                roll = rng.random()
                state = "succeeded" if roll < 0.97 else "failed" if roll < 0.99 else "cancelled"
                queue = "warehouse" if i % 100 == 0 else "default"
                record = JobRecord(
                    job_id=job_id, plugin="probe", params={"i": i}, queue=queue, source="bench", state=state,
                    attempt=1, enqueued_at=enqueued, started_at=enqueued, finished_at=finished,
                    duration_s=finished - enqueued, result={"ok": True},
                )  # fmt: skip
                pipe.hset(Keys.job(job_id), mapping=record.to_hash())
                pipe.zadd(Keys.all_jobs, {job_id: enqueued})
                pipe.zadd(Keys.plugin_jobs("probe"), {job_id: enqueued})
                pipe.zadd(Keys.state(state), {job_id: finished})
            await pipe.execute()


async def _time(read: Callable[[], Awaitable[Any]], samples: int) -> dict[str, float]:
    for _ in range(3):
        await read()
    took = []
    for _ in range(samples):
        t0 = time.perf_counter()
        await read()
        took.append((time.perf_counter() - t0) * 1000)
    took.sort()
    return {"p50_ms": round(statistics.median(took), 2), "p95_ms": round(took[int(0.95 * (len(took) - 1))], 2)}


async def _measure(url: str, n: int, samples: int) -> dict[str, Any]:
    async with await Client.connect(url) as client:
        await client.redis.flushall()
        await _fill(client, n)
        reads: dict[str, Callable[[], Awaitable[Any]]] = {
            "stats (also /status)": client.stats,
            "throughput 60 x 1 min": lambda: client.throughput(window_s=3600, bucket_s=60),
            "finished 8": lambda: client.finished(limit=8),
            "jobs page 1 (26 rows)": lambda: client.jobs_page(limit=26),
            "jobs page offset 10,000": lambda: client.jobs_page(limit=26, offset=10_000),
            "jobs page state=failed": lambda: client.jobs_page(state="failed", limit=26),
            "jobs page queue=warehouse (1%)": lambda: client.jobs_page(queue="warehouse", limit=26),
            "top frame (read_snapshot)": lambda: read_snapshot(client),
        }
        return {name: await _time(read, samples) for name, read in reads.items()}


async def _run(url: str, sizes: list[int], samples: int) -> dict[str, Any]:
    out: dict[str, Any] = {"nproc": os.cpu_count(), "samples": samples, "results": {}}
    for n in sizes:
        out["results"][str(n)] = await _measure(url, n, samples)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", default="10000,200000")
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    workdir = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    port = _free_port()
    server = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        sizes = [int(x) for x in args.jobs.split(",")]
        print(json.dumps(asyncio.run(_run(f"redis://127.0.0.1:{port}/0", sizes, args.samples)), indent=2))
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
