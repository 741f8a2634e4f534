"""arq wiring: one arq Worker per served queue, woken by Redis pub/sub instead of a poll loop.

The data stays arq's: payloads in `arq:job:<id>`, one sorted set per queue scored by due time,
`arq:in-progress:<id>` while a job runs, aborts through `arq:abort`, arq's health-check key. What
changes is how a worker moves a job along, because arq's own path costs a 500 ms poll and about
15 Redis commands in 5 round trips per job before the job record is even touched:

- a worker sleeps until an enqueue publishes on its queue's wake channel, one of its jobs ends,
  or the next deferred job is due (with a fallback tick for a missed message);
- it claims every job it has room for in one script (the in-progress key, set NX, and the record
  move to `running` together), and finishes each in one more;
- it offers its free slots in Redis (`Keys.offers`): an enqueue of a job due now and first in
  line then claims it for the worker and publishes it on the worker's push channel, so an idle
  worker starts a job with no round trip of its own; claims and finishes keep the offer equal to
  the free slots, a push that finds no room is put back, and the offer is withdrawn at shutdown;
- the job tasks belong to the pool's TaskGroup, not to loose `create_task` calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from arq.connections import ArqRedis
from arq.utils import timestamp_ms
from arq.worker import Worker, func
from redis.exceptions import RedisError
from typing_extensions import TypedDict

from orchestrator.components import BaseComponent
from orchestrator.jobs.model import JobRecord, Keys
from orchestrator.jobs.runner import CancelReason, JobRunner
from orchestrator.jobs.store import IN_PROGRESS_TTL_MS, JobStore
from orchestrator.jobs.submit import ARQ_FUNCTION
from orchestrator.redis.subscribe import listen_forever

logger = logging.getLogger(__name__)


async def _not_called(ctx: dict[str, Any], job_id: str) -> None:
    """arq wants a function table; our jobs never reach arq's run_job (see the module docstring)."""
    raise RuntimeError(f"job {job_id} reached arq's run_job")


