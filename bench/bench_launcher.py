"""Plugin launch overhead and venv build time.

    .venv/bin/python bench/bench_launcher.py [--runs 200] [--loop asyncio|uvloop] [--dep iniconfig]

Measures, in one process and interleaved so machine noise hits both alike:
- bare: `<python> <flags> -c pass` spawned with asyncio.create_subprocess_exec and reaped (the
  floor: same interpreter, same flags, same event loop);
- launcher: a trivial plugin (`def run(**kw): return {"ok": 1}`) through Launcher.run, i.e.
  spawn + request + result pipe + log pipes + process-group cleanup;
once for a plugin without dependencies (base interpreter, `-I -S`) and once for a plugin with
one dependency (its venv's python, `-I`).
Then a venv build for one small dependency: cold (empty uv cache: downloads from PyPI), warm
(uv's cache filled, new venv folder), and cached (the venv exists: ensure() is a lookup).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator.plugins import Launcher, Manifest, PluginRegistry, VenvManager

TRIVIAL = "def run(**kwargs):\n    return {'ok': 1}\n"


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "min_ms": round(ordered[0] * 1000, 2),
    }


async def launch_overhead(runs: int, workdir: Path, dependencies: list[str]) -> dict[str, Any]:
    name = "with_venv" if dependencies else "trivial"
    folder = workdir / "plugins" / name
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(TRIVIAL)
    manifest = {"name": name, "version": "1", "entry_point": "main.run", "dependencies": dependencies}
    (folder / "plugin.json").write_text(json.dumps(manifest))
    registry = PluginRegistry(workdir / "plugins", VenvManager(workdir / "venvs"))
    await registry.load()
    info = await registry.ensure_ready(name)
    assert info.python is not None, info
    interpreter, flags = info.python
    launcher = Launcher()

    async def bare() -> None:
        proc = await asyncio.create_subprocess_exec(
            str(interpreter), *flags, "-c", "pass", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        await proc.wait()

    async def plugin() -> None:
        result = await launcher.run(info, {}, {"job_id": "bench"}, python=info.python, timeout_s=30)
        assert result.ok, result

    for _ in range(10):  # warm-up: page cache, the shim's bytecode, the child watcher
        await bare()
        await plugin()
    times: dict[str, list[float]] = {"bare": [], "launcher": []}
    for i in range(runs):
        order = [("bare", bare), ("launcher", plugin)]
        for label, fn in order if i % 2 else reversed(order):
            started = time.perf_counter()
            await fn()
            times[label].append(time.perf_counter() - started)
    out: dict[str, Any] = {label: summary(samples) for label, samples in times.items()}
    out["ratio_p50"] = round(out["launcher"]["p50_ms"] / out["bare"]["p50_ms"], 2)
    out["command"] = [str(interpreter), *flags]
    return out


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
        stdlib_only = await launch_overhead(args.runs, workdir / "a", [])
        in_venv = await launch_overhead(args.runs, workdir / "b", [args.dep])
        builds = await venv_builds(args.dep, workdir)
    return {
        "loop": args.loop,
        "runs": args.runs,
        "launch_no_deps": stdlib_only,
        "launch_in_venv": in_venv,
        "venv_build": builds,
    }


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
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--dep", default="iniconfig", help="small pure-python dependency for the venv build")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        report = uvloop.run(main(args))
    else:
        report = asyncio.run(main(args))
    print(json.dumps({"machine": machine(), **report}, indent=2))
