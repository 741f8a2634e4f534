"""The container against the same process outside it: image size, cold start to /health 200, idle memory.

    scripts/container-image localhost/orch-bench-base:1 localhost/orch-bench:1   # once, ~2 min
    .venv/bin/python bench/bench_container.py --image localhost/orch-bench:1 [--rounds 5] [--idle-s 10]

Each round starts both, one after the other (the order alternates, so background load hits both
alike), each on fresh state (a new podman volume / a new temp dir) with the embedded Redis and the
example plugins:

- **container**: `podman run -d` of the image (read-only root, tmpfs /tmp, the /data volume, host
  network, the flags tests/container/podman.py uses); cold start = from just before `podman run`
  to the first 200 from `/health`, so it includes podman's own container set-up.
- **outside**: `orchestrator run` from this checkout's .venv, same settings.

Idle memory after `--idle-s` seconds of nothing to do: RSS and PSS, summed over the orchestrator's
processes and, apart, the embedded redis-server (the container's processes are found by its
cgroup; outside, the run process and the pid in the embedded Redis's pid file).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import pss_kb, rss_kb
from procs import free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent
PODMAN = ["podman", "--runtime", "runc"]
LIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]


def podman(*args: str) -> str:
    return subprocess.run([*PODMAN, *args], capture_output=True, text=True, check=True).stdout.strip()


def memory(pids: list[int]) -> dict[str, float]:
    """MB of RSS and PSS of the orchestrator's processes and, apart, of redis-server."""
    out = {"orchestrator_rss_mb": 0.0, "orchestrator_pss_mb": 0.0, "redis_rss_mb": 0.0, "redis_pss_mb": 0.0}
    for pid in pids:
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        who = "redis" if comm.startswith("redis-server") else "orchestrator"
        out[f"{who}_rss_mb"] += rss_kb(pid) / 1024
        out[f"{who}_pss_mb"] += pss_kb(pid) / 1024
    return {key: round(value, 1) for key, value in out.items()}


def container_pids(container_id: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if container_id in (entry / "cgroup").read_text():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def run_container(image: str, idle_s: float) -> dict[str, Any]:
    port = free_port()
    volume = podman("volume", "create", f"orch-bench-{port}")
    name = f"orch-bench-{port}"
    try:
        start = time.perf_counter()
        podman("run", "-d", "--name", name, "--network", "host", *LIMITS, "--read-only", "--tmpfs", "/tmp",
               "-v", f"{volume}:/data", "-e", f"ORCH_HTTP_PORT={port}", image)  # fmt: skip
        ready = wait_http(f"http://127.0.0.1:{port}/health", 120)
        cold = None if ready is None else time.perf_counter() - start
        time.sleep(idle_s)  # a benchmark's idle period, not a wait for state
        full_id = podman("inspect", "--format", "{{.Id}}", name)
        return {"cold_start_s": cold, **memory(container_pids(full_id))}
    finally:
        subprocess.run([*PODMAN, "rm", "--force", "--volumes", "--time", "0", name], capture_output=True, check=False)
        subprocess.run([*PODMAN, "volume", "rm", "--force", volume], capture_output=True, check=False)


def run_outside(idle_s: float) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as state:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": state,
            "ORCH_HTTP_PORT": str(port),
            "ORCH_STATE_DIR": state,
            "PLUGINS_DIR": str(ROOT / "plugins"),
            "ORCH_LOG_FORMAT": "json",
        }
        start = time.perf_counter()
        proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "orchestrator"), "run"], env=env, cwd=state,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            ready = wait_http(f"http://127.0.0.1:{port}/health", 120)
            cold = None if ready is None else time.perf_counter() - start
            time.sleep(idle_s)
            redis_pid = int((Path(state) / "redis" / "redis.pid").read_text())
            return {"cold_start_s": cold, **memory([proc.pid, redis_pid])}
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            # the embedded Redis outlives its starter by design (README "What survives"): stop it
            pid_file = Path(state) / "redis" / "redis.pid"
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)


def median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [row[key] for row in rows if row[key] is not None]
    return round(statistics.median(values), 3) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True, help="an image built by scripts/container-image")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--idle-s", type=float, default=10.0)
    args = parser.parse_args()

    rows: dict[str, list[dict[str, Any]]] = {"container": [], "outside": []}
    for n in range(args.rounds):
        order = ["container", "outside"] if n % 2 == 0 else ["outside", "container"]
        for kind in order:
            row = run_container(args.image, args.idle_s) if kind == "container" else run_outside(args.idle_s)
            rows[kind].append(row)
            print(kind, json.dumps(row), file=sys.stderr)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", args.image))
    keys = list(rows["container"][0])
    print(json.dumps({
        "image": args.image,
        "image_size_mb": round(size / 1e6, 1),
        "rounds": args.rounds,
        "idle_s": args.idle_s,
        "median": {kind: {key: median(kind_rows, key) for key in keys} for kind, kind_rows in rows.items()},
        "rows": rows,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
