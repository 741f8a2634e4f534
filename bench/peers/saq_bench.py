"""SAQ peer: the worker settings and the load generator.

Worker (started by the harness, as a user would):
    saq saq_bench.settings          # concurrency 10 (SAQ's default), listen/notify dequeue
Load generator (a separate process):
    python saq_bench.py {ready,throughput,latency} --variant {pubsub,apply} --redis-port P ...

Round trip variants: `pubsub` = enqueue + `job.refresh(until_complete=...)` (waits on SAQ's
pub/sub notifications); `apply` = `queue.apply(...)` (polls the job every 0.5 s, SAQ's default).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from saq import Queue
from saq.job import TERMINAL_STATUSES

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/, for benchlib
URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CONCURRENCY = int(os.environ.get("BENCH_SAQ_CONCURRENCY", "10"))


async def noop(ctx: dict[str, Any]) -> None:
    return None


settings = {
    "queue": Queue.from_url(URL),
    "functions": [noop],
    "concurrency": CONCURRENCY,
}


async def wait_done(job: Any, timeout_s: float) -> int:
    """Wait for a job through SAQ's pub/sub (`refresh(until_complete=...)`); returns the notifications missed.

    refresh() reads the job, then subscribes: a job finishing in between is never notified and the wait
    runs to its timeout. So wait 1 s at a time (the job is read again each time) and count those misses.
    """
    missed = 0
    for _ in range(max(1, int(timeout_s))):
        try:
            await job.refresh(until_complete=1.0)
        except TimeoutError:
            missed += 1
        if job.status in TERMINAL_STATUSES:
            return missed
    raise TimeoutError(f"job not complete after {timeout_s} s")


async def amain() -> None:
    import benchlib

    args = benchlib.loadgen_args(["pubsub", "apply"])
    queue = Queue.from_url(f"redis://{args.redis_host}:{args.redis_port}/0")
    await queue.connect()
    try:
        job = await queue.enqueue("noop")
        assert job is not None
        await wait_done(job, 30 if args.mode == "ready" else 10)
        if args.mode == "ready":
            benchlib.emit({"ready": {"state": job.status.name}})
            return
        if args.mode == "throughput":
            n = args.n

            async def enqueue() -> None:
                await queue.enqueue("noop")

            async def done() -> int:
                return n - await queue.count("incomplete")

            out = await benchlib.throughput_async(args, enqueue, done)
            out["variant"] = "enqueue"
        else:
            if args.variant == "apply":

                async def roundtrip() -> None:
                    await queue.apply("noop", timeout=30)
            else:
                missed = 0

                async def roundtrip() -> None:
                    nonlocal missed
                    j = await queue.enqueue("noop")
                    assert j is not None
                    missed += await wait_done(j, 30)

            out = await benchlib.latency_async(args, roundtrip)
            out["variant"] = args.variant
            if args.variant == "pubsub":
                out["missed_notifications"] = missed
        benchlib.emit(out)
    finally:
        await queue.disconnect()


if __name__ == "__main__":
    asyncio.run(amain())
