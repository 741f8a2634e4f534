"""Starting a child without forking the parent: `os.posix_spawn` plus a pidfd to learn of its exit.

uvloop (and asyncio) start a subprocess with fork/exec from the loop thread: forking copies the
parent's page tables, which for a 60 MB orchestrator costs ~1.6 ms of parent CPU per child and
holds the loop that long. glibc's posix_spawn uses CLONE_VM|CLONE_VFORK (no copy): ~0.1 ms. What
fork gave us for free is done elsewhere: `setsid` is a spawn attribute (own session and process
group, so one killpg reaches every descendant), the shim does its own chdir (`--cwd`), rlimits and
parent-death signal (it always did those), and the exit is seen through `os.pidfd_open` watched
with `loop.add_reader`, then reaped with a waitpid on that pid alone (no SIGCHLD handler, no
watcher thread, nothing that could reap another library's child).

`SpawnedProcess` is a `SubprocessTransport` with asyncio's callback order, so the protocols of
process.py and warm.py serve both this and the loop's own subprocess_exec (the fallback where
pidfd_open or posix_spawn is missing).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from functools import partial
from typing import Any

AVAILABLE = hasattr(os, "posix_spawn") and hasattr(os, "pidfd_open")


class _PipeProto(asyncio.Protocol):
    """Forwards one pipe's data and close to the process transport (as asyncio's pipe protos do)."""

    def __init__(self, proc: SpawnedProcess, fd: int) -> None:
        self.proc, self.fd = proc, fd

    def data_received(self, data: bytes) -> None:
        self.proc.protocol.pipe_data_received(self.fd, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.proc.pipe_lost(self.fd, exc)


class SpawnedProcess(asyncio.SubprocessTransport):
    """A posix_spawn'ed child: its stdin/stdout/stderr pipe transports and its pidfd."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.SubprocessProtocol, pid: int) -> None:
        super().__init__()
        self.loop, self.protocol, self.pid = loop, protocol, pid
        self.reaped: asyncio.Future[None] = loop.create_future()
        self._pipes: dict[int, asyncio.BaseTransport] = {}
        self._open: set[int] = set()  # pipes whose connection_lost has not come yet
        self._returncode: int | None = None
        self._connected = False  # protocol.connection_made called: callbacks may flow
        self._finished = False
        self._closed = False
        self._pidfd: int | None = os.pidfd_open(pid)
        loop.add_reader(self._pidfd, self._on_exit)

    # -- SubprocessTransport --

    def get_pid(self) -> int:
        return self.pid

    def get_returncode(self) -> int | None:
        return self._returncode

    def get_pipe_transport(self, fd: int) -> asyncio.BaseTransport | None:
        return self._pipes.get(fd)

    def send_signal(self, signal: int) -> None:
        if self._returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the pipes; a child still running is killed (as asyncio's transport does). Still reaped."""
        if self._closed:
            return
        self._closed = True
        for pipe in self._pipes.values():
            pipe.close()
        self.kill()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    # -- internals --

    def pipes_expected(self, fd: int) -> None:
        self._open.add(fd)

    def pipe_connected(self, fd: int, transport: asyncio.BaseTransport) -> None:
        self._pipes[fd] = transport
        if self._closed:
            transport.close()

    def connected(self) -> None:
        """Pipes are connected: tell the protocol, then anything that happened meanwhile."""
        self._connected = True
        self.protocol.connection_made(self)
        if self._returncode is not None:
            self.protocol.process_exited()
        self._try_finish()

    def pipe_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)
        if self._connected:
            self.protocol.pipe_connection_lost(fd, exc)
        self._try_finish()

    def _on_exit(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # someone else reaped it (a waitpid(-1) elsewhere): exit status unknown
            pid, status = self.pid, 255 << 8
        if pid == 0:
            return  # spurious wake-up: not exited yet
        self._drop_pidfd()
        self._returncode = os.waitstatus_to_exitcode(status)
        if not self.reaped.done():
            self.reaped.set_result(None)
        if self._connected:
            self.protocol.process_exited()
            self._try_finish()

    def _drop_pidfd(self) -> None:
        if self._pidfd is not None:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def _try_finish(self) -> None:
        if self._finished or not self._connected or self._returncode is None:
            return
        if self._open:
            return
        self._finished = True
        self.protocol.connection_lost(None)


async def posix_spawn_exec(
    protocol: asyncio.SubprocessProtocol,
    argv: Sequence[str],
    *,
    env: dict[str, str],
    pass_fds: Sequence[int],
) -> SpawnedProcess:
    """Start argv in a new session with stdin/stdout/stderr pipes; `pass_fds` stay open in the child.

    A start cancelled or failing after the child exists kills its group and waits (bounded) until
    it is reaped, so no caller sees a child outlive its spawn.

    Raises:
        OSError: the program could not be started.
    """
    loop = asyncio.get_running_loop()
    fds: list[int] = []
    try:
        in_r, in_w = os.pipe()
        fds += (in_r, in_w)
        out_r, out_w = os.pipe()
        fds += (out_r, out_w)
        err_r, err_w = os.pipe()
        fds += (err_r, err_w)
        # Our fds are close-on-exec (PEP 446); a dup2 onto itself clears the flag in the child only
        # (glibc >= 2.29), so nothing here is made inheritable in the parent, where another thread
        # could leak it.
        actions: list[tuple[Any, ...]] = [
            (os.POSIX_SPAWN_DUP2, in_r, 0),
            (os.POSIX_SPAWN_DUP2, out_w, 1),
            (os.POSIX_SPAWN_DUP2, err_w, 2),
            *((os.POSIX_SPAWN_DUP2, fd, fd) for fd in pass_fds),
        ]
        spawn = os.posix_spawn if "/" in argv[0] else os.posix_spawnp
        pid = spawn(argv[0], list(argv), env, file_actions=actions, setsid=True)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    proc = SpawnedProcess(loop, protocol, pid)
    files = {0: os.fdopen(in_w, "wb", 0), 1: os.fdopen(out_r, "rb", 0), 2: os.fdopen(err_r, "rb", 0)}
    try:
        for fd, file in list(files.items()):
            proc.pipes_expected(fd)
            transport: asyncio.BaseTransport
            if fd == 0:
                transport, _ = await loop.connect_write_pipe(partial(_PipeProto, proc, fd), file)
            else:
                transport, _ = await loop.connect_read_pipe(partial(_PipeProto, proc, fd), file)
            proc.pipe_connected(fd, transport)
            del files[fd]  # owned by its transport now
    except BaseException:
        await _abort(proc, files)
        raise
    proc.connected()
    return proc


async def _abort(proc: SpawnedProcess, files: dict[int, Any]) -> None:
    """A start that did not finish: kill the group, close everything, wait (bounded) for the reap."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for file in files.values():
        with contextlib.suppress(OSError):
            file.close()
    proc.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            await asyncio.shield(proc.reaped)
