"""One warm child of a pooled plugin, as the launcher sees it: routes its output to the job it runs,
collects its result lines, and tells when a job is over (protocol in shim.py, policy in pool.py).

A job is over when its result line has arrived and, for each stream the shim marked (SYNC), the
end-of-job marker has been read: the lines before the marker are the job's. If a marker does not
come within DRAIN_S, the job ends anyway and the child is not reused (its streams are out of step).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Protocol, cast

from orchestrator.plugins.output import LogCapture
from orchestrator.plugins.process import DRAIN_S, killpg

logger = logging.getLogger(__name__)


class ChildOwner(Protocol):
    """What a warm child tells its pool."""

    def retire(self, child: PooledChild) -> None: ...

    def child_exited(self, child: PooledChild) -> None: ...

    def forget(self, child: PooledChild) -> None: ...


_HEAD_BYTES = 64  # enough for the `SYNC RSS_KB ` header of a result line
_EXITING = 4  # SYNC bit: the child exits after this result (shim.py)


class Job:
    """One run in a warm child, from its request to its result and the end of its output."""

    __slots__ = ("capture", "done", "head", "line", "need", "replied", "seen", "stale", "timer", "too_large")

    def __init__(self, capture: LogCapture, done: asyncio.Future[None]) -> None:
        self.capture = capture
        self.done = done
        self.replied = False
        self.line: bytes | None = None
        self.head = b""
        self.too_large = False
        self.need = 0  # streams (1 stdout, 2 stderr) whose end-of-job marker must arrive first
        self.seen = 0
        self.stale = False  # the child's streams are out of step: do not reuse it
        self.timer: asyncio.TimerHandle | None = None

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class ResultLines(asyncio.Protocol):
    """Splits a warm child's result pipe into lines, each capped at `cap_bytes`."""

    def __init__(self, child: PooledChild, cap_bytes: int) -> None:
        self.child = child
        self.cap_bytes = cap_bytes
        self._buf = bytearray()
        self._head = b""
        self._too_large = False

    def data_received(self, data: bytes) -> None:
        if not self._buf and not self._too_large and data.find(b"\n") == len(data) - 1 <= self.cap_bytes:
            self.child.result_line(data[:-1], b"", False)  # the usual case: one whole line in one read
            return
        start = 0
        while start < len(data):
            nl = data.find(b"\n", start)
            piece = data[start:] if nl == -1 else data[start:nl]
            if not self._too_large:
                self._buf += piece
                if len(self._buf) > self.cap_bytes:
                    self._head, self._too_large = bytes(self._buf[:_HEAD_BYTES]), True
                    self._buf.clear()
            if nl == -1:
                return
            if self._too_large:
                self.child.result_line(None, self._head, True)
            else:
                self.child.result_line(bytes(self._buf), b"", False)
            self._buf.clear()
            self._head, self._too_large = b"", False
            start = nl + 1


