"""Runs one plugin call in a child process: own process group, minimal env, JSON in and out.

The child is `python <flags> shim.py <fd>`: the request goes in on stdin (kept open afterwards as
a lifeline, see shim.py), the result comes back on a separate pipe, and stdout/stderr are read
line by line as they come. Whatever the plugin does (hang, crash, segfault, print forever, fork),
`Launcher.run` returns a RunResult and leaves nothing of the process group running.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import py_compile
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, cast

from orchestrator.errors import PluginStartError
from orchestrator.plugins.envs import PythonCmd
from orchestrator.plugins.output import LogCapture, ResultProtocol
from orchestrator.plugins.registry import PluginInfo

logger = logging.getLogger(__name__)

SHIM_PATH = str(Path(__file__).with_name("shim.py"))
OutputFn = Callable[[str, str], None]  # (stream name "stdout" | "stderr", line)

# What every child gets from the parent's environment; anything else only if the manifest's `env` names it.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
# After the child exits, how long its pipes may stay open (held by an escaped grandchild) before we stop reading.
DRAIN_S = 1.0
_DECODE_INLINE_BYTES = 1 << 20
_SIGNAL_HINTS = {signal.SIGXCPU: " (cpu_seconds limit)", signal.SIGKILL: ""}


@dataclass
class RunResult:
    """The outcome of one plugin call. `error` is one line; `log_tail` the end of stdout/stderr."""

    ok: bool
    result: Any = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    exit_code: int | None = None
    timed_out: bool = False
    duration_s: float = 0.0
    log_tail: str = ""
    pid: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _ChildProtocol(asyncio.SubprocessProtocol):
    """Feeds stdout/stderr to the capture as data arrives; no reader tasks, no buffer limits."""

    def __init__(self, capture: LogCapture) -> None:
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._capture = capture

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._capture.feed(fd, data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._capture.flush(fd)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:  # process gone and every pipe closed
        if not self.closed.done():
            self.closed.set_result(None)


class Launcher:
    """Starts plugin calls as child processes and always cleans up after them.

    Args:
        kill_grace_s: after SIGTERM (timeout or cancellation), how long before SIGKILL.
        log_cap_bytes: how much of the end of stdout/stderr is kept in `RunResult.log_tail`.
        max_line_bytes: longer output lines are cut (one huge line must not eat the memory).
        result_cap_bytes: a bigger result is refused (error_type "ResultTooLarge").
        env_source: where the names of BASE_ENV and of a manifest's `env` are looked up
            (default: os.environ at run time); lets the app supply values read from `.env`.
    """

    def __init__(
        self,
        *,
        kill_grace_s: float = 5.0,
        log_cap_bytes: int = 1 << 20,
        max_line_bytes: int = 16 << 10,
        result_cap_bytes: int = 64 << 20,
        env_source: Mapping[str, str] | None = None,
    ) -> None:
        self.kill_grace_s = kill_grace_s
        self.log_cap_bytes = log_cap_bytes
        self.max_line_bytes = max_line_bytes
        self.result_cap_bytes = result_cap_bytes
        self.env_source = env_source
        self._shims: dict[Path, str] = {}  # interpreter -> shim file to run (see _shim_file)

    async def run(
        self,
        plugin: PluginInfo,
        params: dict[str, Any],
        context: dict[str, Any],
        *,
        python: PythonCmd,
        timeout_s: float | None,
        on_output: OutputFn | None = None,
    ) -> RunResult:
        """Run `plugin`'s entry point as `entry(**params, **context)` in a fresh child process.

        Plugin failures of every kind come back as a RunResult with ok=False. Cancelling the
        awaiting task stops the process group (SIGTERM, grace, SIGKILL) and re-raises.

        Raises:
            PluginStartError: the plugin is invalid, or the interpreter could not be started.
        """
        manifest = plugin.manifest
        if manifest is None:
            raise PluginStartError(f"plugin {plugin.name!r} is invalid: {plugin.reason}")
        request = {
            "plugin_dir": str(plugin.path.absolute()),  # getcwd only, no file I/O
            "entry_point": manifest.entry_point,
            "params": params,
            "context": context,
            "limits": manifest.limits.model_dump() if manifest.limits else None,
        }
        payload = json.dumps(request, default=_json_default).encode() + b"\n"
        env = self._child_env(plugin, context, python[0])
        capture = LogCapture(self.log_cap_bytes, self.max_line_bytes, on_output)
        loop = asyncio.get_running_loop()
        interpreter, flags = python
        shim = self._shims.get(interpreter)
        if shim is None:
            shim = self._shims[interpreter] = await asyncio.to_thread(_shim_file, interpreter)
        started = time.monotonic()
        read_fd, write_fd = os.pipe()
        try:
            transport, proto = await loop.subprocess_exec(
                lambda: _ChildProtocol(capture),
                str(interpreter),
                *flags,
                shim,
                str(write_fd),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=plugin.path,
                env=env,
                start_new_session=True,  # own process group: one killpg reaches every descendant
                pass_fds=(write_fd,),
            )
        except OSError as e:
            os.close(read_fd)
            raise PluginStartError(f"plugin {plugin.name!r}: cannot start {interpreter}: {e}") from e
        finally:
            os.close(write_fd)  # the child holds its copy; ours would keep the pipe from ever reaching EOF
        pid = transport.get_pid()
        logger.debug("plugins.started plugin=%s pid=%d job=%s", plugin.name, pid, context.get("job_id"))
        result_proto = ResultProtocol(self.result_cap_bytes)
        result_transport: asyncio.BaseTransport | None = None
        timed_out = False
        try:
            result_transport, _ = await loop.connect_read_pipe(lambda: result_proto, os.fdopen(read_fd, "rb", 0))
            # a cast, not an isinstance check: uvloop's pipe transports are not asyncio classes
            stdin = cast(asyncio.WriteTransport, transport.get_pipe_transport(0))
            stdin.write(payload)  # stdin stays open afterwards: it is the child's lifeline
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(proto.exited)
            except TimeoutError:
                timed_out = True
                logger.warning("plugins.timeout plugin=%s pid=%d after=%ss", plugin.name, pid, timeout_s)
                await self._stop(pid, proto)
        except asyncio.CancelledError:
            logger.info("plugins.cancelled plugin=%s pid=%d", plugin.name, pid)
            await self._stop(pid, proto)
            raise
        finally:
            _killpg(pid, signal.SIGKILL)  # stragglers: children the plugin left behind in its group
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(DRAIN_S):
                        await asyncio.gather(asyncio.shield(proto.closed), asyncio.shield(result_proto.done))
            finally:
                transport.close()
                if result_transport is not None:
                    result_transport.close()
        raw = result_proto.line()
        reply: Any = None
        if raw is not None:
            try:  # a big result is decoded off the loop
                reply = json.loads(raw) if len(raw) < _DECODE_INLINE_BYTES else await asyncio.to_thread(json.loads, raw)
            except ValueError:
                reply = None
        return _outcome(
            raw=raw,
            reply=reply,
            too_large=result_proto.too_large,
            exit_code=transport.get_returncode(),
            timed_out=timed_out,
            timeout_s=timeout_s,
            duration_s=time.monotonic() - started,
            log_tail=capture.tail(),
            pid=pid,
        )

    async def _stop(self, pid: int, proto: _ChildProtocol) -> None:
        """SIGTERM to the group, up to kill_grace_s for the child to exit, then SIGKILL to the group."""
        _killpg(pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(self.kill_grace_s):
                await asyncio.shield(proto.exited)
        except TimeoutError:
            logger.warning("plugins.kill pid=%d: no exit %ss after SIGTERM, sending SIGKILL", pid, self.kill_grace_s)
        finally:
            _killpg(pid, signal.SIGKILL)  # runs even if we are cancelled again while waiting
        await asyncio.shield(proto.exited)

    def _child_env(self, plugin: PluginInfo, context: dict[str, Any], interpreter: Path) -> dict[str, str]:
        source = os.environ if self.env_source is None else self.env_source
        declared = plugin.manifest.env if plugin.manifest else []
        env = {name: source[name] for name in (*BASE_ENV, *declared) if name in source}
        if plugin.venv is not None and plugin.venv in interpreter.parents:
            # as if activated: console scripts of the plugin's dependencies are found by name
            env["PATH"] = os.pathsep.join(filter(None, [str(plugin.venv / "bin"), env.get("PATH")]))
            env["VIRTUAL_ENV"] = str(plugin.venv)
        env.update(ORCH_PLUGIN=plugin.name, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
        if context.get("job_id") is not None:
            env["ORCH_JOB_ID"] = str(context["job_id"])
        return env


def _outcome(
    *,
    raw: bytes | None,
    reply: Any,
    too_large: bool,
    exit_code: int | None,
    timed_out: bool,
    timeout_s: float | None,
    duration_s: float,
    log_tail: str,
    pid: int,
) -> RunResult:
    """Turn what the child left behind into a RunResult: the first applicable explanation wins."""
    base = RunResult(
        ok=False, exit_code=exit_code, timed_out=timed_out, duration_s=duration_s, log_tail=log_tail, pid=pid
    )
    if raw is not None and not (isinstance(reply, dict) and "ok" in reply):
        base.error_type, base.error = "ProtocolError", f"the plugin process sent a malformed result: {raw[:200]!r}"
        return base
    if reply is not None:
        base.result = reply.get("result")
    if timed_out:
        base.error_type, base.error = "Timeout", f"timed out after {timeout_s}s"
    elif too_large:
        base.error_type, base.error = "ResultTooLarge", "the result is too large"
    elif reply is not None and not reply["ok"]:
        base.error_type = str(reply.get("error_type") or "Error")
        message = str(reply.get("error") or "").strip().splitlines()
        base.error = f"{base.error_type}: {message[0]}" if message else base.error_type
        base.traceback = reply.get("traceback")
    elif exit_code is not None and exit_code < 0:
        base.error_type, base.error = "Killed", f"killed by signal {_signal_name(-exit_code)}"
    elif exit_code != 0:
        what = "after returning a result" if reply is not None else "without a result"
        base.error_type, base.error = "Exit", f"exited with code {exit_code} {what}"
    elif reply is None:
        base.error_type, base.error = "ProtocolError", "exited without a result"
    else:
        base.ok = True
    return base


def _signal_name(number: int) -> str:
    try:
        sig = signal.Signals(number)
    except ValueError:
        return f"{number}"
    return sig.name + _SIGNAL_HINTS.get(sig, "")


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


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _json_default(value: Any) -> Any:
    """Context values such as datetimes in change events travel as ISO strings, anything else as str()."""
    isoformat = getattr(value, "isoformat", None)
    return isoformat() if callable(isoformat) else str(value)