class QueueWorker(Worker):
    """An arq Worker for one named queue, driven by events.

    Args:
        queue: the queue name (the arq queue key is derived from it).
        concurrency: jobs run at once from this queue in this process.
        redis: the shared connection pool (owned by the app).
        runner: runs one claimed job.
        store: the job records.
        instance_id: who claims the jobs.
        poll_delay_s: the fallback tick.
        push_channel: where enqueues send the jobs they claim for this process's workers.
    """

    def __init__(
        self,
        *,
        queue: str,
        concurrency: int,
        redis: ArqRedis,
        runner: JobRunner,
        store: JobStore,
        instance_id: str,
        poll_delay_s: float,
        push_channel: str,
    ) -> None:
        super().__init__(
            functions=[func(_not_called, name=ARQ_FUNCTION)],
            queue_name=Keys.queue(queue),
            redis_pool=redis,
            handle_signals=False,
            max_jobs=concurrency,
            poll_delay=poll_delay_s,
            allow_abort_jobs=True,
            health_check_interval=60,
        )
        self.queue = queue
        self.runner = runner
        self.store = store
        self.instance_id = instance_id
        self.wake = asyncio.Event()
        # The id the last wake-up named, and whether this worker's last look left nothing ready:
        # then that id is most likely the queue's head and is claimed without reading first.
        self.hint: str | None = None
        self._drained = False
        self._abort_requested = False
        self.abandoned: set[str] = set()
        self._tg: asyncio.TaskGroup | None = None
        self.push_channel = push_channel
        self.offer_due = False  # (re)subscribed to the push channel: offer the free slots again

    async def serve(self, tg: asyncio.TaskGroup) -> None:
        """Claim and start jobs until cancelled; job tasks go into `tg`."""
        self._tg = tg
        backoff_s = 0.1
        while True:
            self.wake.clear()
            try:
                next_due_s = await self._poll_iteration_timed()
                backoff_s = 0.1
            except (RedisError, OSError) as e:
                # Redis went away: keep the running jobs, retry with backoff, never crash the process.
                logger.warning("worker.%s redis_error=%s retry_in=%.1fs", self.queue, e, backoff_s)
                next_due_s, backoff_s = backoff_s, min(backoff_s * 2, 5.0)
            try:
                async with asyncio.timeout(min(self.poll_delay_s, next_due_s)):
                    await self.wake.wait()
            except TimeoutError:
                # Idle tick: also catch an abort whose message arrived before the job had started.
                self._abort_requested = True

    async def _poll_iteration_timed(self) -> float:
        """One pass (one round trip); returns how long until the next deferred job is due, or the poll delay."""
        wait_s = self.poll_delay_s
        free = self.max_jobs - self.job_counter
        hint, self.hint = self.hint, None
        if self.offer_due and self.allow_pick_jobs:
            # Before the look: the jobs it claims then come out of the offer (the claim script).
            # Cleared only once written: a Redis error here is retried with the next pass.
            await self.store.offer(self.queue, self.push_channel, free)
            self.offer_due = False
        if self.allow_pick_jobs and free > 0:
            look_ahead_ms = int(self.poll_delay_s * 1000)
            head = None
            if hint is not None and self._drained:
                head = await self.store.claim_head(
                    self.queue,
                    hint,
                    self.instance_id,
                    in_progress_ttl_ms=IN_PROGRESS_TTL_MS,
                    look_ahead_ms=look_ahead_ms,
                )
            if head is not None:
                records, more, next_due_ms = head
            else:
                records, next_due_ms = await self.store.claim(
                    self.queue,
                    free,
                    self.instance_id,
                    in_progress_ttl_ms=IN_PROGRESS_TTL_MS,
                    look_ahead_ms=look_ahead_ms,
                )
                more = len(records) == free
            for record in records:
                self._start(record)
            self._drained = not more
            if more:
                self.wake.set()  # the queue may hold more: look again (now, or when a slot frees)
            elif next_due_ms is not None:
                wait_s = max((next_due_ms - timestamp_ms()) / 1000, 0.001)
        if self._abort_requested:
            self._abort_requested = False
            await self._cancel_aborted_jobs()
        # arq's health-check key (written once a minute). Not arq's heart_beat(): that also walks
        # arq's cron table, which is empty here (schedules are ours), on every pass.
        await self.record_health()
        return wait_s

    def _start(self, record: JobRecord) -> None:
        assert self._tg is not None  # noqa: S101  set in run() before any job starts
        job_id = record.job_id
        self.job_counter += 1
        task = self._tg.create_task(self._run(record), name=f"job:{job_id}")
        self.tasks[job_id] = task
        self.job_tasks[job_id] = task  # arq's abort path cancels what it finds here

    async def _run(self, record: JobRecord) -> None:
        job_id = record.job_id
        try:
            await self.runner.run(record, why_cancelled=lambda: self._why_cancelled(job_id))
        except asyncio.CancelledError:
            pass  # recorded by the runner (cancelled, or put back on shutdown); the task just ends
        except Exception:
            # The runner records every outcome itself; reaching here means Redis is unreachable.
            # The job stays claimed by this instance and is put back when the instance stops.
            logger.exception("job %s: could not record its outcome", job_id)
        finally:
            was_full = self.job_counter >= self.max_jobs
            self.job_counter -= 1
            self.tasks.pop(job_id, None)
            self.job_tasks.pop(job_id, None)
            self.aborting_tasks.discard(job_id)
            self.abandoned.discard(job_id)
            if was_full or not self._drained:
                # A slot is free and the queue may hold jobs no slot was left for: look now. A
                # worker that had room at its last look, and found nothing more, is told of new
                # jobs by their wake-up instead (one read less per job while it keeps up).
                self.wake.set()

    def on_push(self, record: JobRecord) -> None:
        """An enqueue claimed `record` for this worker (see the module docstring)."""
        if self._tg is None:  # not serving yet (an offer left by an earlier run with this instance id)
            logger.warning("worker.%s push of %s before serving: left to the reconciler", self.queue, record.job_id)
            return
        if self.allow_pick_jobs and self.job_counter < self.max_jobs:
            self._start(record)
            return
        # No room (the offer ran ahead of a claim in flight) or stopping: back to the queue, as
        # if never claimed; its wake-up brings a worker with room.
        self._tg.create_task(self._put_back_push(record), name=f"push-back:{record.job_id}")

    async def _put_back_push(self, record: JobRecord) -> None:
        try:
            await self.runner.put_back(record, frees_slot=False)
        except (RedisError, OSError) as e:
            # Redis away: the record says this instance runs the job while it does not; the
            # reconciler puts such a job back (jobs/reconcile.py).
            logger.warning("worker.%s push of %s not put back yet: %s", self.queue, record.job_id, e)

    async def withdraw_offer(self) -> None:
        with contextlib.suppress(RedisError, OSError):  # Redis away: a push then finds no reader, or no room
            await self.store.withdraw_offer(self.queue, self.push_channel)

    def request_abort(self) -> None:
        self._abort_requested = True
        self.wake.set()

    def stop_picking(self) -> None:
        self.allow_pick_jobs = False

    def cancel_running(self) -> None:
        for task in self.job_tasks.values():
            task.cancel()

    def abandon_running(self) -> int:
        ids = list(self.job_tasks)
        self.abandoned.update(ids)
        for job_id in ids:
            self.job_tasks[job_id].cancel()
        return len(ids)

    def _why_cancelled(self, job_id: str) -> CancelReason:
        if job_id in self.abandoned:
            return "abandon"
        return "abort" if job_id in self.aborting_tasks else "shutdown"

    async def wait_idle(self) -> None:
        while pending := [t for t in self.tasks.values() if not t.done()]:
            await asyncio.wait(pending)


