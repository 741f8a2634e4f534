"""Child-process plumbing shared by both isolation modes, and `process` isolation: one child per run.

A one-shot child is `python <flags> shim.py RESULT_FD`: the request goes in on stdin (kept open
afterwards as a lifeline, see shim.py), the result comes back on a separate pipe, and stdout/stderr
are read line by line as they come. Whatever the plugin does (hang, crash, segfault, print forever,
fork), `run_oneshot` returns a RunResult and leaves nothing of the process group running.

Prestart (`Spares`): for a plugin that ran recently, one child is started ahead of its request and
waits on stdin, already past interpreter start-up; it still runs exactly one job and exits. Its
environment is the plugin's; the job's own values (ORCH_JOB_ID, ...) travel in the request and the
shim puts them in os.environ before it imports the plugin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from orchestrator.errors import PluginStartError
from orchestrator.plugins import spawn
from orchestrator.plugins.output import LogCapture, ResultProtocol, RunResult, outcome

logger = logging.getLogger(__name__)

# After the child exits, how long its pipes may stay open (held by an escaped grandchild) before we stop reading.
DRAIN_S = 1.0
_DECODE_INLINE_BYTES = 1 << 20

SpareKey = tuple[str, str, str, tuple[str, ...]]  # plugin name, folder, interpreter, flags


def killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def stop_group(pid: int, exited: asyncio.Future[None], grace_s: float) -> None:
    """SIGTERM to the group, up to grace_s for the child to exit, then SIGKILL to the group."""
    killpg(pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(grace_s):
            await asyncio.shield(exited)
    except TimeoutError:
        logger.warning("plugins.kill pid=%d: no exit %ss after SIGTERM, sending SIGKILL", pid, grace_s)
    finally:
        killpg(pid, signal.SIGKILL)  # runs even if we are cancelled again while waiting
    await asyncio.shield(exited)


async def decode(raw: bytes | None) -> Any:
    """The result line as JSON (None if absent or malformed); a big one is decoded off the loop."""
    if raw is None:
        return None
    try:
        return json.loads(raw) if len(raw) < _DECODE_INLINE_BYTES else await asyncio.to_thread(json.loads, raw)
    except ValueError:
        return None


class ChildProtocol(asyncio.SubprocessProtocol):
    """Feeds stdout/stderr to the capture as data arrives; no reader tasks, no buffer limits."""

    def __init__(self, capture: LogCapture) -> None:
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.capture = capture  # replaced when a prestarted child is given its job

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.capture.feed(fd, data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.capture.flush(fd)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:  # process gone and every pipe closed
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass(eq=False)
class OneShot:
    """A started one-shot child and its result pipe."""

    transport: asyncio.SubprocessTransport
    proto: ChildProtocol
    result: ResultProtocol
    result_transport: asyncio.BaseTransport
    pid: int

    def close(self) -> None:
        self.transport.close()
        self.result_transport.close()


class Spawnable(Protocol):
    """A subprocess protocol that tells when its process has exited."""

    exited: asyncio.Future[None]


async def spawn_child(
    proto: Spawnable,
    result_factory: Callable[[], asyncio.Protocol],
    cmd: Sequence[str],
    extra_args: Sequence[str],
    *,
    name: str,
    cwd: Path,
    env: dict[str, str],
    pass_fds: Sequence[int] = (),
) -> tuple[asyncio.SubprocessTransport, asyncio.BaseTransport]:
    """Start `cmd RESULT_FD *extra_args` in its own process group and connect its result pipe.

    Raises:
        PluginStartError: the interpreter could not be started.
    """
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    try:
        if spawn.AVAILABLE:  # no fork of this process: see spawn.py
            transport: asyncio.SubprocessTransport = await spawn.posix_spawn_exec(
                cast(asyncio.SubprocessProtocol, proto),
                [*cmd, str(write_fd), "--cwd", str(cwd), *extra_args],
                env=env,
                pass_fds=(write_fd, *pass_fds),
            )
        else:
            transport = await _loop_spawn(proto, cmd, extra_args, write_fd, cwd=cwd, env=env, pass_fds=pass_fds)
    except BaseException as e:
        os.close(read_fd)
        if isinstance(e, OSError):
            raise PluginStartError(f"plugin {name!r}: cannot start {cmd[0]}: {e}") from e
        raise
    finally:
        os.close(write_fd)  # the child holds its copy; ours would keep the pipe from ever reaching EOF
    pipe = os.fdopen(read_fd, "rb", 0)
    try:
        result_transport, _ = await loop.connect_read_pipe(result_factory, pipe)
    except BaseException:  # e.g. cancelled: the child must not outlive its spawn
        try:
            if not pipe.closed:  # asyncio closes the file object; uvloop closes the fd but not the object
                with contextlib.suppress(OSError):
                    pipe.close()
        finally:
            await _kill_and_reap(transport, proto)
        raise
    return transport, result_transport


async def _loop_spawn(
    proto: Spawnable,
    cmd: Sequence[str],
    extra_args: Sequence[str],
    write_fd: int,
    *,
    cwd: Path,
    env: dict[str, str],
    pass_fds: Sequence[int],
) -> asyncio.SubprocessTransport:
    """The loop's own fork/exec start, where posix_spawn or pidfd_open is missing."""
    loop = asyncio.get_running_loop()
    starting = loop.create_task(
        loop.subprocess_exec(
            lambda: cast(asyncio.SubprocessProtocol, proto),
            *cmd,
            str(write_fd),
            *extra_args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,  # own process group: one killpg reaches every descendant
            pass_fds=(write_fd, *pass_fds),
        )
    )
    try:
        transport, _ = await asyncio.shield(starting)
    except asyncio.CancelledError:
        # uvloop's subprocess_exec, cancelled mid-start, closes the half-started child without
        # waiting for it (it exits a moment later, on its stdin's EOF): let the start finish,
        # then stop and reap the child here, so no caller sees it outlive its cancelled spawn.
        with contextlib.suppress(Exception):
            started, _ = await starting
            await _kill_and_reap(started, proto)
        raise
    return transport


