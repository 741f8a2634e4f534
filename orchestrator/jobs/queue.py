"""arq wiring: one arq Worker per served queue, woken by Redis pub/sub instead of a poll loop.

arq polls its queue every `poll_delay` (0.5 s by default: a 500 ms round trip). Here a worker
sleeps until an enqueue publishes on its queue's wake channel, one of its jobs finishes, or a
fallback tick passes (deferred jobs becoming due, a missed message after a Redis reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from arq.connections import ArqRedis
from arq.utils import timestamp_ms
from arq.worker import Worker, func
from redis.exceptions import RedisError

from orchestrator.jobs.model import Keys
from orchestrator.jobs.runner import JobRunner
from orchestrator.jobs.state import JobStore
from orchestrator.jobs.submit import ARQ_FUNCTION, json_bytes

logger = logging.getLogger(__name__)

# Plugin time limits are enforced by the launcher; arq's own limits must never fire first.
_ARQ_TIMEOUT_S = 30 * 24 * 3600
_ARQ_MAX_TRIES = 10**9


class QueueWorker(Worker):
    """An arq Worker for one named queue, driven by events instead of a fixed poll.

    Args:
        queue: the queue name (the arq queue key is derived from it).
        concurrency: jobs run at once from this queue in this process.
        redis: the shared connection pool (owned by the app).
        runner: the job function.
        store: the job records (to record jobs arq gives up on before our code runs).
        poll_delay_s: the fallback tick.
    """

    def __init__(
        self,
        *,
        queue: str,
        concurrency: int,
        redis: ArqRedis,
        runner: JobRunner,
        store: JobStore,
        poll_delay_s: float,
    ) -> None:
        super().__init__(
            functions=[func(runner.run, name=ARQ_FUNCTION, timeout=_ARQ_TIMEOUT_S, max_tries=_ARQ_MAX_TRIES)],
            queue_name=Keys.queue(queue),
            redis_pool=redis,
            handle_signals=False,
            max_jobs=concurrency,
            job_timeout=_ARQ_TIMEOUT_S,
            keep_result=0,  # results live in our job record
            poll_delay=poll_delay_s,
            queue_read_limit=concurrency,
            max_tries=_ARQ_MAX_TRIES,
            allow_abort_jobs=True,
            job_serializer=json_bytes,
            job_deserializer=json.loads,
            health_check_interval=60,
            log_results=False,
        )
        self.queue = queue
        self.store = store
        self.wake = asyncio.Event()
        self._abort_requested = False
        self.ctx["orch_worker"] = self

    async def main(self) -> None:
        self.ctx["redis"] = self.pool
        while True:
            self.wake.clear()
            await self._poll_iteration()
            try:
                async with asyncio.timeout(self.poll_delay_s):
                    await self.wake.wait()
            except TimeoutError:
                # Idle tick: also catch an abort whose message arrived before the job had started.
                self._abort_requested = True

    async def _poll_iteration(self) -> None:
        free = self.max_jobs - self.job_counter
        if self.allow_pick_jobs and free > 0:
            # Jobs running here stay in arq's set until they finish: read past them, skip them
            # without a round trip each.
            ids = await self.pool.zrangebyscore(
                self.queue_name, min=float("-inf"), max=timestamp_ms(), start=0, num=free + len(self.tasks)
            )
            await self.start_jobs([i for i in ids if i.decode() not in self.tasks])
        if self._abort_requested:
            self._abort_requested = False
            await self._cancel_aborted_jobs()
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                task.result()  # surface a crash of arq's run_job
        await self.heart_beat()

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self.wake.set()  # a slot is free: look at the queue now

    def request_abort(self) -> None:
        self._abort_requested = True
        self.wake.set()

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """arq gives up on a job before our function ran: mirror that in our record."""
        await super().finish_failed_job(job_id, result_data)
        record = await self.store.get(job_id)
        if record is None or record.get("state") in {"succeeded", "failed", "cancelled"}:
            return
        if record.get("cancel_requested"):
            await self.store.mark_final_without_run(job_id, "cancelled", "cancelled before it started")
        else:
            await self.store.mark_final_without_run(job_id, "failed", "arq could not run the job (expired payload)")

    def stop_picking(self) -> None:
        self.allow_pick_jobs = False

    def running_job_ids(self) -> list[str]:
        return list(self.job_tasks)

    def cancel_running(self) -> None:
        for task in self.job_tasks.values():
            task.cancel()

    async def wait_idle(self) -> None:
        while any(not t.done() for t in self.tasks.values()):
            await asyncio.wait([t for t in self.tasks.values() if not t.done()])


class WorkerPool:
    """Every queue worker of this process plus the pub/sub listener that wakes them.

    Args:
        redis: the shared connection pool.
        queues: queue name -> concurrency, for the queues this process serves.
        runner: the job function.
        store: the job records.
        poll_delay_s: the fallback tick of each worker.
    """

    name = "workers"

    def __init__(
        self, redis: ArqRedis, queues: dict[str, int], runner: JobRunner, store: JobStore, *, poll_delay_s: float
    ) -> None:
        self.redis = redis
        self.runner = runner
        self.workers = {
            q: QueueWorker(queue=q, concurrency=c, redis=redis, runner=runner, store=store, poll_delay_s=poll_delay_s)
            for q, c in queues.items()
        }

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._listen(), name="workers:pubsub")
            for q, worker in self.workers.items():
                tg.create_task(worker.main(), name=f"worker:{q}")

    async def _listen(self) -> None:
        channels = {Keys.wake_channel(q): w for q, w in self.workers.items()}
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(Keys.cancel_channel, *channels)
                for worker in self.workers.values():
                    worker.wake.set()  # anything enqueued while we were not subscribed
                async for message in pubsub.listen():
                    channel = message["channel"].decode()
                    if channel == Keys.cancel_channel:
                        job_id = message["data"].decode()
                        for worker in self.workers.values():
                            if job_id in worker.job_tasks or job_id in worker.tasks:
                                worker.request_abort()
                    elif (woken := channels.get(channel)) is not None:
                        woken.wake.set()
            except (RedisError, OSError) as e:
                logger.warning("workers.pubsub_lost error=%s; resubscribing in 1s", e)
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def running(self) -> dict[str, list[str]]:
        return {q: w.running_job_ids() for q, w in self.workers.items()}

    async def drain(self, grace_s: float) -> None:
        """Stop taking jobs; let running ones finish for `grace_s`; then stop them (they go back to the queue)."""
        for worker in self.workers.values():
            worker.stop_picking()
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

    def stats(self) -> dict[str, Any]:
        return {
            "completed": self.runner.completed,
            "failed": self.runner.failed,
            "retried": self.runner.retried,
            "running": sum(len(w.job_tasks) for w in self.workers.values()),
        }
