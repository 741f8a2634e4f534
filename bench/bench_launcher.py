"""Plugin launch overhead per execution mode, launcher throughput, and venv build time.

    .venv/bin/python bench/bench_launcher.py [--runs 200] [--jobs 3000] [--rounds 3]
                                             [--loop asyncio|uvloop] [--dep iniconfig] [--no-venv-build]

Measures, in one process:
1. Latency per run, interleaved so machine noise hits every side alike:
   - bare: `<python> <flags> -c pass` spawned with asyncio.create_subprocess_exec and reaped (the
     floor of a fresh process: same interpreter, same flags, same event loop);
   - process: a trivial plugin (`def run(**kw): return {"ok": 1}`) through Launcher.run, i.e.
     spawn + request + result pipe + log pipes + process-group cleanup;
   - prestart: the same through Launcher(prestart=True): the run finds a child already started;
   - pooled: the same plugin with `"isolation": "pooled"`: the run goes to a warm child;
   once for a plugin without dependencies (base interpreter, `-I -S`) and once for a plugin with
   one dependency (its venv's python, `-I`).
2. Throughput for the plugin without dependencies: jobs/s with 1, 2 and 4 concurrent callers and
   the parent's CPU per run (time.process_time of this process, all its threads), for each mode
   and for bare spawns at the same concurrency; the modes take turns, `--rounds` times, and the
   median round is reported. This is the launcher alone: no Redis, no job records (bench/run
   measures the whole job path).
3. CPU per pooled run on both sides of the pipes: this process, and the warm children (from
   RUSAGE_CHILDREN once aclose has reaped them), 5,000 runs at concurrency 2.
4. A venv build for one small dependency: cold (empty uv cache: downloads from PyPI), warm (uv's
   cache filled, new venv folder), and cached (the venv exists: ensure() is a lookup).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from orchestrator.plugins import Launcher, Manifest, PluginInfo, PluginRegistry, VenvManager

TRIVIAL = "def run(**kwargs):\n    return {'ok': 1}\n"
MODES = ("bare", "process", "prestart", "pooled")
Call = Callable[[], Awaitable[None]]


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
        "min_ms": round(ordered[0] * 1000, 3),
    }


async def make_plugins(workdir: Path, dependencies: list[str]) -> tuple[PluginInfo, PluginInfo]:
    """The trivial plugin twice: isolation "process" and "pooled"."""
    infos = []
    registry = PluginRegistry(workdir / "plugins", VenvManager(workdir / "venvs"))
    for isolation in ("process", "pooled"):
        name = f"trivial_{isolation}"
        folder = workdir / "plugins" / name
        folder.mkdir(parents=True)
        (folder / "main.py").write_text(TRIVIAL)
        manifest = {
            "name": name,
            "version": "1",
            "entry_point": "main.run",
            "dependencies": dependencies,
            "isolation": isolation,
        }
        (folder / "plugin.json").write_text(json.dumps(manifest))
    await registry.load()
    for isolation in ("process", "pooled"):
        infos.append(await registry.ensure_ready(f"trivial_{isolation}"))
    return infos[0], infos[1]


def callers(plain: Launcher, pre: Launcher, process: PluginInfo, pooled: PluginInfo) -> dict[str, Call]:
    assert process.python is not None and pooled.python is not None
    interpreter, flags = process.python

    async def bare() -> None:
        proc = await asyncio.create_subprocess_exec(
            str(interpreter), *flags, "-c", "pass", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        await proc.wait()

    def through(launcher: Launcher, info: PluginInfo) -> Call:
        assert info.python is not None
        python = info.python

        async def call() -> None:
            result = await launcher.run(info, {}, {"job_id": "bench"}, python=python, timeout_s=30)
            assert result.ok, result

        return call

    return {
        "bare": bare,
        "process": through(plain, process),
        "prestart": through(pre, process),
        "pooled": through(plain, pooled),
    }


async def launch_latency(runs: int, workdir: Path, dependencies: list[str]) -> dict[str, Any]:
    process, pooled = await make_plugins(workdir, dependencies)
    async with Launcher() as plain, Launcher(prestart=True) as pre:
        calls = callers(plain, pre, process, pooled)
        for _ in range(10):  # warm-up: page cache, the shim's bytecode, the child watcher, a warm child
            for fn in calls.values():
                await fn()
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        for i in range(runs):
            shift = i % len(MODES)  # each mode in each position in turn
            for mode in MODES[shift:] + MODES[:shift]:
                started = time.perf_counter()
                await calls[mode]()
                times[mode].append(time.perf_counter() - started)
    out: dict[str, Any] = {mode: summary(samples) for mode, samples in times.items()}
    out["ratio_p50_to_bare"] = {m: round(out[m]["p50_ms"] / out["bare"]["p50_ms"], 3) for m in MODES[1:]}
    # the keys of the first version, read by bench/render.py: the launcher in process mode
    out["launcher"], out["ratio_p50"] = out["process"], out["ratio_p50_to_bare"]["process"]
    assert process.python is not None
    out["command"] = [str(process.python[0]), *process.python[1]]
    return out


async def rate(fn: Call, jobs: int, concurrency: int) -> dict[str, float]:
    """`jobs` calls of `fn` by `concurrency` callers: jobs/s and the CPU this process spent per call."""
    left = jobs

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await fn()

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"jobs_per_s": round(jobs / wall, 1), "parent_cpu_ms_per_job": round(cpu / jobs * 1000, 4)}


async def throughput(jobs: int, rounds: int, workdir: Path, concurrencies: list[int]) -> dict[str, Any]:
    """Each mode in turn, `rounds` times per concurrency; the median round of each mode is reported."""
    process, pooled = await make_plugins(workdir, [])
    out: dict[str, Any] = {}
    async with Launcher() as plain, Launcher(prestart=True) as pre:
        calls = callers(plain, pre, process, pooled)
        for fn in calls.values():
            for _ in range(20):
                await fn()
        for concurrency in concurrencies:
            samples: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
            for i in range(rounds):
                for mode in MODES[i % len(MODES) :] + MODES[: i % len(MODES)]:
                    n = jobs if mode == "pooled" else max(50, jobs // 10)  # a fresh process costs ~10 ms
                    samples[mode].append(await rate(calls[mode], n, concurrency))
            row: dict[str, Any] = {}
            for mode, runs in samples.items():
                rates = sorted(r["jobs_per_s"] for r in runs)
                cpus = sorted(r["parent_cpu_ms_per_job"] for r in runs)
                row[mode] = {
                    "jobs_per_s": statistics.median(rates),
                    "min_max": [rates[0], rates[-1]],
                    "parent_cpu_ms_per_job": statistics.median(cpus),
                }
            for mode in MODES[1:]:
                row[f"{mode}_to_bare"] = round(row[mode]["jobs_per_s"] / row["bare"]["jobs_per_s"], 3)
            out[f"concurrency_{concurrency}"] = row
    return out


async def pooled_cpu(jobs: int, workdir: Path, concurrency: int = 2) -> dict[str, Any]:
    """CPU per pooled run on both sides: this process, and the warm children (reaped by aclose).

    The children's share includes their start-ups (a new child every max_runs_per_process runs).
    """
    _, pooled = await make_plugins(workdir, [])
    assert pooled.python is not None
    python = pooled.python
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    async with Launcher() as launcher:

        async def call() -> None:
            result = await launcher.run(pooled, {}, {"job_id": "bench"}, python=python, timeout_s=30)
            assert result.ok, result

        figures = await rate(call, jobs, concurrency)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (children_after.ru_utime + children_after.ru_stime) - (children_before.ru_utime + children_before.ru_stime)
    return {"concurrency": concurrency, "jobs": jobs, **figures, "child_cpu_ms_per_job": round(used / jobs * 1000, 4)}


async def venv_builds(dep: str, workdir: Path) -> dict[str, Any]:
    plugin_dir = workdir / "dep_plugin"
    plugin_dir.mkdir()
    manifest = Manifest(name="dep", version="1", entry_point="main.run", dependencies=[dep])
    out: dict[str, Any] = {"dependency": dep}
    saved = os.environ.get("UV_CACHE_DIR")
    try:
        os.environ["UV_CACHE_DIR"] = str(workdir / "uv-cache")  # empty: a first install on a new machine
        envs = VenvManager(workdir / "venvs-cold")
        started = time.perf_counter()
        await envs.ensure(plugin_dir, manifest)
        out["cold_s"] = round(time.perf_counter() - started, 3)
        envs = VenvManager(workdir / "venvs-warm")  # same uv cache, new venv folder
        started = time.perf_counter()
        await envs.ensure(plugin_dir, manifest)
        out["warm_uv_cache_s"] = round(time.perf_counter() - started, 3)
    finally:
        if saved is None:
            os.environ.pop("UV_CACHE_DIR", None)
        else:
            os.environ["UV_CACHE_DIR"] = saved
    samples = []
    for _ in range(50):
        started = time.perf_counter()
        await envs.ensure(plugin_dir, manifest)
        samples.append(time.perf_counter() - started)
    out["cached_ensure"] = summary(samples)
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-launcher-") as tmp:
        workdir = Path(tmp)
        report: dict[str, Any] = {"loop": args.loop, "runs": args.runs, "jobs": args.jobs, "rounds": args.rounds}
        report["launch_no_deps"] = await launch_latency(args.runs, workdir / "a", [])
        report["launch_in_venv"] = await launch_latency(args.runs, workdir / "b", [args.dep])
        report["throughput_no_deps"] = await throughput(args.jobs, args.rounds, workdir / "c", [1, 2, 4])
        report["pooled_cpu"] = await pooled_cpu(max(args.jobs, 5000), workdir / "d")
        if not args.no_venv_build:
            report["venv_build"] = await venv_builds(args.dep, workdir)
    return report


def machine() -> dict[str, Any]:
    uv = subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True, text=True, check=False)
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "uv": uv.stdout.strip(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="latency samples per mode")
    parser.add_argument("--jobs", type=int, default=3000, help="pooled jobs per throughput round (1/10 for spawns)")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per mode and concurrency (median)")
    parser.add_argument("--no-venv-build", action="store_true", help="skip the venv build figures")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--dep", default="iniconfig", help="small pure-python dependency for the venv build")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        report = uvloop.run(main(args))
    else:
        report = asyncio.run(main(args))
    print(json.dumps({"machine": machine(), **report}, indent=2))
