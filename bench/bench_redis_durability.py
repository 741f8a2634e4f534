"""What Redis's appendfsync policy costs on the job path, and what a SIGKILL of Redis loses under load.

    .venv/bin/python bench/bench_redis_durability.py [--rounds 3] [--jobs 2000] [--policies everysec,always,off]

Per round and policy (the policies take turns, so background noise hits all alike):

- a private redis-server (Debian's binary) with `--appendonly yes --appendfsync <policy>` (`off`:
  no append-only file, no snapshots: the reference for "no persistence"), and a real
  `orchestrator run` against it (one queue, concurrency 8, a pooled no-op plugin);
- *throughput*: `--jobs` jobs triggered by 16 concurrent producers through the public Client, timed
  from the first trigger until the last one is `succeeded`;
- *loss*: producers trigger jobs with deterministic ids (a failed trigger is tried again under the
  same id) for 1.5 s, Redis gets SIGKILL, is started again on the same files, and the producers go
  on; a job is *acknowledged* when its trigger returned. Counted: acknowledged jobs whose record is
  gone, and jobs not final (or still `running`) 60 s after the restart.

Prints one JSON object; bench/README.md, "Redis durability", quotes a run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import orchestrator_bench
from redis.exceptions import RedisError

from orchestrator.client import Client, connect_redis
from orchestrator.errors import OrchestratorError
from orchestrator.jobs.model import TERMINAL, Keys

PLUGIN = orchestrator_bench.PLUGIN["pooled"]
CONCURRENCY = 8
PRODUCERS = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    def __init__(self, dir: Path, policy: str) -> None:
        self.dir, self.policy, self.port = dir, policy, free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        aof = ["--appendonly", "no"] if self.policy == "off" else ["--appendonly", "yes", "--appendfsync", self.policy]
        self.proc = await asyncio.create_subprocess_exec(
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
            *aof, "--logfile", str(self.dir / "redis.log"),
        )  # fmt: skip
        client = connect_redis(self.url)
        try:
            for _ in range(500):
                with contextlib.suppress(RedisError, OSError):
                    if await client.ping():
                        return
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()
        raise RuntimeError("redis-server did not start")

    async def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


async def start_run(dir: Path, redis_url: str) -> asyncio.subprocess.Process:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ORCH_")},
        "REDIS_URL": redis_url,
        "PLUGINS_DIR": str(dir / "plugins"),
        "ORCH_STATE_DIR": str(dir / "state"),
        "ORCH_QUEUES": json.dumps({"default": {"concurrency": CONCURRENCY}}),
        "ORCH_HTTP_PORT": "0",
        "ORCH_LOG_LEVEL": "WARNING",
        "ORCH_INSTANCE_TTL_S": "2",
    }
    log = (dir / "run.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv/bin/orchestrator"), "run", env=env, stdout=log, stderr=log
    )
    log.close()
    return proc


async def wait_ready(client: Client) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(RedisError, OSError, OrchestratorError):
            job = await client.trigger(PLUGIN, {})
            if (await client.result(job.job_id, timeout_s=30))["state"] == "succeeded":
                return
        await asyncio.sleep(0.2)
    raise RuntimeError("orchestrator run did not run a job in 60 s")


async def throughput(client: Client, jobs: int) -> float:
    base = await client.redis.zcard(Keys.state("succeeded"))
    left = iter(range(jobs))
    t0 = time.perf_counter()

    async def produce() -> None:
        for _ in left:
            await client.trigger(PLUGIN, {})

    await asyncio.gather(*(produce() for _ in range(PRODUCERS)))
    # polling a counter in Redis: the jobs finish in another process
    while await client.redis.zcard(Keys.state("succeeded")) - base < jobs:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    return jobs / (time.perf_counter() - t0)


async def loss(client: Client, redis: Redis, tag: str) -> dict[str, Any]:
    acked: dict[str, float] = {}
    counter = iter(range(10**9))
    stop = asyncio.Event()

    async def produce() -> None:
        while not stop.is_set():
            job_id = f"{tag}-{next(counter)}"
            while not stop.is_set():
                try:
                    await client.trigger(PLUGIN, {}, job_id=job_id)
                    acked[job_id] = time.time()
                    break
                except (RedisError, OSError, OrchestratorError):
                    await asyncio.sleep(0.01)

    producers = [asyncio.create_task(produce()) for _ in range(PRODUCERS)]
    await asyncio.sleep(1.5)
    killed_at = time.time()
    await redis.kill9()
    await redis.start()
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*producers)
    ids = list(acked)
    deadline = time.monotonic() + 60
    while True:
        states = await client.store.states_of(ids)
        running = await client.redis.zcard(Keys.state("running"))
        pending = [s for s in states if s is not None and s not in TERMINAL]
        if (not pending and not running) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    lost = [i for i, s in zip(ids, states, strict=True) if s is None]
    return {
        "acknowledged": len(ids),
        "acknowledged_before_kill": sum(1 for t in acked.values() if t <= killed_at),
        "lost": len(lost),
        "lost_acknowledged_within_s_of_kill": max((killed_at - acked[i] for i in lost), default=None),
        "not_final_after_60s": len(pending) + int(running),
    }


async def one(policy: str, jobs: int, round_no: int) -> dict[str, Any]:
    dir = Path(tempfile.mkdtemp(prefix=f"bench-durability-{policy}-"))
    try:
        orchestrator_bench.make_plugins(dir / "plugins")
        (dir / "redis").mkdir()
        redis = Redis(dir / "redis", policy)
        await redis.start()
        run = await start_run(dir, redis.url)
        client = Client(connect_redis(redis.url), owns_redis=True, queues={"default": CONCURRENCY})
        try:
            await wait_ready(client)
            jps = await throughput(client, jobs)
            lost = await loss(client, redis, f"r{round_no}")
        finally:
            await client.close()
            run.send_signal(signal.SIGTERM)
            await run.wait()
            await redis.stop()
        return {"policy": policy, "round": round_no, "jobs_per_s": round(jps, 1), **lost}
    finally:
        shutil.rmtree(dir, ignore_errors=True)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--policies", default="everysec,always,off")
    args = p.parse_args()
    policies = args.policies.split(",")
    runs = []
    for r in range(args.rounds):
        order = policies[r % len(policies) :] + policies[: r % len(policies)]
        for policy in order:
            result = await one(policy, args.jobs, r)
            print(json.dumps(result), file=sys.stderr, flush=True)
            runs.append(result)
    summary = {}
    for policy in policies:
        mine = [x for x in runs if x["policy"] == policy]
        summary[policy] = {
            "jobs_per_s_median": statistics.median(x["jobs_per_s"] for x in mine),
            "jobs_per_s": [x["jobs_per_s"] for x in mine],
            "lost_per_kill": [x["lost"] for x in mine],
            "acknowledged_per_kill": [x["acknowledged"] for x in mine],
            "not_final_after_60s": [x["not_final_after_60s"] for x in mine],
        }
    print(json.dumps({"machine": {"nproc": os.cpu_count()}, "summary": summary, "runs": runs}, indent=2))


if __name__ == "__main__":
    import uvloop

    uvloop.install()
    asyncio.run(main())
