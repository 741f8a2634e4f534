"""Helpers for the job tests: plugin folders, an in-process app, the real CLI, a real `run` process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.app import Orchestrator
from orchestrator.config import Settings

# A plugin that can sleep, wait while a file exists, fail until a file exists, spawn a grandchild and
# record what it did.
PROBE_MAIN = """
import json, os, subprocess, time

def _note(path, **event):
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(event) + "\\n")

def run(name="x", sleep=0.0, fail_until_file=None, record=None, spawn_child=False, hold_while_file=None, **ctx):
    _note(record, event="start", job=ctx["job_id"], name=name, attempt=ctx["attempt"], t=time.time(), pid=os.getpid())
    if spawn_child:
        child = subprocess.Popen(["sleep", "300"])
        _note(record, event="child", job=ctx["job_id"], pid=child.pid)
    print(f"working on {name}", flush=True)
    while hold_while_file and os.path.exists(hold_while_file):
        time.sleep(0.05)
    time.sleep(sleep)
    if fail_until_file and not os.path.exists(fail_until_file):
        raise RuntimeError(f"{fail_until_file} does not exist yet")
    _note(record, event="end", job=ctx["job_id"], name=name, t=time.time())
    return {"name": name, "attempt": ctx["attempt"]}
"""

PROBE_PARAMS = {
    "name": {"type": "string", "required": False, "default": "x"},
    "sleep": {"type": "number", "required": False, "default": 0},
    "fail_until_file": {"type": "string", "required": False},
    "record": {"type": "string", "required": False},
    "spawn_child": {"type": "boolean", "required": False, "default": False},
    "hold_while_file": {"type": "string", "required": False},
}


def make_plugin(plugins_dir: Path, name: str = "probe", **manifest_extra: Any) -> Path:
    folder = plugins_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": name,
        "version": "1.0.0",
        "description": "test probe",
        "author": "tests",
        "entry_point": "main.run",
        "parameters": PROBE_PARAMS,
        **manifest_extra,
    }
    (folder / "plugin.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text(PROBE_MAIN)
    return folder


def make_settings(tmp_path: Path, redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "plugins_dir": tmp_path / "plugins",
        "state_dir": tmp_path / "state",
        "http_port": 0,
        "retry_backoff_s": 0.1,
        "kill_grace_s": 1.0,
        "shutdown_grace_s": 2.0,
        "heartbeat_interval_s": 0.5,
        "poll_delay_s": 0.5,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def run_app(
    settings: Settings, *, app_type: type[Orchestrator] = Orchestrator, **kwargs: Any
) -> AsyncIterator[Orchestrator]:
    app = app_type(settings, **kwargs)
    task = asyncio.create_task(app.run())
    ready = asyncio.create_task(app.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()
    assert ready in done, "app did not become ready"
    try:
        yield app
    finally:
        app.stop()
        await asyncio.wait_for(task, 30)


@dataclass
class CliResult:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "REDIS_URL", "PLUGINS_DIR"))}
    env.update(
        REDIS_URL=settings.redis_url or "",
        PLUGINS_DIR=str(settings.plugins_dir),
        PLUGIN_VENV_DIR=str(settings.venv_dir),
        ORCH_STATE_DIR=str(settings.state_dir),
        ORCH_QUEUES=json.dumps({q: s.model_dump() for q, s in settings.queues.items()}),
        ORCH_RETRY_BACKOFF_S=str(settings.retry_backoff_s),
        ORCH_KILL_GRACE_S=str(settings.kill_grace_s),
        ORCH_SHUTDOWN_GRACE_S=str(settings.shutdown_grace_s),
        ORCH_HEARTBEAT_INTERVAL_S=str(settings.heartbeat_interval_s),
        ORCH_HTTP_PORT=str(settings.http_port),
        ORCH_LOG_FORMAT="json",
    )
    env.update(extra)
    return {k: v for k, v in env.items() if v != ""}  # "" in `extra`: leave that name unset


async def cli(settings: Settings, *args: str, stdin: str | None = None, **env: str) -> CliResult:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(settings, **env),
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


class RunProcess:
    """A real `orchestrator run` child, for signal and kill -9 tests."""

    def __init__(self, settings: Settings, log_path: Path, **env: str) -> None:
        self.env = cli_env(settings, **env)
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "orchestrator", "run", env=self.env, stdout=log, stderr=log,
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        log.close()

    async def signal_and_wait(self, sig: int, timeout_s: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), timeout_s)

    async def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def wait_for(predicate: Any, timeout_s: float = 20, interval_s: float = 0.05) -> Any:
    """Await until `predicate()` (sync or async) is truthy; return its value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval_s)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): look at its state
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False
