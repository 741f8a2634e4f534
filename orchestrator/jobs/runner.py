"""The one arq job function: run a plugin job through the launcher and record what happened.

Retries are ours, not arq's: a failed attempt is recorded, then re-scored in arq's queue with an
exponential backoff; when the attempts are used up the job is `failed` and stays
listable and re-runnable. A cancellation is either a user's cancel (arq abort: `cancelled`) or a
shutdown (put back in the queue; the interrupted attempt does not count).
Every outcome is one atomic script (JobStore.finish).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Literal

from redis.exceptions import RedisError

from orchestrator.errors import OrchestratorError
from orchestrator.jobs.model import JobRecord, JobState, RecordUpdate, now
from orchestrator.jobs.observer import JobObserver
from orchestrator.jobs.store import JobStore
from orchestrator.plugins.launcher import Launcher, RunResult
from orchestrator.plugins.registry import PluginRegistry
from orchestrator.tracing.facade import Span, Tracing

logger = logging.getLogger(__name__)

# Why a running job's task was cancelled: a user's cancel, a shutdown (put back), or this
# instance was presumed dead and the job was given to another (record nothing).
CancelReason = Literal["abort", "shutdown", "abandon"]

_MAX_BACKOFF_S = 3600.0
_LOG_FLUSH_S = 0.25
_MAX_LOG_LINES = 5000


def retry_delay(base_s: float, attempt: int) -> float:
    """Exponential backoff with jitter: base * 2^(attempt-1), scaled by a random 0.5-1.0."""
    exponential: float = base_s * 2.0 ** max(attempt - 1, 0)
    return min(exponential, _MAX_BACKOFF_S) * random.uniform(0.5, 1.0)  # noqa: S311  jitter, not a secret


class LogSink:
    """Collects one job's output lines until the runner's flusher writes them to its log stream.

    Lines are written in batches (one pipelined write per flush interval, never one round trip per
    line), and a job that prints nothing costs nothing.
    """

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self.pending: list[tuple[str, str]] = []

    def add(self, stream: str, line: str) -> None:
        self.pending.append((stream, line))

    async def flush(self) -> None:
        if self.pending:
            lines, self.pending = self.pending, []
            await self.store.append_log(self.job_id, lines, max_lines=_MAX_LOG_LINES)


class JobRunner:
    """Runs one claimed job per call.

    Args:
        store: the job records.
        registry: the plugins (their venvs are built on first use).
        launcher: starts the plugin's process.
        instance_id: recorded on the job and used by crash recovery.
        log_tail_bytes: how much of the output the record keeps.
        observer: counts and logs starts and ends.
        tracing: a `job` span per attempt and a `plugin` span around the child (no-op when off).
    """

    def __init__(
        self,
        store: JobStore,
        registry: PluginRegistry,
        launcher: Launcher,
        *,
        instance_id: str,
        log_tail_bytes: int,
        observer: JobObserver | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.launcher = launcher
        self.instance_id = instance_id
        self.log_tail_bytes = log_tail_bytes
        self.observer = observer or JobObserver()
        self.tracing = tracing or Tracing()
        self.completed = 0
        self.failed = 0
        self.retried = 0
        self.abandoned = 0
        self._sinks: set[LogSink] = set()

    async def run(self, record: JobRecord, *, why_cancelled: Callable[[], CancelReason]) -> None:
        """Run a claimed job to an outcome and record it.

        Args:
            record: the claimed job (see JobStore.claim).
            why_cancelled: tells, on cancellation, who cancelled it (see CancelReason).
        """
        ready_at = max(record.enqueued_at or 0.0, record.defer_until or 0.0)
        # One span per attempt, a child of the trigger's; a retry links to the first attempt.
        with self.tracing.span(
            "job",
            parent=record.trace,
            links=[record.trace_first] if record.attempt > 1 else (),
            kind="consumer",
            attributes={
                "job.id": record.job_id,
                "job.plugin": record.plugin,
                "job.queue": record.queue,
                "job.attempt": record.attempt,
                "job.source": record.source,
                "job.queue_wait_s": round(record.started_at - ready_at, 6) if record.started_at and ready_at else None,
            },
        ) as span:
            await self._run(record, span, why_cancelled)

    async def _run(self, record: JobRecord, span: Span, why_cancelled: Callable[[], CancelReason]) -> None:
        job_id = record.job_id
        # Logged on the loop's next turn, when the request is on its way to the plugin: the line
        # costs the job's round trip nothing (the same for the end line: after the outcome is stored).
        asyncio.get_running_loop().call_soon(self.observer.job_started, record)
        try:
            result = await self._launch(record)
        except Exception as e:
            # A bug or a lost Redis in our own launch path: record it as a failed attempt (retried
            # like any other) rather than leave the record in `running`.
            logger.exception("job %s: internal error while running %s", job_id, record.plugin)
            result = RunResult(ok=False, error=f"internal error: {type(e).__name__}: {e}", error_type="InternalError")
        except asyncio.CancelledError:
            why = why_cancelled()
            span.set("job.outcome", "cancelled" if why == "abort" else "interrupted" if why == "shutdown" else why)
            if why == "abandon":
                # The launcher stopped the process group on the way out; another instance owns
                # the job now, and the claim fence would refuse any outcome we wrote.
                self.abandoned += 1
                self.observer.job_ended(record, "abandoned", error="another instance runs it now")
            elif why == "abort":
                cancelled: RecordUpdate = {"error": "cancelled while running", "finished_at": now()}
                self.observer.job_ended(record, "cancelled")
                await asyncio.shield(self._record(record, "cancelled", cancelled))
            else:
                # Shutdown: back to the queue; the interrupted attempt does not count. Bounded: at
                # shutdown with Redis away, the heartbeat expiry puts it back instead.
                self.observer.job_ended(record, "interrupted")
                await asyncio.shield(self.put_back(record))
            raise
        if not result.ok:
            span.fail(result.error)
        span.set("job.outcome", await self._record_outcome(record, result, span))

    async def _launch(self, record: JobRecord) -> RunResult:
        job_id = record.job_id
        context = {
            **(record.context or {}),
            "job_id": job_id,
            "attempt": record.attempt,
            "queue": record.queue,
            "source": record.source,
        }
        sink = LogSink(self.store, job_id)
        self._sinks.add(sink)
        try:
            info = await self.registry.ensure_ready(record.plugin)
            assert info.manifest is not None and info.python is not None  # noqa: S101  ensure_ready raises otherwise
            # a workflow's step gets its predecessor's result (None for a first step) as `previous`
            params = record.params if record.workflow is None else {**record.params, "previous": record.previous}
            # Measured from this side whatever the plugin does; its own spans (if it uses
            # OpenTelemetry) are children of this one through TRACEPARENT.
            with self.tracing.span(
                "plugin", attributes={"plugin.name": record.plugin, "plugin.isolation": info.manifest.isolation}
            ) as span:
                result = await self.launcher.run(
                    info,
                    params,
                    context,
                    python=info.python,
                    timeout_s=record.timeout_s,
                    on_output=sink.add,
                    trace=span.carrier,
                )
                span.set("plugin.exit_code", result.exit_code)
                if not result.ok:
                    span.fail(result.error)
            if result.launch_s is not None:
                self.observer.launched(info.manifest.isolation, result.launch_s)
            return result
        except OrchestratorError as e:
            # not ready (venv build failed), gone from the plugins folder, interpreter missing
            return RunResult(ok=False, error=f"{type(e).__name__}: {e}", error_type=type(e).__name__)
        finally:
            self._sinks.discard(sink)
            if sink.pending:  # a quiet job (most) costs no task and no loop turn here
                with contextlib.suppress(RedisError, OSError):
                    await asyncio.shield(sink.flush())

    async def flush_logs(self) -> None:
        """The one background task that streams running jobs' output to Redis (for `jobs logs -f`)."""
        while True:
            await asyncio.sleep(_LOG_FLUSH_S)
            for sink in list(self._sinks):
                with contextlib.suppress(RedisError, OSError):
                    await sink.flush()

    async def _record_outcome(self, record: JobRecord, result: RunResult, span: Span) -> str:
        """Record the attempt's outcome; returns it (`succeeded`, `retried` or `failed`)."""
        fields: RecordUpdate = {
            "finished_at": now(),
            "duration_s": round(result.duration_s, 6),
            "exit_code": result.exit_code,
            "log_tail": result.log_tail[-self.log_tail_bytes :] if result.log_tail else None,
        }
        if result.ok:
            fields["result"] = result.result
            self.completed += 1
            try:
                await self._record(record, "succeeded", fields)
            finally:
                self.observer.job_ended(record, "succeeded")
            return "succeeded"
        fields.update({"error": result.error, "error_type": result.error_type, "traceback": result.traceback})
        attempt, max_retries = record.attempt, record.max_retries
        if attempt <= max_retries:
            delay = retry_delay(record.retry_backoff_s, attempt)
            fields["defer_until"] = retry_at = now() + delay
            self.retried += 1
            if record.trace_first is None and (first := span.carrier) is not None:
                fields["trace_first"] = first  # the later attempts' spans link to this one
            try:
                await self._record(record, "deferred", fields, retry_score_ms=int(retry_at * 1000))
            finally:
                self.observer.job_ended(record, "retried", error=result.error, delay_s=delay)
            return "retried"
        self.failed += 1
        try:
            await self._record(record, "failed", fields)
        finally:
            self.observer.job_ended(record, "failed", error=result.error)
        return "failed"

    async def put_back(self, record: JobRecord, *, frees_slot: bool = True) -> None:
        """Back to its queue as if never claimed (the attempt does not count). Bounded: with Redis
        away past 5 s it raises, and the job goes back when the reconciler or the reaper finds it.

        `frees_slot=False`: the job never took one of this worker's slots (a push it had no room for).
        """
        put_back: RecordUpdate = {"attempt": record.attempt - 1, "interrupted": now()}
        await self._record(record, "queued", put_back, give_up_after_s=5.0, frees_slot=frees_slot)

    async def _record(
        self,
        record: JobRecord,
        state: JobState,
        fields: RecordUpdate,
        *,
        retry_score_ms: int = 0,
        give_up_after_s: float | None = None,
        frees_slot: bool = True,
    ) -> None:
        """An outcome must reach Redis: if Redis is away, keep trying (with backoff) until it is back."""
        loop = asyncio.get_running_loop()
        deadline = None if give_up_after_s is None else loop.time() + give_up_after_s
        backoff_s = 0.2
        while True:
            try:
                if not await self.store.finish(
                    record, state, fields, retry_score_ms=retry_score_ms, frees_slot=frees_slot
                ):
                    logger.warning(
                        "job %s (%s): outcome %s not recorded: this instance's claim was released "
                        "(it was presumed dead) and the job belongs to another run now",
                        record.job_id, record.plugin, state,
                    )  # fmt: skip
                return
            except (RedisError, OSError) as e:
                if deadline is not None and loop.time() > deadline:
                    raise
                logger.warning("job %s: cannot record outcome yet (%s); retrying in %.1fs", record.job_id, e, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
