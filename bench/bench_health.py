"""What a container health check costs: CPU and wall time of one check, ours against Celery's.

    .venv/bin/python bench/bench_health.py [--reps 15] [--src DIR] [--output results/health-<date>.json]

The image's `HEALTHCHECK` runs `orchestrator health` every 15 s; a Celery worker's container is
usually checked with `celery -A app inspect ping -d <worker>`. Both are a fresh interpreter that
imports its CLI, asks the running process over the network and exits, so most of the cost is the
imports. This script starts a private redis-server, `orchestrator run` and a Celery solo worker
(bench/.peers/celery, as `bench/run` makes it), then runs each check `--reps` times, alternating,
and reads each check's CPU (user + sys) from its rusage.

`--src DIR` runs the orchestrator's check from another checkout (its PYTHONPATH), with this venv:
the before/after of a change to what the CLI imports.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from procs import BENCH, PEERS, ROOT, Procs, base_env, free_port, wait_http

CELERY = PEERS / "celery" / "bin" / "celery"


def timed(cmd: list[str], *, env: dict[str, str], cwd: Path) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, exit code) of one run of `cmd`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, timeout=60, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, proc.returncode


def wait_ok(cmd: list[str], *, env: dict[str, str], cwd: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, timeout=60, check=False).returncode == 0:
            return
        time.sleep(0.2)
    msg = f"not ready after {timeout_s:.0f} s: {' '.join(cmd)}"
    raise SystemExit(msg)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--src", type=Path, default=ROOT, help="the checkout whose `orchestrator health` is measured")
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args()
    if not CELERY.exists():
        raise SystemExit(f"no Celery peer at {CELERY}: `bench/run` installs the peers")
    procs = Procs()
    with tempfile.TemporaryDirectory(prefix="orch-bench-health-") as tmp:
        work = Path(tmp)
        try:
            result = measure(procs, work, args.src.resolve(), args.reps)
        finally:
            procs.stop_all()
    output = args.output or BENCH / "results" / f"health-{datetime.date.today().isoformat()}.json"
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {output}")


def measure(procs: Procs, work: Path, src: Path, reps: int) -> dict[str, Any]:
    redis_port, http_port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    redis_cmd = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--dir", str(work)]
    procs.start(redis_cmd, env=base_env(), cwd=work, log=work / "redis.log")
    (work / "plugins").mkdir()
    orch_env = {
        **base_env(),
        "REDIS_URL": redis_url,
        "PLUGINS_DIR": str(work / "plugins"),
        "ORCH_STATE_DIR": str(work / "state"),
        "ORCH_HTTP_PORT": str(http_port),
    }
    procs.start([str(ROOT / ".venv/bin/orchestrator"), "run"], env=orch_env, cwd=work, log=work / "orch.log")
    if wait_http(f"http://127.0.0.1:{http_port}/health", 60) is None:
        raise SystemExit(f"orchestrator run did not answer /health: see {work / 'orch.log'}")
    celery_env = {**base_env(), "BENCH_REDIS_URL": redis_url, "PYTHONPATH": f"{BENCH / 'peers'}:{BENCH}"}
    worker = f"bench@{socket.gethostname()}"
    celery_worker = [str(CELERY), "-A", "celery_bench", "worker", "--pool", "solo", "-n", worker, "--loglevel", "ERROR"]
    procs.start(celery_worker, env=celery_env, cwd=BENCH / "peers", log=work / "celery.log")

    checks: dict[str, tuple[list[str], dict[str, str], Path]] = {
        "orchestrator health": (
            [str(ROOT / ".venv/bin/python"), "-m", "orchestrator", "health"],
            {**orch_env, "PYTHONPATH": str(src)},
            work,
        ),
        "celery inspect ping": (
            [str(CELERY), "-A", "celery_bench", "inspect", "ping", "-d", worker],
            celery_env,
            BENCH / "peers",
        ),
    }
    cmd, env, cwd = checks["celery inspect ping"]
    wait_ok(cmd, env=env, cwd=cwd, timeout_s=60)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in checks}
    for _ in range(reps):
        for name, (cmd, env, cwd) in checks.items():  # alternating: both meet the same machine noise
            cpu, wall, rc = timed(cmd, env=env, cwd=cwd)
            if rc != 0:
                raise SystemExit(f"{name} exited {rc}")
            samples[name].append((cpu, wall))
    rows = {
        name: {
            "cpu_s_median": round(statistics.median(c for c, _ in runs), 3),
            "wall_s_median": round(statistics.median(w for _, w in runs), 3),
            "cpu_s": [round(c, 3) for c, _ in runs],
        }
        for name, runs in samples.items()
    }
    ours, celery = rows["orchestrator health"], rows["celery inspect ping"]
    print(f"\nmedians of {reps}, each check a fresh process against a live one\n")
    print("| check | CPU per check, s | wall per check, s | CPU per day at one check per 15 s |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        per_day_min = row["cpu_s_median"] * 86400 / 15 / 60
        print(f"| `{name}` | {row['cpu_s_median']} | {row['wall_s_median']} | {per_day_min:.0f} min |")
    print(f"\nCPU ratio, ours / Celery's: {ours['cpu_s_median'] / celery['cpu_s_median']:.2f}")
    commit = subprocess.run(
        ["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return {
        "python": sys.version.split()[0],
        "nproc": os.cpu_count(),
        "src": str(src),
        "commit": commit.stdout.strip(),
        "reps": reps,
        "checks": rows,
    }


if __name__ == "__main__":
    main()
