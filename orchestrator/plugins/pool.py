"""`pooled` isolation: warm children of one plugin interpreter that run many jobs each, one at a time.

This module is the policy (which child runs a job, when children start, stop and are replaced);
warm.py is one child's protocol.

A warm child is `python <flags> shim.py RESULT_FD --pooled LIFELINE_FD TOKEN` (protocol in shim.py):
same process group, minimal environment, rlimits and parent-death handling as a one-shot child,
but it imports the plugin once and then serves one request after another.

- Growth: a job takes the most recently used idle child, or starts one; so the pool grows to the
  number of concurrent jobs of the plugin (or `pool.size`, then jobs wait for a free child).
- Shrinking: a child idle for `pool.idle_s` is stopped (oldest first, by one timer per pool).
- Recycling: after `pool.max_runs_per_process` runs, or when its resident memory passed
  `pool.max_memory_mb` after a run, a child is stopped between jobs and replaced on demand.
- Failures: a plugin exception is a result like any other and keeps the child. A timeout or a
  cancellation stops the child's whole group (SIGTERM, grace, SIGKILL); a crash (os._exit, a
  signal) fails only the job it was running. The next job gets a new child.
- Output: lines arriving between a job's request and its result belong to that job; the shim marks
  the end of a job's output on a stream the parent has not fully read yet (see shim.py). Output a
  child writes between jobs (a thread, a grandchild) is logged at debug level and dropped.
  Grandchildren a job leaves running live until their child is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from orchestrator.plugins.manifest import Manifest
from orchestrator.plugins.output import LogCapture, RunResult, outcome
from orchestrator.plugins.process import DRAIN_S, decode, killpg, spawn_child, stop_group
from orchestrator.plugins.warm import Job, PooledChild, ResultLines

logger = logging.getLogger(__name__)


class ChildPool:
    """The warm children of one plugin on one interpreter.

    Args:
        name: the plugin's name (for logs).
        manifest: the manifest the children were started for; a reload gives a new object, and the
            launcher then replaces the pool so new code is imported.
        cmd: interpreter, its flags and the shim.
        cwd: the plugin's folder.
        env: the children's environment at start (each request carries the job's own).
        grace_s: SIGTERM-to-SIGKILL grace on timeout, cancellation and close.
        result_cap_bytes: a longer result line is refused (ResultTooLarge).
    """

    def __init__(
        self,
        *,
        name: str,
        manifest: Manifest,
        cmd: Sequence[str],
        cwd: Path,
        env: dict[str, str],
        grace_s: float,
        result_cap_bytes: int,
    ) -> None:
        self.name = name
        self.manifest = manifest
        self.options = manifest.pool
        self.cmd = list(cmd)
        self.cwd = cwd
        self.env = env
        self.grace_s = grace_s
        self.result_cap_bytes = result_cap_bytes
        self.closed = False
        self.started = 0  # children started: for logs, tests and the bench
        self._idle: list[PooledChild] = []  # by idle_since: the most recently used last
        self._children: set[PooledChild] = set()  # every child not yet closed: busy, idle or stopping
        self._slots = asyncio.Semaphore(self.options.size) if self.options.size else None
        self._sweep: asyncio.TimerHandle | None = None

    @property
    def size(self) -> int:
        return len(self._children)

    async def run(self, payload: bytes, capture: LogCapture, *, timeout_s: float | None, started: float) -> RunResult:
        """Run one request in a warm child (started if none is idle); see the module docstring."""
        if self._slots is None:
            return await self._run(payload, capture, timeout_s, started)
        async with self._slots:
            return await self._run(payload, capture, timeout_s, started)

    async def _run(self, payload: bytes, capture: LogCapture, timeout_s: float | None, started: float) -> RunResult:
        child = self._take()
        if child is None:
            child = await self._spawn()
        job = child.start(payload, capture)
        launch_s = time.monotonic() - started
        timed_out = False
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    await job.done
            except TimeoutError:
                timed_out = True
                logger.warning("plugins.timeout plugin=%s pid=%d after=%ss", self.name, child.pid, timeout_s)
                await stop_group(child.pid, child.exited, self.grace_s)
        except asyncio.CancelledError:
            logger.info("plugins.cancelled plugin=%s pid=%d", self.name, child.pid)
            await stop_group(child.pid, child.exited, self.grace_s)
            await self._end(child, job, reuse=False)
            raise
        await self._end(child, job, reuse=not timed_out)
        exit_code: int | None = None
        reply = await decode(job.line)
        if isinstance(reply, dict) and "ok" in reply:
            exit_code = 0 if reply["ok"] else 1  # what a one-shot shim would have exited with
        elif not job.replied and child.transport is not None:
            exit_code = child.transport.get_returncode()
        result = outcome(
            raw=job.line,
            reply=reply,
            too_large=job.too_large,
            exit_code=exit_code,
            timed_out=timed_out,
            timeout_s=timeout_s,
            duration_s=time.monotonic() - started,
            log_tail=capture.tail(),
            pid=child.pid,
        )
        result.launch_s = launch_s
        return result

    async def _end(self, child: PooledChild, job: Job, *, reuse: bool) -> None:
        """Detach the job from its child; keep the child for the next job or stop it."""
        if not child.alive:
            with contextlib.suppress(TimeoutError):  # the last lines of a crashed child
                async with asyncio.timeout(DRAIN_S):
                    await asyncio.shield(child.closed)
        if job.timer is not None:
            job.timer.cancel()
        job.capture.flush(1)
        job.capture.flush(2)
        child.job = None
        child.runs += 1
        opts = self.options
        if not child.alive:
            child.close()
        elif not (reuse and job.replied and not job.stale and not self.closed):
            self.retire(child)
        elif opts.max_runs_per_process is not None and child.runs >= opts.max_runs_per_process:
            logger.info("plugins.pool_recycle plugin=%s pid=%d runs=%d", self.name, child.pid, child.runs)
            self.retire(child)
        elif opts.max_memory_mb is not None and child.rss_kb > opts.max_memory_mb * 1024:
            logger.info("plugins.pool_recycle plugin=%s pid=%d rss_mb=%d", self.name, child.pid, child.rss_kb // 1024)
            self.retire(child)
        else:
            child.idle_since = child.loop.time()
            self._idle.append(child)
            if self._sweep is None:
                self._schedule_sweep()

    def _take(self) -> PooledChild | None:
        while self._idle:
            child = self._idle.pop()
            if child.alive:
                return child
        return None

    async def _spawn(self) -> PooledChild:
        token = os.urandom(8).hex()
        life_r, life_w = os.pipe()
        child = PooledChild(self, b"\0orch-sync:" + token.encode(), life_w)
        try:
            _transport, result_transport = await spawn_child(
                child,
                lambda: ResultLines(child, self.result_cap_bytes),
                self.cmd,
                ("--pooled", str(life_r), token),
                name=self.name,
                cwd=self.cwd,
                env=self.env,
                pass_fds=(life_r,),
            )
        except BaseException:
            child.close()
            raise
        finally:
            os.close(life_r)
        child.result_transport = result_transport
        self._children.add(child)
        self.started += 1
        logger.debug("plugins.pool_started plugin=%s pid=%d children=%d", self.name, child.pid, self.size)
        return child

    # -- shrinking and stopping --

    def retire(self, child: PooledChild) -> None:
        if child in self._idle:
            self._idle.remove(child)
        child.retire(self.grace_s)

    def child_exited(self, child: PooledChild) -> None:
        if child in self._idle:
            self._idle.remove(child)
            logger.warning("plugins.pool_child_exited plugin=%s pid=%d while idle", self.name, child.pid)

    def forget(self, child: PooledChild) -> None:
        self._children.discard(child)

    def _schedule_sweep(self) -> None:
        if self._idle and not self.closed:
            when = self._idle[0].idle_since + self.options.idle_s
            self._sweep = asyncio.get_running_loop().call_at(when, self._sweep_idle)
        else:
            self._sweep = None

    def _sweep_idle(self) -> None:
        cutoff = asyncio.get_running_loop().time() - self.options.idle_s
        while self._idle and self._idle[0].idle_since <= cutoff:
            child = self._idle.pop(0)
            logger.debug("plugins.pool_shrink plugin=%s pid=%d", self.name, child.pid)
            child.retire(self.grace_s)
        self._schedule_sweep()

    def close_soon(self) -> None:
        """Stop idle children now and busy ones after their job (the plugin was reloaded)."""
        self.closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        while self._idle:
            self._idle.pop().retire(self.grace_s)

    async def aclose(self) -> None:
        """Stop every child (a running job's child gets SIGTERM, grace, SIGKILL) and wait until all are reaped."""
        self.close_soon()
        children = list(self._children)
        for child in children:
            if child.job is not None and child.alive:
                killpg(child.pid, signal.SIGTERM)
                child.retire(self.grace_s)
        await asyncio.gather(*(asyncio.shield(c.exited) for c in children))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_S):
                await asyncio.gather(*(asyncio.shield(c.closed) for c in children))
        for child in children:
            child.close()
