"""Processes and facts for the harness: start/stop what it runs, free ports, /health polling, and the
machine, version and git facts recorded with every run (stdlib only)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import benchlib

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS = BENCH / ".peers"
PROJECT_PY = ROOT / ".venv" / "bin" / "python"


class Procs:
    """Every process this harness starts; all are stopped on exit, failure or signal."""

    def __init__(self) -> None:
        self.live: dict[int, tuple[subprocess.Popen[bytes], list[int]]] = {}

    def start(self, cmd: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=cwd,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.live[proc.pid] = (proc, [proc.pid])
        return proc

    def stop(self, proc: subprocess.Popen[bytes], *, grace_s: float = 15.0) -> float:
        """SIGTERM to its group, wait, SIGKILL; then SIGKILL any descendant seen before that is left."""
        if proc.pid not in self.live:
            return 0.0
        seen = benchlib.tree(proc.pid)
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        took = time.monotonic() - started
        for pid in seen:
            if pid != proc.pid and benchlib.cmdline(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self.live.pop(proc.pid, None)
        return took

    def stop_all(self) -> None:
        for proc, _ in list(self.live.values()):
            with contextlib.suppress(Exception):
                self.stop(proc, grace_s=5.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
    return {k: os.environ[k] for k in keep if k in os.environ}


def wait_http(url: str, timeout_s: float) -> float | None:
    """Seconds until `url` answers 200, polling every 10 ms; None on timeout."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.01)
    return None


# -- the run --------------------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            lines = fh.readlines()
        for line in lines:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "mem_total": mem,
        "kernel": platform.release(),
        "os": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, Any]:
    probe = (
        "import json,sys,importlib.metadata as m\nout={'python':sys.version.split()[0],'executable':sys.executable}\n"
        "for p in sys.argv[1:]:\n    try: out[p]=m.version(p)\n    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    pkgs = {
        "project": (PROJECT_PY, ["orchestrator", "arq", "redis", "hiredis", "uvloop", "aiohttp"]),
        "celery": (PEERS / "celery/bin/python", ["celery", "kombu", "billiard", "redis", "hiredis", "packaging"]),
        "saq": (PEERS / "saq/bin/python", ["saq", "redis", "hiredis", "typing_extensions"]),
        "arq": (PEERS / "arq/bin/python", ["arq", "redis", "hiredis"]),
        "tools": (PEERS / "tools/bin/python", ["py-spy"]),
    }
    out: dict[str, Any] = {}
    for name, (py, names) in pkgs.items():
        with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
            out[name] = json.loads(
                subprocess.run(
                    [str(py), "-c", probe, *names], capture_output=True, text=True, timeout=30, check=False
                ).stdout
            )
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out["redis-server"] = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    pins = {}
    for p in ("celery", "saq", "arq", "tools"):
        with contextlib.suppress(OSError):
            pins[p] = (PEERS / p / ".pins").read_text().strip()
    out["pins"] = pins
    return out


def git_facts() -> dict[str, Any]:
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True, check=False).stdout.strip()

    return {
        "head": git("rev-parse", "HEAD"),
        "describe": git("describe", "--always", "--dirty"),
        "uncommitted_product_files": [ln for ln in git("status", "--porcelain", "--", "orchestrator").splitlines()],
    }