async def _kill_and_reap(transport: asyncio.SubprocessTransport, proto: Spawnable) -> None:
    """SIGKILL a child that never got its request, and wait (bounded) until it is reaped."""
    killpg(transport.get_pid(), signal.SIGKILL)
    transport.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_S):
            await asyncio.shield(proto.exited)  # reaped, not only signalled


async def spawn_oneshot(
    cmd: Sequence[str], *, name: str, cwd: Path, env: dict[str, str], capture: LogCapture, result_cap_bytes: int
) -> OneShot:
    """Start a one-shot child; it waits for its request on stdin."""
    result = ResultProtocol(result_cap_bytes)
    proto = ChildProtocol(capture)
    transport, result_transport = await spawn_child(proto, lambda: result, cmd, (), name=name, cwd=cwd, env=env)
    return OneShot(transport, proto, result, result_transport, transport.get_pid())


async def run_oneshot(
    child: OneShot, payload: bytes, *, timeout_s: float | None, grace_s: float, name: str, started: float
) -> RunResult:
    """Send the request and wait for the child to exit; timeout or cancellation stops its group."""
    pid, proto = child.pid, child.proto
    timed_out = False
    launch_s: float | None = None
    try:
        # a cast, not an isinstance check: uvloop's pipe transports are not asyncio classes
        stdin = cast(asyncio.WriteTransport, child.transport.get_pipe_transport(0))
        launch_s = time.monotonic() - started
        try:
            stdin.write(payload)  # stdin stays open afterwards: it is the child's lifeline
        except (RuntimeError, OSError) as e:
            # The child died before its request (a prestarted spare killed meanwhile): the outcome
            # below reports how it exited; this must not escape as an internal error.
            logger.warning("plugins.request_not_delivered plugin=%s pid=%d error=%s", name, pid, e)
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(proto.exited)
        except TimeoutError:
            timed_out = True
            logger.warning("plugins.timeout plugin=%s pid=%d after=%ss", name, pid, timeout_s)
            await stop_group(pid, proto.exited, grace_s)
    except asyncio.CancelledError:
        logger.info("plugins.cancelled plugin=%s pid=%d", name, pid)
        await stop_group(pid, proto.exited, grace_s)
        raise
    finally:
        killpg(pid, signal.SIGKILL)  # stragglers: children the plugin left behind in its group
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_S):
                    await asyncio.gather(asyncio.shield(proto.closed), asyncio.shield(child.result.done))
        finally:
            child.close()
    raw = child.result.line()
    result = outcome(
        raw=raw,
        reply=await decode(raw),
        too_large=child.result.too_large,
        exit_code=child.transport.get_returncode(),
        timed_out=timed_out,
        timeout_s=timeout_s,
        duration_s=time.monotonic() - started,
        log_tail=proto.capture.tail(),
        pid=pid,
    )
    result.launch_s = launch_s
    return result


