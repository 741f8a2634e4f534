"""Load generator for the orchestrator (run with the project venv), plus its bench plugins and the
bare-spawn baseline.

    python bench/orchestrator_bench.py make-plugins DIR
    python bench/orchestrator_bench.py spawn --n 500 --seq 200 --concurrency 10
    python bench/orchestrator_bench.py {ready,throughput,latency} --variant {process,pooled} --redis-port P ...

The worker is a separate `orchestrator run` process started by the harness; this process only
triggers jobs through the public async Client and waits for them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

VARIANTS = ["process", "pooled"]
PLUGIN = {v: f"bench_noop_{v}" for v in VARIANTS}

# The no-op entry point returns its pid, so a run can tell which execution mode really ran
# (a fresh process per job, or warm children reused). `posix` is already loaded by the shim.
_PLUGIN_SOURCE = """def run(**context):
    import posix
    return posix.getpid()
"""


def make_plugins(root: Path) -> None:
    for variant, name in PLUGIN.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        manifest = {
            "name": name,
            "version": "1.0.0",
            "description": f"bench no-op ({variant})",
            "entry_point": "main.run",
            "parameters": {},
            "dependencies": [],
            "isolation": variant,
            "max_retries": 0,
            "timeout": 60,
        }
        (d / "plugin.json").write_text(json.dumps(manifest, indent=2) + "\n")
        (d / "main.py").write_text(_PLUGIN_SOURCE)


# -- the bare-spawn baseline ------------------------------------------------------------------------

_ECHO = "import sys\nsys.stdout.write(sys.stdin.readline())\nsys.stdout.flush()\n"


async def _spawn(cmd: list[str], line: bytes | None = None) -> None:
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.PIPE if line is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE if line is not None else asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    if line is not None:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(line)
        await proc.stdin.drain()
        reply = await proc.stdout.readline()
        assert reply == line, reply
    await proc.wait()


def base_interpreter() -> str:
    """The interpreter the launcher runs a no-deps plugin with: this venv's base Python, resolved."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


async def spawn_baseline(interpreter: str, n: int, seq: int, concurrency: int) -> dict[str, Any]:
    """What a fresh interpreter costs here, with the flags the launcher uses for a no-deps plugin."""
    bare = [interpreter, "-I", "-S", "-c", "pass"]
    echo = [interpreter, "-I", "-S", "-c", _ECHO]
    line = json.dumps({"params": {}, "context": {"job_id": "x" * 32}}).encode() + b"\n"
    for _ in range(5):  # warm the page cache
        await _spawn(bare)
    seq_s = []
    for _ in range(seq):
        t = time.perf_counter()
        await _spawn(bare)
        seq_s.append(time.perf_counter() - t)
    echo_s = []
    for _ in range(seq):
        t = time.perf_counter()
        await _spawn(echo, line)
        echo_s.append(time.perf_counter() - t)
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            await _spawn(bare)

    t = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    elapsed = time.perf_counter() - t
    return {
        "interpreter": interpreter,
        "command": bare,
        "sequential": benchlib.latency_summary(seq_s),
        "jsonline_roundtrip": benchlib.latency_summary(echo_s),
        "concurrent": {
            "n": n,
            "concurrency": concurrency,
            "elapsed_s": round(elapsed, 3),
            "spawns_per_s": round(n / elapsed, 1),
        },
    }


# -- the load generator ---------------------------------------------------------------------------


async def _ready(client: Any, plugin: str, deadline_s: float) -> dict[str, Any]:
    from orchestrator.errors import OrchestratorError

    end = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            t = time.perf_counter()
            job = await client.trigger(plugin, {})
            res = await client.result(job.job_id, timeout_s=max(1.0, end - time.monotonic()))
            return {
                "state": res["state"],
                "first_job_ms": round((time.perf_counter() - t) * 1000, 3),
                "error": res.get("error"),
            }
        except OrchestratorError as e:  # plugins not published yet
            last = e
            await asyncio.sleep(0.05)
    raise SystemExit(f"orchestrator not ready after {deadline_s}s: {last}")


