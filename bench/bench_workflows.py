"""A chord: a group of no-op jobs and a join, from the first enqueue to the join's end, against
Celery's chord on its Redis result backend; and Redis memory before, after and once it expired.

    .venv/bin/python bench/bench_workflows.py [--n 10000] [--rounds 2] [--concurrency 4]

Each round, against one private redis-server (flushed between runs), takes turns:
- orchestrator: a real `orchestrator run` (queue `default`, `--concurrency`, a `pooled` no-op
  plugin); the load generator calls `Client.workflow(chain(group(n x noop), join))` and
  `Client.wait` on it. The clock starts before the workflow is validated and created.
- celery-prefork: `celery worker --pool prefork --concurrency 2` (one per core), and
  `chord(noop.s() x n)(join.s()).get()` (celery_bench.py chord).
- celery-threads: `--pool threads --concurrency 10`.
Redis `used_memory` is read before the run, after the join ended and, for the orchestrator (result
TTL `--ttl` seconds), once every key of the workflow has expired. Medians are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from procs import PEERS, PROJECT_PY, ROOT, Procs, base_env, free_port, machine_facts, wait_http

NOOP = "def run(**kwargs):\n    return 1\n"
JOIN = "def run(previous=None, **kwargs):\n    return len(previous)\n"


def write_plugins(plugins: Path) -> None:
    for name, code in (("noop", NOOP), ("join", JOIN)):
        folder = plugins / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "main.py").write_text(code)
        manifest = {"name": name, "version": "1.0.0", "description": "bench", "author": "bench",
                    "entry_point": "main.run", "isolation": "pooled", "max_retries": 0}  # fmt: skip
        (folder / "plugin.json").write_text(json.dumps(manifest))


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


async def orchestrator_chord(url: str, n: int) -> tuple[float, str]:
    sys.path.insert(0, str(ROOT))
    from orchestrator.client import Client
    from orchestrator.workflows.model import chain, group, job

    async with await Client.connect(url) as client:
        members = group(*(job("noop") for _ in range(n)))
        started = time.perf_counter()
        workflow_id = await client.workflow(chain(members, job("join")))
        done = await client.wait(workflow_id, timeout_s=600)
        took = time.perf_counter() - started
    if done["state"] != "succeeded" or done["result"] != n:
        sys.exit(f"orchestrator chord ended {done['state']} with {done['result']!r}")
    return took, workflow_id


def run_orchestrator(procs: Procs, work: Path, url: str, args: argparse.Namespace, r: int) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    client.flushall()
    port = free_port()
    env = {
        **base_env(), "REDIS_URL": url, "PLUGINS_DIR": str(work / "plugins"), "ORCH_STATE_DIR": str(work / "state"),
        "ORCH_HTTP_PORT": str(port), "ORCH_LOG_FORMAT": "json", "ORCH_LOG_JOBS": "false",
        "ORCH_QUEUES": json.dumps({"default": {"concurrency": args.concurrency}}), "ORCH_RESULT_TTL_S": str(args.ttl),
    }  # fmt: skip
    proc = procs.start([str(PROJECT_PY), "-m", "orchestrator", "run"], env=env, cwd=work, log=work / f"orch-{r}.log")
    if wait_http(f"http://127.0.0.1:{port}/live", 60) is None:
        sys.exit(f"orchestrator did not start: see {work / f'orch-{r}.log'}")
    asyncio.run(orchestrator_chord(url, 8))  # warm: the pooled children are up
    time.sleep(1)
    before = used_memory(client)
    took, workflow_id = asyncio.run(orchestrator_chord(url, args.n))
    after = used_memory(client)
    # the workflow's keys expire `ttl` after its end: wait until none is left
    deadline = time.monotonic() + args.ttl + 120
    while time.monotonic() < deadline and (client.exists(f"orch:wf:{workflow_id}") or client.keys("orch:job:*")):
        time.sleep(0.5)
    expired = used_memory(client)
    procs.stop(proc)
    return {"seconds": took, "memory_before": before, "memory_after": after, "memory_expired": expired}


def run_celery(
    procs: Procs, work: Path, port: int, pool: str, concurrency: int, n: int, r: int, timeout_s: float
) -> dict[str, Any]:
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    client.flushall()
    celery = PEERS / "celery" / "bin"
    if not celery.exists():  # a worktree without its own peers: the main checkout's, read only
        celery = Path("/work/main/bench/.peers/celery/bin")
    env = {**base_env(), "BENCH_REDIS_URL": url, "PYTHONPATH": f"{ROOT / 'bench' / 'peers'}:{ROOT / 'bench'}"}
    cmd = [str(celery / "celery"), "-A", "celery_bench", "worker", "--loglevel", "WARNING", "--pool", pool,
           "--concurrency", str(concurrency)]  # fmt: skip
    worker = procs.start(cmd, env=env, cwd=ROOT / "bench" / "peers", log=work / f"celery-{pool}-{r}.log")
    before = used_memory(client)
    loadgen = [str(celery / "python"), str(ROOT / "bench" / "peers" / "celery_bench.py"), "chord",
               "--redis-port", str(port), "--n", str(n), "--timeout-s", str(timeout_s)]  # fmt: skip
    out = subprocess.run(loadgen, env=env, capture_output=True, text=True, timeout=timeout_s + 300, check=False)
    (work / f"celery-{pool}-{r}.loadgen.log").write_text(out.stdout + out.stderr)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH-RESULT ")), None)
    if line is None:
        sys.exit(f"celery chord failed: see {work / f'celery-{pool}-{r}.loadgen.log'}")
    result = json.loads(line.removeprefix("BENCH-RESULT "))
    after = used_memory(client)
    metas = sum(1 for _ in client.scan_iter("celery-task-meta-*", count=1000))
    procs.stop(worker)
    if result["joined"] is not None and result["joined"] != n:
        sys.exit(f"celery's join saw {result['joined']} results, not {n}")
    return {"seconds": result["seconds"], "sent_s": result["sent_s"], "error": result.get("error"),
            "task_results_stored": metas, "memory_before": before, "memory_after": after}  # fmt: skip


def _made(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--ttl", type=float, default=10.0)
    parser.add_argument("--celery-timeout", type=float, default=420.0, help="seconds a chord may take to join")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / ".work" / "workflows", help="logs go here")
    args = parser.parse_args()
    procs = Procs()
    rows: dict[str, list[dict[str, Any]]] = {"orchestrator": [], "celery-prefork": [], "celery-threads": []}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-wf-", dir=_made(args.work)) as tmp:
            work = Path(tmp)
            write_plugins(work / "plugins")
            port = free_port()
            procs.start(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(work)],
                env=base_env(), cwd=work, log=work / "redis.log",
            )  # fmt: skip
            url = f"redis://127.0.0.1:{port}/0"
            for _ in range(100):
                try:
                    redis.Redis.from_url(url).ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            for r in range(args.rounds):
                for name, runs in rows.items():
                    if name == "orchestrator":
                        row = run_orchestrator(procs, work, url, args, r)
                    else:
                        pool, concurrency = ("prefork", 2) if name == "celery-prefork" else ("threads", 10)
                        row = run_celery(procs, work, port, pool, concurrency, args.n, r, args.celery_timeout)
                    runs.append(row)
                    print(f"round {r + 1} {name}: {json.dumps(row)}", flush=True)
    finally:
        procs.stop_all()
    summary: dict[str, dict[str, Any]] = {}
    for name, runs in rows.items():
        joined = [run["seconds"] for run in runs if run["seconds"] is not None]
        summary[name] = {"seconds_median": statistics.median(joined) if joined else None, "joined": len(joined),
                         "runs": len(runs), "memory_after_median": statistics.median(run["memory_after"] for run in runs)}  # fmt: skip
    base = summary["orchestrator"]["seconds_median"]
    for s in summary.values():
        s["ratio_to_orchestrator"] = round(s["seconds_median"] / base, 2) if s["seconds_median"] and base else None
    print(json.dumps({"n": args.n, "rounds": args.rounds, "machine": machine_facts(), "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