class Spares:
    """At most one prestarted one-shot child per busy key (plugin, folder, interpreter, flags).

    A key is busy when it ran within `idle_s` before; an unused spare is stopped after `idle_s`.
    Spares are started by background tasks that `aclose` cancels and awaits.
    """

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self._ready: dict[SpareKey, tuple[OneShot, asyncio.TimerHandle]] = {}
        self._starting: dict[SpareKey, asyncio.Task[None]] = {}
        self._last_run: dict[SpareKey, float] = {}
        self._dying: set[OneShot] = set()  # stopped, not yet reaped
        self._closed = False

    def take(self, key: SpareKey) -> OneShot | None:
        entry = self._ready.pop(key, None)
        if entry is None:
            return None
        child, timer = entry
        timer.cancel()
        if not child.proto.exited.done():
            return child
        self._discard(child)
        return None

    def ready_count(self) -> int:
        return len(self._ready)

    def busy(self, key: SpareKey) -> bool:
        """Record a run of `key`; True if it also ran within idle_s before."""
        now = time.monotonic()
        last = self._last_run.get(key)
        self._last_run[key] = now
        return last is not None and now - last < self.idle_s

    def replenish(self, key: SpareKey, spawn: Callable[[], Awaitable[OneShot]]) -> None:
        """Start a spare for `key` in the background unless one is ready or starting."""
        if self._closed or key in self._ready or key in self._starting:
            return
        task = asyncio.get_running_loop().create_task(self._start(key, spawn), name=f"plugin-prestart:{key[0]}")
        self._starting[key] = task

    async def _start(self, key: SpareKey, spawn: Callable[[], Awaitable[OneShot]]) -> None:
        try:
            child = await spawn()
        except PluginStartError as e:
            logger.warning("plugins.prestart_failed plugin=%s error=%s", key[0], e)
            return
        except Exception:  # a spare is an optimisation: its failure must not surface as an unretrieved task error
            logger.exception("plugins.prestart_failed plugin=%s", key[0])
            return
        finally:
            self._starting.pop(key, None)
        if self._closed or key in self._ready:
            self._discard(child)
            return
        timer = asyncio.get_running_loop().call_later(self.idle_s, self._expire, key, child)
        self._ready[key] = (child, timer)

    def _expire(self, key: SpareKey, child: OneShot) -> None:
        entry = self._ready.get(key)
        if entry is not None and entry[0] is child:
            del self._ready[key]
            self._discard(child)

    def _discard(self, child: OneShot) -> None:
        """Stop a child that never got a request (it has no plugin code running: SIGKILL is fine)."""
        killpg(child.pid, signal.SIGKILL)
        child.close()
        if not child.proto.exited.done():
            self._dying.add(child)
            child.proto.exited.add_done_callback(lambda _f: self._dying.discard(child))

    async def aclose(self) -> None:
        """Cancel spares being started, stop the ready ones, and wait until every one is reaped."""
        self._closed = True
        starting = list(self._starting.values())
        for task in starting:
            task.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        for child, timer in self._ready.values():
            timer.cancel()
            self._discard(child)
        self._ready.clear()
        await asyncio.gather(*(asyncio.shield(c.proto.exited) for c in list(self._dying)))