async def _phases(client: Any, stamps: list[tuple[str, float, float, float]]) -> dict[str, float | None]:
    """Where a round trip's time goes, from the job records (read after the timed loop), p50 of each phase."""
    parts: dict[str, list[float]] = {
        k: []
        for k in ("trigger_call", "queued_to_started", "started_to_finished", "launcher_duration", "finished_to_caller")
    }
    for job_id, t0, t1, t3 in stamps:
        rec = await client.store.get(job_id)  # a JobRecord (attributes), None if gone
        if rec is None or rec.started_at is None or rec.finished_at is None or rec.enqueued_at is None:
            continue
        parts["trigger_call"].append(t1 - t0)
        parts["queued_to_started"].append(rec.started_at - rec.enqueued_at)
        parts["started_to_finished"].append(rec.finished_at - rec.started_at)
        if rec.duration_s is not None:
            parts["launcher_duration"].append(float(rec.duration_s))
        parts["finished_to_caller"].append(t3 - rec.finished_at)
    return {k: round(benchlib.percentile(v, 50) * 1000, 3) if v else None for k, v in parts.items()}


async def main_loadgen() -> None:
    # On asyncio's default loop, like the peers' async load generators (asyncio.run): a uvloop.install()
    # here came after asyncio.run had made its loop, so it never took effect; the client is compared
    # as it was measured.
    args = benchlib.loadgen_args(VARIANTS)
    from orchestrator.client import Client
    from orchestrator.jobs.model import Keys
    from orchestrator.tracing import build as tracing
    from orchestrator.tracing.settings import TracingSettings

    plugin = PLUGIN[args.variant]
    # traced like any caller when the OTEL_* variables say so (bench/bench_tracing.py); else the no-op
    spans = tracing.build(TracingSettings.from_environ())
    client = await Client.connect(f"redis://{args.redis_host}:{args.redis_port}/0", tracing=spans)
    try:
        warm = await _ready(client, plugin, 30.0 if args.mode == "ready" else 10.0)
        if args.mode == "ready":
            benchlib.emit({"ready": warm})
            return
        redis = client.redis

        async def finished() -> int:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.zcard(Keys.state("succeeded"))
                pipe.zcard(Keys.state("failed"))
                ok, failed = await pipe.execute()
            return int(ok) + int(failed)

        if args.mode == "throughput":
            base = await finished()

            async def enqueue() -> None:
                await client.trigger(plugin, {})

            async def done() -> int:
                return await finished() - base

            failed0 = await redis.zcard(Keys.state("failed"))
            out = await benchlib.throughput_async(args, enqueue, done)
            out["failed"] = int(await redis.zcard(Keys.state("failed"))) - int(failed0)
        else:
            pids: list[Any] = []
            states: dict[str, int] = {}
            stamps: list[tuple[str, float, float, float]] = []  # job id, wall clock at trigger / enqueued / result

            async def roundtrip() -> None:
                t0 = time.time()
                job = await client.trigger(plugin, {})
                t1 = time.time()
                res = await client.result(job.job_id, timeout_s=30)
                stamps.append((job.job_id, t0, t1, time.time()))
                states[res["state"]] = states.get(res["state"], 0) + 1
                pids.append(res.get("result"))

            out = await benchlib.latency_async(args, roundtrip)
            distinct = len({p for p in pids if p is not None})
            out["states"] = states
            out["distinct_plugin_pids"] = distinct
            # A fresh child per job shows n distinct pids; warm pooled children show a handful.
            out["effective_isolation"] = "process" if distinct > max(2, len(pids) // 2) else "pooled"
            out["phases_ms"] = await _phases(client, stamps)
        out["variant"] = args.variant
        out["plugin"] = plugin
        benchlib.emit(out)
    finally:
        await client.close()
        await spans.aclose()


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "make-plugins":
        make_plugins(Path(sys.argv[2]))
        return
    if len(sys.argv) >= 2 and sys.argv[1] == "spawn":
        import argparse

        p = argparse.ArgumentParser()
        p.add_argument("spawn")
        p.add_argument("--n", type=int, default=500)
        p.add_argument("--seq", type=int, default=200)
        p.add_argument("--concurrency", type=int, default=10)
        a = p.parse_args()
        import uvloop

        uvloop.install()
        benchlib.emit(asyncio.run(spawn_baseline(base_interpreter(), a.n, a.seq, a.concurrency)))
        return
    asyncio.run(main_loadgen())


if __name__ == "__main__":
    main()
