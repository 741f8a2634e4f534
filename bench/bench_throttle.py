"""Throttles: what the bookkeeping costs when a limit never binds, and how exact a rate is across instances.

    .venv/bin/python bench/bench_throttle.py cost [--n 3000] [--reps 3]
    .venv/bin/python bench/bench_throttle.py rate [--window-s 5] [--reps 2]

`cost`: one `orchestrator run` (queue "default" at concurrency 10, the pooled no-op bench plugin),
n jobs from bench/orchestrator_bench.py's throughput load generator, jobs/s and Redis CPU per job
(INFO used_cpu_sys + used_cpu_user around the timed section); "none" (no throttle) and
"limit" (`concurrency = 1000`, `max_queued = 1000000`: every claim, finish and enqueue does the
throttle's work, nothing is ever held) take turns, fresh processes each time, median reported.

`rate`: three instances, the pooled no-op plugin at `rate = "20/s"`, enough jobs queued for the
window and more; the starts (the records' `started_at`, written by the claim script) in
[first start, first start + window) are counted against 20/s x window.

Starts its own redis-server (private loopback port, no persistence). Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scaleout import redis_call, redis_cpu_s, start_redis
from procs import BENCH, PROJECT_PY, ROOT, Procs, base_env, free_port, wait_http
from systems import ORCH_CONCURRENCY

PLUGIN = "bench_noop_pooled"
LIMITS = {
    "none": "",
    "limit": f"[plugins.{PLUGIN}.throttle]\nconcurrency = 1000\nmax_queued = 1000000\n",
    "rate": f'[plugins.{PLUGIN}.throttle]\nrate = "20/s"\n',
}


def start_instances(procs: Procs, work: Path, redis_port: int, count: int, limits: str) -> list[Any]:
    config = work / f"orchestrator-{limits}.toml"
    config.write_text(LIMITS[limits])
    workers = []
    for i in range(count):
        http = free_port()
        env = base_env()
        env.update(
            REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
            PLUGINS_DIR=str(work / "plugins"),
            ORCH_STATE_DIR=str(work / f"state-{i}"),
            PLUGIN_VENV_DIR=str(work / "venvs"),
            ORCH_HTTP_PORT=str(http),
            ORCH_QUEUES=json.dumps({"default": {"concurrency": ORCH_CONCURRENCY}}),
            ORCH_CONFIG=str(config),
            ORCH_INSTANCE_ID=f"bench-{i}",
            ORCH_SHUTDOWN_GRACE_S="5",
            ORCH_LOG_LEVEL="WARNING",
        )
        cmd = [str(ROOT / ".venv/bin/orchestrator"), "run"]
        workers.append(procs.start(cmd, env=env, cwd=work, log=work / f"run-{limits}-{i}.log"))
        if wait_http(f"http://127.0.0.1:{http}/health", 30) is None:
            raise SystemExit(f"instance {i} did not become healthy (see {work}/run-{limits}-{i}.log)")
    return workers


def loadgen(redis_port: int, mode: str, n: int) -> dict[str, Any]:
    env = base_env()
    env["PYTHONPATH"] = str(BENCH)
    cmd = [str(PROJECT_PY), str(BENCH / "orchestrator_bench.py"), mode, "--variant", "pooled"]
    out = subprocess.run(
        [*cmd, "--redis-port", str(redis_port), "--n", str(n), "--deadline-s", "120"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    line = next(x for x in reversed(out.splitlines()) if x.startswith("BENCH-RESULT "))
    return json.loads(line[len("BENCH-RESULT ") :])  # type: ignore[no-any-return]


def cost(procs: Procs, work: Path, redis_port: int, n: int, reps: int) -> dict[str, Any]:
    runs: dict[str, list[float]] = {"none": [], "limit": []}
    redis_ms: dict[str, list[float]] = {"none": [], "limit": []}  # Redis CPU per job: where the bookkeeping runs
    for rep in range(reps):
        for limits in ("none", "limit") if rep % 2 == 0 else ("limit", "none"):
            redis_call(redis_port, "FLUSHALL")
            workers = start_instances(procs, work, redis_port, 1, limits)
            try:
                loadgen(redis_port, "ready", 1)
                cpu0 = redis_cpu_s(redis_port)
                runs[limits].append(loadgen(redis_port, "throughput", n)["jobs_per_s"])
                redis_ms[limits].append(round((redis_cpu_s(redis_port) - cpu0) / n * 1000, 4))
            finally:
                for proc in workers:
                    procs.stop(proc, grace_s=10)
            print(
                f"rep {rep + 1} {limits}: {runs[limits][-1]} jobs/s, {redis_ms[limits][-1]} Redis ms/job",
                file=sys.stderr,
            )
    none, limit = statistics.median(runs["none"]), statistics.median(runs["limit"])
    return {
        "n": n, "jobs_per_s": runs, "median_none": none, "median_limit": limit, "ratio": round(limit / none, 3),
        "redis_cpu_ms_per_job": redis_ms,
        "redis_ms_median": {k: statistics.median(v) for k, v in redis_ms.items()},
    }  # fmt: skip


async def _count_starts(redis_port: int, jobs: int, window_s: float) -> dict[str, Any]:
    from orchestrator.client import Client

    client = await Client.connect(f"redis://127.0.0.1:{redis_port}/0")
    try:
        ids = [(await client.trigger(PLUGIN, {})).job_id for _ in range(jobs)]
        while True:
            states = await client.store.states_of(ids)
            if all(s in {"succeeded", "failed"} for s in states):
                break
            await asyncio.sleep(0.2)
        records = await client.store.get_many(ids)
        starts = sorted(r.started_at for r in records if r is not None and r.started_at is not None)
        by_instance: dict[str, int] = {}
        for r in records:
            if r is not None and r.instance:
                by_instance[r.instance] = by_instance.get(r.instance, 0) + 1
        counted = sum(1 for t in starts if t < starts[0] + window_s)
        return {"starts_in_window": counted, "expected": round(20 * window_s), "by_instance": by_instance}
    finally:
        await client.close()


def rate(procs: Procs, work: Path, redis_port: int, window_s: float, reps: int) -> dict[str, Any]:
    out = []
    for rep in range(reps):
        redis_call(redis_port, "FLUSHALL")
        workers = start_instances(procs, work, redis_port, 3, "rate")
        try:
            out.append(asyncio.run(_count_starts(redis_port, int(20 * window_s * 1.3), window_s)))
        finally:
            for proc in workers:
                procs.stop(proc, grace_s=10)
        print(f"rep {rep + 1}: {out[-1]}", file=sys.stderr)
    return {"window_s": window_s, "instances": 3, "runs": out}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["cost", "rate"])
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--window-s", type=float, default=5.0)
    a = p.parse_args()
    procs = Procs()
    try:
        with tempfile.TemporaryDirectory(prefix="throttle-") as tmp:
            work = Path(tmp)
            subprocess.run(
                [str(PROJECT_PY), str(BENCH / "orchestrator_bench.py"), "make-plugins", str(work / "plugins")],
                check=True,
            )
            redis_port = start_redis(procs, work)
            if a.what == "cost":
                result = cost(procs, work, redis_port, a.n, a.reps)
            else:
                result = rate(procs, work, redis_port, a.window_s, a.reps)
    finally:
        procs.stop_all()
    print(json.dumps({**result, "nproc": os.cpu_count()}, indent=1))


if __name__ == "__main__":
    main()
