"""Runs plugin calls in child processes: own process group, minimal env, JSON in and out.

Two isolation modes, chosen by the manifest's `isolation`:
- "process" (default): a fresh child per run (process.py); with `prestart`, a plugin that ran
  recently has one child started ahead of its next run, waiting past interpreter start-up.
- "pooled": warm children per (plugin, interpreter) that import the plugin once and run many jobs
  each, one at a time (pool.py, options in the manifest's `pool`).
Whatever the plugin does (hang, crash, segfault, print forever, fork), `Launcher.run` returns a
RunResult and leaves nothing of the job's process group running. `aclose()` stops every child and
background task the launcher keeps between runs.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import logging
import os
import py_compile
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from orchestrator.errors import PluginStartError
from orchestrator.plugins.envs import PythonCmd
from orchestrator.plugins.output import LogCapture, RunResult
from orchestrator.plugins.pool import ChildPool
from orchestrator.plugins.process import SpareKey, Spares, run_oneshot, spawn_oneshot
from orchestrator.plugins.registry import PluginInfo
from orchestrator.plugins.user import PluginUser

__all__ = ["BASE_ENV", "SHIM_PATH", "Launcher", "OutputFn", "RunResult"]

logger = logging.getLogger(__name__)

SHIM_PATH = str(Path(__file__).with_name("shim.py"))
OutputFn = Callable[[str, str], None]  # (stream name "stdout" | "stderr", line)

# What every child gets from the parent's environment; anything else only if the manifest's `env` names it.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")

PoolKey = tuple[str, str, tuple[str, ...]]
_TRACE_KEYS = ("traceparent", "tracestate")  # plugin name, interpreter, flags


class Launcher:
    """Starts plugin calls as child processes and always cleans up after them.

    Use it as `async with Launcher(...) as launcher:` or call `await launcher.aclose()` once no job
    runs any more: warm pooled children and prestarted spares live until then.

    Args:
        kill_grace_s: after SIGTERM (timeout or cancellation), how long before SIGKILL.
        log_cap_bytes: how much of the end of stdout/stderr is kept in `RunResult.log_tail`.
        max_line_bytes: longer output lines are cut (one huge line must not eat the memory).
        result_cap_bytes: a bigger result is refused (error_type "ResultTooLarge").
        env_source: where the names of BASE_ENV and of a manifest's `env` are looked up
            (default: os.environ at run time); lets the app supply values read from `.env`.
        prestart: in "process" mode, keep one started child waiting for the next run of each plugin
            that ran within `spare_idle_s` (a run then skips interpreter start-up).
        spare_idle_s: a prestarted child unused this long is stopped.
        user: run children as this user (`plugin_user`), with its HOME; default: ours.
    """

    def __init__(
        self,
        *,
        kill_grace_s: float = 5.0,
        log_cap_bytes: int = 1 << 20,
        max_line_bytes: int = 16 << 10,
        result_cap_bytes: int = 64 << 20,
        env_source: Mapping[str, str] | None = None,
        prestart: bool = False,
        spare_idle_s: float = 60.0,
        user: PluginUser | None = None,
    ) -> None:
        self.user = user
        self.kill_grace_s = kill_grace_s
        self.log_cap_bytes = log_cap_bytes
        self.max_line_bytes = max_line_bytes
        self.result_cap_bytes = result_cap_bytes
        self.env_source = env_source
        self.prestart = prestart
        self._shims: dict[Path, str] = {}  # interpreter -> shim file to run (see _shim_file)
        self._pools: dict[PoolKey, ChildPool] = {}
        self._old_pools: list[ChildPool] = []  # replaced by a reload: their children stop after their job
        self._spares = Spares(spare_idle_s)
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every warm child and prestarted spare, cancel the background tasks, wait until all are reaped.

        Meant for after the last job: a pooled job still running gets its child stopped (SIGTERM,
        grace, SIGKILL) and fails. Runs after this raise PluginStartError.
        """
        self._closed = True
        pools = [*self._pools.values(), *self._old_pools]
        self._pools.clear()
        self._old_pools.clear()
        await asyncio.gather(self._spares.aclose(), *(pool.aclose() for pool in pools))

    def spares_ready(self) -> int:
        """Prestarted children waiting for a request (for status pages and tests)."""
        return self._spares.ready_count()

    def pool_sizes(self) -> dict[str, int]:
        """Live warm children per pooled plugin (for status pages, tests and the bench)."""
        sizes: dict[str, int] = {}
        for (name, _, _), pool in self._pools.items():
            sizes[name] = sizes.get(name, 0) + pool.size
        return sizes

    async def run(
        self,
        plugin: PluginInfo,
        params: dict[str, Any],
        context: dict[str, Any],
        *,
        python: PythonCmd,
        timeout_s: float | None,
        on_output: OutputFn | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Run `plugin`'s entry point as `entry(**params, **context)` in a child process.

        Plugin failures of every kind come back as a RunResult with ok=False. Cancelling the
        awaiting task stops the job's process group (SIGTERM, grace, SIGKILL) and re-raises.

        Raises:
            PluginStartError: the plugin is invalid, the interpreter could not be started, or the
                launcher is closed.
        """
        manifest = plugin.manifest
        if manifest is None:
            raise PluginStartError(f"plugin {plugin.name!r} is invalid: {plugin.reason}")
        if self._closed:
            raise PluginStartError(f"plugin {plugin.name!r}: the launcher is closed")
        started = time.monotonic()
        interpreter, flags = python
        shim = self._shims.get(interpreter)
        if shim is None:
            shim = self._shims[interpreter] = await asyncio.to_thread(_shim_file, interpreter)
        request: dict[str, Any] = {
            "plugin_dir": str(plugin.path.absolute()),  # getcwd only, no file I/O
            "entry_point": manifest.entry_point,
            "params": params,
            "context": context,
            "limits": manifest.limits.model_dump() if manifest.limits else None,
        }
        env = self._child_env(plugin, context, interpreter)
        if trace:
            # W3C names as environment variables: a plugin using OpenTelemetry continues the trace
            # (the environment of a one-shot child; in the request for a warm or prestarted one).
            env.update({name.upper(): value for name, value in trace.items() if name in _TRACE_KEYS})
        capture = LogCapture(self.log_cap_bytes, self.max_line_bytes, on_output)
        cmd = [str(interpreter), *flags, shim]
        if self.user is not None:
            # -S: not one .pth file of the plugin's dependencies runs before the switch (shim.py)
            site = "-S" not in flags
            cmd = [str(interpreter), *flags, *(["-S"] if site else []), shim, "--user", self.user.shim_arg(site=site)]
        if manifest.isolation == "pooled":
            request["env"] = env  # the child was started with the plugin's env; the job's own goes here
            request["rss"] = manifest.pool.max_memory_mb is not None
            pool = self._pool_for(plugin, cmd, interpreter)
            return await pool.run(_encode(request), capture, timeout_s=timeout_s, started=started)
        key: SpareKey = (plugin.name, str(plugin.path), str(interpreter), tuple(flags))
        child = self._spares.take(key) if self.prestart else None
        if child is not None:
            request["env"] = env
            child.proto.capture = capture
            logger.debug("plugins.prestarted plugin=%s pid=%d job=%s", plugin.name, child.pid, context.get("job_id"))
        else:
            child = await spawn_oneshot(
                cmd, name=plugin.name, cwd=plugin.path, env=env, capture=capture, result_cap_bytes=self.result_cap_bytes
            )
            logger.debug("plugins.started plugin=%s pid=%d job=%s", plugin.name, child.pid, context.get("job_id"))
        payload = _encode(request)
        if self.prestart and not self._closed and self._spares.busy(key):
            spare = functools.partial(
                spawn_oneshot,
                cmd,
                name=plugin.name,
                cwd=plugin.path,
                env=self._child_env(plugin, {}, interpreter),
                capture=LogCapture(self.log_cap_bytes, self.max_line_bytes, None),
                result_cap_bytes=self.result_cap_bytes,
            )
            self._spares.replenish(key, spare)
        return await run_oneshot(
            child, payload, timeout_s=timeout_s, grace_s=self.kill_grace_s, name=plugin.name, started=started
        )

    def _pool_for(self, plugin: PluginInfo, cmd: list[str], interpreter: Path) -> ChildPool:
        key: PoolKey = (plugin.name, cmd[0], tuple(cmd[1:-1]))
        pool = self._pools.get(key)
        if pool is not None and pool.manifest is plugin.manifest and pool.cwd == plugin.path and pool.cmd == cmd:
            return pool
        assert plugin.manifest is not None
        if pool is not None:  # reloaded (a new manifest object) or moved: new children import the new code
            logger.info("plugins.pool_replaced plugin=%s", plugin.name)
            pool.close_soon()
            self._old_pools = [p for p in self._old_pools if p.size] + [pool]
        pool = self._pools[key] = ChildPool(
            name=plugin.name,
            manifest=plugin.manifest,
            cmd=cmd,
            cwd=plugin.path,
            env=self._child_env(plugin, {}, interpreter),
            grace_s=self.kill_grace_s,
            result_cap_bytes=self.result_cap_bytes,
        )
        return pool

    def _child_env(self, plugin: PluginInfo, context: dict[str, Any], interpreter: Path) -> dict[str, str]:
        source = os.environ if self.env_source is None else self.env_source
        declared = plugin.manifest.env if plugin.manifest else []
        env = {name: source[name] for name in (*BASE_ENV, *declared) if name in source}
        if plugin.venv is not None and plugin.venv in interpreter.parents:
            # as if activated: console scripts of the plugin's dependencies are found by name
            env["PATH"] = os.pathsep.join(filter(None, [str(plugin.venv / "bin"), env.get("PATH")]))
            env["VIRTUAL_ENV"] = str(plugin.venv)
        if self.user is not None:
            env.update(HOME=self.user.home, USER=self.user.name, LOGNAME=self.user.name)
        env.update(ORCH_PLUGIN=plugin.name, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
        if context.get("job_id") is not None:
            env["ORCH_JOB_ID"] = str(context["job_id"])
        return env


def _encode(request: dict[str, Any]) -> bytes:
    return json.dumps(request, default=_json_default).encode() + b"\n"


def _shim_file(interpreter: Path) -> str:
    """The shim's bytecode if `interpreter` is this Python (or a venv of it), else its source.

    Running the .pyc skips compiling the shim at every launch (~2 ms, a fifth of a bare start-up).
    """
    own = getattr(sys, "_base_executable", None) or sys.executable
    if os.path.realpath(interpreter) != os.path.realpath(own):
        return SHIM_PATH  # another Python version may not read our bytecode
    pyc = importlib.util.cache_from_source(SHIM_PATH)
    if not _pyc_is_fresh(pyc):
        try:
            py_compile.compile(SHIM_PATH, cfile=pyc, doraise=True)
        except (OSError, py_compile.PyCompileError) as e:  # e.g. a read-only install
            logger.debug("plugins.shim_not_compiled path=%s error=%s", pyc, e)
            return SHIM_PATH
    return pyc


def _pyc_is_fresh(pyc: str) -> bool:
    """The checks the import system makes (PEP 552 timestamp header) before trusting a .pyc."""
    try:
        with open(pyc, "rb") as fh:
            header = fh.read(16)
        st = os.stat(SHIM_PATH)
    except OSError:
        return False
    return (
        header[:4] == importlib.util.MAGIC_NUMBER
        and int.from_bytes(header[4:8], "little") == 0
        and int.from_bytes(header[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
        and int.from_bytes(header[12:16], "little") == st.st_size & 0xFFFFFFFF
    )


def _json_default(value: Any) -> Any:
    """Context values such as datetimes in change events travel as ISO strings, anything else as str()."""
    isoformat = getattr(value, "isoformat", None)
    return isoformat() if callable(isoformat) else str(value)