class PooledChild(asyncio.SubprocessProtocol):
    """One warm child: routes its output to the job it runs and tells when that job is over."""

    def __init__(self, pool: ChildOwner, marker: bytes, lifeline: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.pool = pool
        self.exited: asyncio.Future[None] = self.loop.create_future()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.transport: asyncio.SubprocessTransport | None = None
        self.result_transport: asyncio.BaseTransport | None = None
        self.pid = 0
        self.runs = 0
        self.rss_kb = 0
        self.idle_since = 0.0
        self.job: Job | None = None
        self._marker = marker
        self._lifeline: int | None = lifeline  # write end, never written: the child's watchdog reads it
        self._carry = {1: b"", 2: b""}  # the start of a marker cut by a read
        self._timers: list[asyncio.TimerHandle] = []

    # -- asyncio callbacks --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.SubprocessTransport, transport)
        self.pid = self.transport.get_pid()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if self._carry.get(fd):
            data, self._carry[fd] = self._carry[fd] + data, b""
        marker = self._marker
        while (at := data.find(marker)) != -1:
            self._output(fd, data[:at])
            self._end_of_output(fd)
            data = data[at + len(marker) :]
        # a marker cut in two by the read: keep back a tail that could be its start
        start = max(0, len(data) - len(marker) + 1)
        while (nul := data.find(b"\0", start)) != -1:
            if marker.startswith(data[nul:]):
                data, self._carry[fd] = data[:nul], data[nul:]
                break
            start = nul + 1
        if data:
            self._output(fd, data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if self.job is not None:
            self.job.capture.flush(fd)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)
        self._close_lifeline()
        if self.pid:
            killpg(self.pid, signal.SIGKILL)  # stragglers: what the plugin left in the group
        if self.job is not None:
            self.job.finish()
        self.pool.child_exited(self)
        self._timers.append(self.loop.call_later(DRAIN_S, self.close))  # an escaped grandchild may hold a pipe

    def connection_lost(self, exc: Exception | None) -> None:  # process gone and every pipe closed
        if not self.closed.done():
            self.closed.set_result(None)
        if self.job is None:
            self.close()

    # -- jobs --

    @property
    def alive(self) -> bool:
        return not self.exited.done()

    def start(self, payload: bytes, capture: LogCapture) -> Job:
        job = self.job = Job(capture, self.loop.create_future())
        assert self.transport is not None  # noqa: S101  the child is connected before it takes a job
        try:
            cast(asyncio.WriteTransport, self.transport.get_pipe_transport(0)).write(payload)
        except (RuntimeError, OSError, AttributeError) as e:
            # Died while idle and the loop has seen its pipes close but not yet its exit: the job
            # ends with the exit (as a crash); a child without its request pipe is no use anyway.
            logger.warning("plugins.request_not_delivered pid=%d error=%s", self.pid, e)
            killpg(self.pid, signal.SIGKILL)
        if self.exited.done():
            job.finish()
        return job

    def result_line(self, line: bytes | None, head: bytes, too_large: bool) -> None:
        job = self.job
        if job is None or job.replied:
            logger.warning("plugins.pool_unexpected_result pid=%d: the child is replaced", self.pid)
            self.pool.retire(self)
            return
        job.replied, job.too_large = True, too_large
        src = head or line or b""
        try:
            gap1 = src.index(b" ", 0, _HEAD_BYTES)
            gap2 = src.index(b" ", gap1 + 1, _HEAD_BYTES)
            sync, rss_kb = int(src[:gap1]), int(src[gap1 + 1 : gap2])
            job.line = None if line is None else line[gap2 + 1 :]
        except ValueError:
            sync, rss_kb, job.line, job.stale = 0, 0, line, True
        if sync & _EXITING:
            # the plugin closed its stdout/stderr: the child exits after this result (shim.py)
            job.stale, sync = True, sync & ~_EXITING
        job.need, self.rss_kb = sync, rss_kb
        if job.need & ~job.seen:
            job.timer = self.loop.call_later(DRAIN_S, self._markers_late, job)
        else:
            job.finish()

    def _markers_late(self, job: Job) -> None:
        logger.warning("plugins.pool_output_out_of_step pid=%d: the child is replaced", self.pid)
        job.stale = True
        job.finish()

    def _output(self, fd: int, data: bytes) -> None:
        if self.job is not None:
            self.job.capture.feed(fd, data)
        elif data.strip():
            logger.debug("plugins.pool_output_between_jobs pid=%d fd=%d bytes=%d", self.pid, fd, len(data))

    def _end_of_output(self, fd: int) -> None:
        job = self.job
        if job is None:
            return
        job.capture.flush(fd)
        job.seen |= fd
        if job.replied and not job.need & ~job.seen:
            if job.timer is not None:
                job.timer.cancel()
            job.finish()

    # -- stopping --

    def retire(self, grace_s: float) -> None:
        """Ask an idle child to stop (EOF on its requests), with SIGKILL to its group after grace_s."""
        if self.transport is not None:
            stdin = self.transport.get_pipe_transport(0)
            if stdin is not None:
                stdin.close()
        if self.alive:
            self._timers.append(self.loop.call_later(grace_s, killpg, self.pid, signal.SIGKILL))

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._close_lifeline()
        if self.transport is not None:
            self.transport.close()
        if self.result_transport is not None:
            self.result_transport.close()
        self.pool.forget(self)

    def _close_lifeline(self) -> None:
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
