"""Plain arq peer: the worker settings and the load generator.

Worker (started by the harness, as a user would):
    BENCH_ARQ_POLL_DELAY=0.5  arq arq_bench.WorkerSettings   # arq's defaults: poll 0.5 s, max_jobs 10
    BENCH_ARQ_POLL_DELAY=0.01 arq arq_bench.WorkerSettings   # tuned
Load generator (a separate process):
    python arq_bench.py {ready,throughput,latency} --variant {default,tuned} --redis-port P ...

Round trip: `enqueue_job(...)` then `job.result(poll_delay=...)`: arq polls for the result (0.5 s by
default; the tuned variant polls every 10 ms, like its worker).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from arq import create_pool
from arq.connections import RedisSettings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/, for benchlib
URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
POLL = {"default": 0.5, "tuned": 0.01}


async def noop(ctx: dict[str, Any]) -> None:
    return None


def _settings(url: str) -> RedisSettings:
    parts = urlsplit(url)
    return RedisSettings(host=parts.hostname or "127.0.0.1", port=parts.port or 6379)


class WorkerSettings:
    functions: ClassVar[list[Any]] = [noop]
    redis_settings = _settings(URL)
    poll_delay = float(os.environ.get("BENCH_ARQ_POLL_DELAY", "0.5"))
    max_jobs = int(os.environ.get("BENCH_ARQ_MAX_JOBS", "10"))


async def amain() -> None:
    import benchlib

    args = benchlib.loadgen_args(list(POLL))
    poll = POLL[args.variant]
    redis = await create_pool(RedisSettings(host=args.redis_host, port=args.redis_port))
    try:
        job = await redis.enqueue_job("noop")
        assert job is not None
        await job.result(timeout=30 if args.mode == "ready" else 10, poll_delay=poll)
        if args.mode == "ready":
            benchlib.emit({"ready": {"state": "complete"}})
            return
        if args.mode == "throughput":
            progress = benchlib.KeyProgress()

            async def enqueue() -> None:
                j = await redis.enqueue_job("noop")
                assert j is not None
                progress.keys.append("arq:result:" + j.job_id)

            async def done() -> int:
                return await progress.done_async(redis.exists)

            out = await benchlib.throughput_async(args, enqueue, done)
        else:

            async def roundtrip() -> None:
                j = await redis.enqueue_job("noop")
                assert j is not None
                await j.result(timeout=30, poll_delay=poll)

            out = await benchlib.latency_async(args, roundtrip)
        out["variant"] = args.variant
        benchlib.emit(out)
    finally:
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(amain())