class WorkersStatus(TypedDict):
    """`/status` `workers`: this process's job attempts since it started, and those running now."""

    completed: int
    failed: int
    retried: int
    abandoned: int
    """Attempts stopped without an outcome: this instance was presumed dead and its jobs released."""
    running: int


class WorkerPool(BaseComponent):
    """Every queue worker of this process, their job tasks, the pub/sub listener that wakes them
    and the runner's log flusher.

    Args:
        redis: the shared connection pool.
        queues: queue name -> concurrency, for the queues this process serves.
        runner: runs one job.
        store: the job records.
        instance_id: this process.
        poll_delay_s: the fallback tick of each worker.
        shutdown_grace_s: how long `drain()` lets running jobs finish before it stops them.
    """

    name = "workers"

    def __init__(
        self,
        redis: ArqRedis,
        queues: dict[str, int],
        runner: JobRunner,
        store: JobStore,
        *,
        instance_id: str,
        poll_delay_s: float,
        shutdown_grace_s: float = 30.0,
    ) -> None:
        self.redis = redis
        self.runner = runner
        self.shutdown_grace_s = shutdown_grace_s
        self.push_channel = Keys.push_channel(instance_id, uuid.uuid4().hex[:8])
        self.workers = {
            q: QueueWorker(
                queue=q,
                concurrency=c,
                redis=redis,
                runner=runner,
                store=store,
                instance_id=instance_id,
                poll_delay_s=poll_delay_s,
                push_channel=self.push_channel,
            )
            for q, c in queues.items()
        }
        self._serving: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._serving = [
                tg.create_task(self._listen(), name="workers:pubsub"),
                tg.create_task(self.runner.flush_logs(), name="workers:log-flusher"),
            ]
            for q, worker in self.workers.items():
                self._serving.append(tg.create_task(worker.serve(tg), name=f"worker:{q}"))

    async def _listen(self) -> None:
        channels = {Keys.wake_channel(q): w for q, w in self.workers.items()}
        push_channel = self.push_channel

        def on_message(channel: str, data: bytes) -> None:
            if channel == push_channel:
                record = JobStore.pushed_record(data)
                worker = self.workers.get(record.queue) if record is not None else None
                if record is None or worker is None:
                    logger.warning("workers: unreadable push %r", data[:200])
                    return
                worker.on_push(record)
            elif channel == Keys.cancel_channel:
                job_id = data.decode()
                for worker in self.workers.values():
                    if job_id in worker.job_tasks:
                        worker.request_abort()
            elif (woken := channels.get(channel)) is not None:
                woken.hint = data.decode()
                woken.wake.set()

        def on_subscribed() -> None:
            for worker in self.workers.values():
                worker.offer_due = True  # pushes can reach it (again)
                worker.wake.set()  # anything enqueued while we were not subscribed

        subscribed = [Keys.cancel_channel, *channels, push_channel]
        await listen_forever(self.redis, subscribed, on_message, name="workers", on_subscribed=on_subscribed)

    async def drain(self) -> None:
        """Stop taking jobs; let running ones finish for the grace; then stop them (they go back to the queue)."""
        grace_s = self.shutdown_grace_s
        for worker in self.workers.values():
            worker.stop_picking()
        await asyncio.gather(*(w.withdraw_offer() for w in self.workers.values()))
        running = sum(len(w.job_tasks) for w in self.workers.values())
        if running:
            logger.info("shutdown: waiting up to %.0fs for %d running job(s)", grace_s, running)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await asyncio.gather(*(w.wait_idle() for w in self.workers.values()))
        left = sum(len(w.job_tasks) for w in self.workers.values())
        if left:
            logger.warning("shutdown: grace over, stopping %d job(s); they go back to the queue", left)
            for worker in self.workers.values():
                worker.cancel_running()
            await asyncio.gather(*(w.wait_idle() for w in self.workers.values()))
        for task in self._serving:
            task.cancel()

    def running_job_ids(self) -> set[str]:
        """The jobs this process runs now, across its queues (the reconciler compares Redis with it)."""
        return {job_id for worker in self.workers.values() for job_id in worker.job_tasks}

    def abandon_running(self) -> int:
        """This instance was declared dead (its registry entry is gone) and its jobs were given to
        others: stop their process groups and record nothing (the claim fence would refuse it)."""
        count = 0
        for worker in self.workers.values():
            count += worker.abandon_running()
        return count

    def stats(self) -> WorkersStatus:
        return {
            "completed": self.runner.completed,
            "failed": self.runner.failed,
            "retried": self.runner.retried,
            "abandoned": self.runner.abandoned,
            "running": sum(len(w.job_tasks) for w in self.workers.values()),
        }

    async def status(self) -> WorkersStatus:
        return self.stats()
