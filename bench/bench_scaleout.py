"""Scale-out: jobs/s with 1, 2 and 4 `orchestrator run` processes on one Redis, each at concurrency 10.

    .venv/bin/python bench/bench_scaleout.py [--instances 1,2,4] [--n 6000] [--reps 3]

Starts its own redis-server (private loopback port, no persistence) and N `orchestrator run`
processes (pooled bench plugin, queue "default" at concurrency 10, one HTTP port each), then
runs bench/orchestrator_bench.py's throughput load generator (n jobs enqueued by 50 callers,
timed from the first enqueue to the poll that sees the last one done). Redis CPU per job comes
from INFO (used_cpu_sys + used_cpu_user) around the timed section, worker CPU from /proc (every
instance with its plugin children). The counts rotate (1, 2, 4, then 2, 4, 1, ...) so machine
noise hits every count alike; the median repetition is reported. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
from procs import BENCH, PROJECT_PY, ROOT, Procs, base_env, free_port, wait_http
from systems import ORCH_CONCURRENCY


def redis_cpu_s(port: int) -> float:
    r = benchlib.Resp("127.0.0.1", port)
    try:
        info = benchlib.parse_info(r.call("INFO", "cpu"))
    finally:
        r.close()
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def redis_call(port: int, *args: str) -> Any:
    r = benchlib.Resp("127.0.0.1", port)
    try:
        return r.call(*args)
    finally:
        r.close()


def start_redis(procs: Procs, work: Path) -> int:
    port = free_port()
    (work / "redis").mkdir()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(work / "redis")]
    procs.start([*cmd, "--save", "", "--appendonly", "no"], env=base_env(), cwd=work, log=work / "redis.log")
    for _ in range(500):
        try:
            if redis_call(port, "PING") == "PONG":
                return port
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit("redis-server did not start")


def one(procs: Procs, work: Path, redis_port: int, instances: int, n: int) -> dict[str, Any]:
    redis_call(redis_port, "FLUSHALL")
    workers = []
    for i in range(instances):
        http = free_port()
        env = base_env()
        env.update(
            REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
            PLUGINS_DIR=str(work / "plugins"),
            ORCH_STATE_DIR=str(work / f"state-{i}"),
            PLUGIN_VENV_DIR=str(work / "venvs"),
            ORCH_HTTP_PORT=str(http),
            ORCH_QUEUES=json.dumps({"default": {"concurrency": ORCH_CONCURRENCY}}),
            ORCH_SHUTDOWN_GRACE_S="5",
            ORCH_LOG_LEVEL="WARNING",
        )
        proc = procs.start([str(ROOT / ".venv/bin/orchestrator"), "run"], env=env, cwd=work, log=work / f"run-{i}.log")
        workers.append(proc)
        if wait_http(f"http://127.0.0.1:{http}/health", 30) is None:
            raise SystemExit(f"instance {i} did not become healthy (see {work}/run-{i}.log)")
    try:
        loadgen = [str(PROJECT_PY), str(BENCH / "orchestrator_bench.py")]
        env = base_env()
        env["PYTHONPATH"] = str(BENCH)
        common = ["--variant", "pooled", "--redis-port", str(redis_port)]
        subprocess.run([*loadgen, "ready", *common, "--n", "1"], env=env, check=True, capture_output=True)
        wcpu0 = sum(benchlib.tree_cpu_s(p.pid) for p in workers)
        rcpu0 = redis_cpu_s(redis_port)
        out = subprocess.run(
            [*loadgen, "throughput", *common, "--n", str(n), "--deadline-s", "120"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        rcpu = redis_cpu_s(redis_port) - rcpu0
        wcpu = sum(benchlib.tree_cpu_s(p.pid) for p in workers) - wcpu0
        line = next(x for x in reversed(out.splitlines()) if x.startswith("BENCH-RESULT "))
        res = json.loads(line[len("BENCH-RESULT ") :])
        done = max(1, int(res.get("done", n)))
        return {
            "instances": instances,
            "jobs_per_s": res["jobs_per_s"],
            "done": res.get("done"),
            "redis_cpu_ms_per_job": round(rcpu / done * 1000, 4),
            "redis_cpu_share": round(rcpu / res["elapsed_s"], 3),  # of one core
            "workers_cpu_ms_per_job": round(wcpu / done * 1000, 4),
        }
    finally:
        for proc in workers:
            procs.stop(proc, grace_s=10)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--instances", default="1,2,4")
    p.add_argument("--n", type=int, default=6000)
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    counts = [int(x) for x in a.instances.split(",")]
    procs = Procs()
    runs: dict[int, list[dict[str, Any]]] = {c: [] for c in counts}
    try:
        with tempfile.TemporaryDirectory(prefix="scaleout-") as tmp:
            work = Path(tmp)
            subprocess.run(
                [str(PROJECT_PY), str(BENCH / "orchestrator_bench.py"), "make-plugins", str(work / "plugins")],
                check=True,
            )
            redis_port = start_redis(procs, work)
            for rep in range(a.reps):
                shift = rep % len(counts)
                for c in counts[shift:] + counts[:shift]:
                    runs[c].append(one(procs, work, redis_port, c, a.n))
                    print(f"rep {rep + 1}: {runs[c][-1]}", file=sys.stderr)
    finally:
        procs.stop_all()
    table = {}
    for c, rs in runs.items():
        mid = sorted(rs, key=lambda r: r["jobs_per_s"])[len(rs) // 2]
        table[c] = {
            "jobs_per_s_median": mid["jobs_per_s"],
            "jobs_per_s_all": [r["jobs_per_s"] for r in rs],
            "redis_cpu_ms_per_job": statistics.median(r["redis_cpu_ms_per_job"] for r in rs),
            "redis_cpu_share": statistics.median(r["redis_cpu_share"] for r in rs),
            "workers_cpu_ms_per_job": statistics.median(r["workers_cpu_ms_per_job"] for r in rs),
        }
    print(
        json.dumps(
            {"n": a.n, "reps": a.reps, "concurrency_each": ORCH_CONCURRENCY, "nproc": os.cpu_count(), "runs": table},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
