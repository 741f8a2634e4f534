"""The async Python API: trigger, batch, status, result, cancel, retry, list, stats.

Usable from another application (a FastAPI service, say) with only a Redis URL: plugin manifests
and queue names are read from what running instances publish in Redis.

    async with await Client.connect("redis://localhost:6379/0") as client:   # or rediss://, redis+sentinel://
        job = await client.trigger("data_processor", {"operation": "sync_data"}, priority="high")
        print(await client.result(job.job_id, timeout_s=60))
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Self

from arq.connections import ArqRedis

from orchestrator.cluster.heartbeat import read_instances
from orchestrator.cluster.lease import read_leader
from orchestrator.errors import ConflictError, JobError, NotFoundError, PluginError
from orchestrator.jobs import throttle as throttles
from orchestrator.jobs import views
from orchestrator.jobs.batch import batch_status, parse_batch, submit_batch
from orchestrator.jobs.catalog import RegistryCatalog
from orchestrator.jobs.model import TERMINAL, JobRecord, Keys
from orchestrator.jobs.results import ResultListener, record_from_message
from orchestrator.jobs.store import JobStore
from orchestrator.jobs.submit import JobDefaults, JobRequest, PluginCatalog, RedisCatalog, Submitter
from orchestrator.jobs.views import JobRows
from orchestrator.plugins.manifest import is_plugin_name
from orchestrator.plugins.throttle import Throttle
from orchestrator.redis.connection import RedisOptions, confirm_replicated
from orchestrator.redis.connection import connect as _connect
from orchestrator.schedules import store as schedule_store
from orchestrator.schedules.store import ScheduleStore
from orchestrator.tracing.facade import Tracing
from orchestrator.workflows.model import Chain, Group, JobStep, Step, parse_step
from orchestrator.workflows.store import WorkflowStore
from orchestrator.workflows.submit import submit_workflow

if TYPE_CHECKING:
    from orchestrator.jobs.settings import JobSettings
    from orchestrator.plugins.registry import PluginRegistry

DEFAULT_RESULT_TTL_S = 7 * 24 * 3600.0
_CACHE_S = 5.0
_RECHECK_S = 5.0  # a waiter re-reads a job it has not heard of for this long
# `Client.list` shadows the builtin inside the class body


@dataclass(frozen=True)
class Triggered:
    job_id: str
    created: bool  # False: a job with this id already existed and nothing was enqueued


def connect_redis(url: str, options: RedisOptions | None = None) -> ArqRedis:
    """A Redis client for `url` (TLS, Sentinel, a bounded pool: see orchestrator.redis.connection)."""
    return _connect(url, options)


class Client:
    """Jobs over Redis.

    Args:
        redis: a connection; closed by `close()` only when the client created it (`connect`).
        catalog: where manifests come from (default: published by running instances).
        queues: queue name -> concurrency (default: published by running instances).
        defaults: queue/timeout/retry fallbacks.
        result_ttl_s: how long records are kept.
        wait_replicas: a trigger or batch returns only once this many replicas hold it (Redis WAIT),
            so a failover cannot lose an acknowledged job (NotReplicated otherwise: retry with the same id).
        wait_timeout_s: how long to wait for them.
        tracing: a `trigger` span per trigger, whose context goes with the job (default: off). A
            library user passes `orchestrator.tracing.build.build(TracingSettings.from_environ())`.
    """

    def __init__(
        self,
        redis: ArqRedis,
        *,
        catalog: PluginCatalog | None = None,
        queues: Mapping[str, int] | None = None,
        defaults: JobDefaults | None = None,
        result_ttl_s: float = DEFAULT_RESULT_TTL_S,
        owns_redis: bool = False,
        wait_replicas: int = 0,
        wait_timeout_s: float = 1.0,
        tracing: Tracing | None = None,
    ) -> None:
        self.redis = redis
        self.store = JobStore(redis, result_ttl_s=result_ttl_s)
        self.workflows = WorkflowStore(redis, result_ttl_s=result_ttl_s)
        self._catalog = catalog or RedisCatalog(self.store)
        self._queues = dict(queues) if queues is not None else None
        self._defaults = defaults or JobDefaults()
        self._owns_redis = owns_redis
        self._published_queues: tuple[float, dict[str, int]] | None = None
        self._throttle_book = throttles.ThrottleBook(self.redis)
        self._wait_replicas = wait_replicas
        self._wait_timeout_s = wait_timeout_s
        self._results = ResultListener(redis)
        self.tracing = tracing or Tracing()

    @classmethod
    def for_settings(
        cls,
        settings: JobSettings,
        redis: ArqRedis,
        registry: PluginRegistry | None = None,
        *,
        tracing: Tracing | None = None,
    ) -> Client:
        """A client with the process's queues, defaults and WAIT setting; it validates triggers
        against `registry` (a plugins folder loaded here), else against what instances published."""
        store = JobStore(redis, result_ttl_s=settings.result_ttl_s)
        return cls(
            redis,
            catalog=RegistryCatalog(registry, store) if registry is not None else None,
            queues=settings.queue_concurrency(),
            defaults=JobDefaults.from_section(settings),
            result_ttl_s=settings.result_ttl_s,
            wait_replicas=settings.redis_wait_replicas,
            wait_timeout_s=settings.redis_wait_timeout_s,
            tracing=tracing,
        )

    @classmethod
    async def connect(cls, redis_url: str, *, redis_options: RedisOptions | None = None, **kwargs: Any) -> Client:
        """`redis_options` carries the TLS files, the sentinels' password and the pool's bound."""
        return cls(connect_redis(redis_url, redis_options), owns_redis=True, **kwargs)

    async def close(self) -> None:
        await self.store.wait_enqueued()
        await self._results.close()
        if self._owns_redis:
            await self.redis.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def queues(self) -> dict[str, int]:
        """Queue name -> concurrency: from the config given, else as running instances published them
        (cached briefly, so a busy producer does not pay a round trip per job)."""
        if self._queues is not None:
            return self._queues
        if self._published_queues is not None and time.monotonic() - self._published_queues[0] < _CACHE_S:
            return self._published_queues[1]
        raw = await self.redis.hgetall(Keys.queues)  # type: ignore[misc]
        queues = {k.decode(): int(v) for k, v in raw.items()}
        self._published_queues = (time.monotonic(), queues) if queues else None
        return queues

    async def submitter(self) -> Submitter:
        return Submitter(self.store, self._catalog, set(await self.queues()), self._defaults, self._throttle_book)

    # -- jobs --
    async def trigger(
        self,
        plugin: str,
        params: dict[str, Any] | None = None,
        *,
        priority: str | int | None = None,
        queue: str | None = None,
        job_id: str | None = None,
        defer_s: float | None = None,
        at: datetime | None = None,
        source: str = "api",
        context: dict[str, Any] | None = None,
        trace_parent: Mapping[str, str] | None = None,
    ) -> Triggered:
        """Validate against the manifest and enqueue. Raises JobError / ParamsError (nothing enqueued).

        `trace_parent`: the caller's W3C trace context from another process (an HTTP request's
        `traceparent`/`tracestate` headers); by default the current span, if any, is the parent.
        """
        request = JobRequest(
            plugin=plugin,
            params=params or {},
            priority=priority,
            queue=queue,
            job_id=job_id,
            defer_s=defer_s,
            at=at,
            source=source,
            context=context or {},
            # once this client waits for results, its jobs' ends come to it unasked (jobs/results.py)
            notify=self._results.channel if self._results.live else None,
        )
        # The caller's current span (if any) is the parent; the job's spans join this trace.
        with self.tracing.span(
            "trigger",
            parent=trace_parent,
            kind="producer",
            attributes={"job.plugin": plugin, "job.source": source, "job.id": job_id},
        ) as span:
            request.trace = span.carrier
            submitter = await self.submitter()
            job = await submitter.prepare(request)
            new_id = job.record.job_id
            listening = request.notify is not None
            if listening:
                # before the write: an end heard before the write's reply comes back is kept for the wait
                self._results.expect(new_id)
            created = False
            try:
                created = await submitter.write(job)
            finally:
                if listening and not created:
                    self._results.forget(new_id)  # not created by this call: its end is not published to us
            span.set("job.id", new_id)
            span.set("job.created", created)
        await self._replicated()
        return Triggered(new_id, created)

    async def batch(self, entries: Any) -> dict[str, Any]:
        """A list of {"plugin", "params", ...} (or {"jobs": [...]}): all entries valid, or BatchError
        listing each problem and nothing enqueued."""
        parsed = parse_batch(entries)
        # one `trigger` span for the whole batch: every job of it joins that trace
        with self.tracing.span(
            "trigger", kind="producer", attributes={"job.source": "batch", "batch.size": len(parsed)}
        ) as span:
            out = await submit_batch(await self.submitter(), parsed, trace=span.carrier)
            span.set("batch.id", out.get("batch_id"))
        await self._replicated()
        return out

    # -- workflows --
    async def workflow(
        self, steps: Step | Mapping[str, Any] | builtins.list[Any], *, name: str | None = None, source: str = "api"
    ) -> str:
        """Start a workflow: built with `job()`, `chain()`, `group()` (orchestrator.workflows.model) or
        its JSON (`{"chain": [...]}`, a list is a chain). Every step is checked first: WorkflowError
        naming the bad step, and nothing written. Returns the workflow id."""
        root = steps if isinstance(steps, JobStep | Chain | Group) else parse_step(steps)
        workflow_id, _ = await submit_workflow(await self.submitter(), self.workflows, root, name=name, source=source)
        await self._replicated()
        return workflow_id

    async def workflow_status(self, workflow_id: str) -> dict[str, Any]:
        """The workflow's record: state, timings, steps with their jobs' states (NotFoundError if none)."""
        if (found := await self.workflows.get(workflow_id)) is None:
            msg = f"no workflow {workflow_id!r}"
            raise NotFoundError(msg)
        return found

    async def cancel_workflow(self, workflow_id: str) -> str:
        """`cancelled`, or the state the workflow had already ended in."""
        outcome = await self.workflows.cancel(workflow_id)
        if outcome == "missing":
            msg = f"no workflow {workflow_id!r}"
            raise NotFoundError(msg)
        return outcome

    async def wait(self, id_: str, *, timeout_s: float | None = None) -> dict[str, Any]:
        """Wait for a job or a workflow to end (woken by pub/sub) and return its record."""
        if await self.workflows.state(id_) is None:
            return await self.result(id_, timeout_s=timeout_s)
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            async with asyncio.timeout(timeout_s):
                # subscribe before reading, so an end in between is not missed
                await pubsub.subscribe(Keys.workflow_done_channel(id_))
                while True:
                    state = await self.workflows.state(id_)
                    if state is None:
                        msg = f"no workflow {id_!r}"
                        raise NotFoundError(msg)
                    if state != "running":
                        return await self.workflow_status(id_)
                    await pubsub.get_message(timeout=_RECHECK_S)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def recent_workflows(self, limit: int = 20) -> builtins.list[dict[str, Any]]:
        return await self.workflows.recent(limit)

    async def _replicated(self) -> None:
        if self._wait_replicas:
            await confirm_replicated(self.redis, self._wait_replicas, self._wait_timeout_s)

    async def batch_status(self, batch_id: str) -> dict[str, Any]:
        return await batch_status(await self.submitter(), batch_id)

    async def status(self, job_id: str) -> dict[str, Any] | None:
        record = await self.store.get(job_id)
        return record.to_json() if record else None

    async def result(self, job_id: str, *, timeout_s: float | None = None) -> dict[str, Any]:
        """Wait until the job is final (woken by Redis pub/sub, not by polling) and return it.

        Jobs this client triggered after its first wait are heard on its own listener, at no cost
        per job (jobs/results.py); any other job is waited for on its own channel.
        """
        async with asyncio.timeout(timeout_s):
            while self._results.expects(job_id):
                if (final := await self._results.wait(job_id, within_s=_RECHECK_S)) is not None:
                    return final
                # Not heard for a while (a retry waits out its backoff): make sure it is still there.
                if (final := await self._final_or_none(job_id)) is not None:
                    return final
            self._results.start()  # for the next jobs this client triggers
            return await self._wait_on_job_channel(job_id)

    async def _final_or_none(self, job_id: str) -> dict[str, Any] | None:
        """The job if it has ended, None while it has not; NotFoundError when it is gone."""
        job = await self.status(job_id)
        if job is None:
            msg = f"no job {job_id!r}"
            raise NotFoundError(msg)
        return job if job["state"] in TERMINAL else None

    async def _wait_on_job_channel(self, job_id: str) -> dict[str, Any]:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            # Subscribe before reading the state, so a finish in between is not missed.
            await pubsub.subscribe(Keys.done_channel(job_id))
            while True:
                if (final := await self._final_or_none(job_id)) is not None:
                    return final
                # Bounded wait: a deferred retry publishes nothing until it ends.
                message = await pubsub.get_message(timeout=_RECHECK_S)
                if message is not None and (final := record_from_message(message["data"])) is not None:
                    return final
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def cancel(self, job_id: str, *, wait_s: float = 10.0) -> str:
        """Returns the job's state after the cancel: `cancelled`, or its final state if it had already ended."""
        record = await self.store.get(job_id)
        if record is None:
            msg = f"no job {job_id!r}"
            raise NotFoundError(msg)
        outcome = await self.store.cancel(job_id, record.queue)
        if outcome == "cancelling":
            # Its worker stops the process group; wait for it to say so.
            with contextlib.suppress(TimeoutError):
                return (await self.result(job_id, timeout_s=wait_s))["state"]  # type: ignore[no-any-return]
        return outcome

    async def retry(self, job_id: str) -> str:
        """Run a failed or cancelled job again with the same params; returns the new job id."""
        record = await self.store.get(job_id)
        if record is None:
            msg = f"no job {job_id!r}"
            raise NotFoundError(msg)
        if record.state not in {"failed", "cancelled"}:
            msg = f"job {job_id} is {record.state}: only failed or cancelled jobs can be retried"
            raise JobError(msg)
        if record.workflow is not None and record.step is not None:
            # a workflow's step: its workflow resumes from there (the steps its failure cancelled too)
            return await self.workflows.resume(record.workflow, record.step)
        request = JobRequest(
            plugin=record.plugin,
            params=record.params,
            priority=record.priority,
            queue=record.queue,
            source="retry",
            retry_of=job_id,
            context=record.context or {},
        )
        new_id, _ = await (await self.submitter()).submit(request)
        await self.store.redis.hset(Keys.job(job_id), "retried_as", new_id)  # type: ignore[misc]
        return new_id

    async def delete(self, job_id: str) -> None:
        """Delete a job's record, log and index entries. A running job must be cancelled first."""
        for _ in range(3):  # its state may change between the read and the delete: read again
            record = await self.store.get(job_id)
            if record is None:
                msg = f"no job {job_id!r}"
                raise NotFoundError(msg)
            outcome = await self.store.delete(record)
            if outcome in (0, 1):
                return
            if outcome == "running":
                msg = f"job {job_id} is running: cancel it first (orchestrator jobs cancel {job_id})"
                raise ConflictError(msg)
        msg = f"job {job_id} keeps changing state; try again"
        raise ConflictError(msg)

    async def purge_count(self, *, state: str, older_than_s: float = 0.0, plugin: str | None = None) -> int:
        """How many jobs `purge` with these arguments would delete now."""
        return len(await self._purgeable(state, older_than_s, plugin))

    async def _purgeable(self, state: str, older_than_s: float, plugin: str | None) -> list[JobRecord]:
        if state not in TERMINAL:
            msg = f"purge takes a final state (succeeded, failed, cancelled), not {state!r}"
            raise JobError(msg)
        ids = await self.store.ids_in_state(state, entered_before=time.time() - older_than_s)
        out: list[JobRecord] = []
        for start in range(0, len(ids), 500):
            for record in await self.store.get_many(ids[start : start + 500]):
                if record is not None and (plugin is None or record.plugin == plugin):
                    out.append(record)
        return out

    async def purge(self, *, state: str, older_than_s: float = 0.0, plugin: str | None = None) -> int:
        """Delete final jobs (`succeeded`, `failed` or `cancelled`) that reached that state more than
        `older_than_s` ago, of one plugin or all; returns how many were deleted."""
        deleted = 0
        for record in await self._purgeable(state, older_than_s, plugin):
            if await self.store.delete(record) == 1:
                deleted += 1
        return deleted

    async def list(
        self, *, state: str | None = None, plugin: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        return await self.jobs_page(state=state, plugin=plugin, limit=limit)

    async def stats(self) -> dict[str, Any]:
        return await self.store.stats(await self.queues())

    async def logs(self, job_id: str, *, follow: bool = False, poll_s: float = 0.5) -> AsyncIterator[tuple[str, str]]:
        """(stream, line) pairs; with follow, until the job is final."""
        last = "-"
        while True:
            entries = await self.store.read_log(job_id, after=last)
            for entry_id, stream, line in entries:
                last = entry_id
                yield stream, line
            if not follow:
                return
            state = (await self.store.states_of([job_id]))[0]
            if state is None or state in TERMINAL:
                for entry_id, stream, line in await self.store.read_log(job_id, after=last):
                    last = entry_id
                    yield stream, line
                return
            await asyncio.sleep(poll_s)

    # -- plugins --
    async def enabled_flags(self) -> dict[str, bool]:
        """Plugin -> enabled, for every plugin enabled or disabled at run time (the one live switch)."""
        raw = await self.redis.hgetall(Keys.plugin_enabled)  # type: ignore[misc]
        return {k.decode(): v == b"1" for k, v in raw.items()}

    async def reload_plugins(self, name: str | None = None) -> None:
        """Ask every running instance to re-read its plugins folder (or one plugin of it).

        Raises:
            PluginError: `name` is not a plugin name (it is never taken as a path).
        """
        if name is not None and not is_plugin_name(name):
            raise PluginError(f"bad plugin name {name!r}: letters, digits, '_' and '-', starting with a letter or '_'")
        await self.redis.publish(Keys.reload_channel, name or "")

    async def set_enabled(self, plugin: str, enabled: bool) -> None:
        """Stored in Redis: every instance sees it at the next trigger."""
        await self.redis.hset(Keys.plugin_enabled, plugin, "1" if enabled else "0")  # type: ignore[misc]
        if isinstance(self._catalog, RedisCatalog):
            self._catalog.invalidate()

    async def throttles(self) -> dict[str, throttles.PluginThrottle]:
        """Every throttled plugin: its limits as Redis holds them, its counters and each key's use."""
        return await throttles.read_use(self.redis)

    async def throttle(self, plugin: str) -> Throttle | None:
        """A plugin's effective limits (what every claim reads now), or None."""
        current, _ = throttles.from_fields(await self.redis.hgetall(throttles.limits_key(plugin)))  # type: ignore[misc]
        return current

    async def set_throttle(self, plugin: str, **changes: Any) -> Throttle | None:
        """Change a plugin's limits live on every instance (the next claim anywhere reads them):
        `concurrency=3`, `rate="5/s"`, `max_queued=10`, `key="{user_id}"`; None removes that limit.
        Running jobs are never stopped: lowering a limit lets them finish. Kept until `reset_throttle`.

        Raises:
            ValueError: a bad value (the message names it).
        """
        current = await self.throttle(plugin) or Throttle()
        merged = Throttle.model_validate({**current.model_dump(), **changes})
        await throttles.set_live(self.redis, plugin, None if merged.is_empty() else merged)
        return None if merged.is_empty() else merged

    async def reset_throttle(self, plugin: str) -> None:
        """Drop a live change: every instance writes its config's and manifest's limits back (a plugin reload)."""
        await throttles.set_live(self.redis, plugin, None)
        await self.reload_plugins(plugin)

    # -- the read side of the dashboard and `orchestrator top` (jobs/views.py does the work) --
    async def instances(self) -> dict[str, dict[str, Any]]:
        """Instance id -> what it published (queues, role, version, started_at, seen_at), plus `alive`."""
        return await read_instances(self.store)

    async def leader(self) -> dict[str, Any] | None:
        """The lease holder as Redis has it: {instance_id, since, token}, or None."""
        return await read_leader(self.redis)

    async def jobs_page(
        self,
        *,
        state: str | None = None,
        plugin: str | None = None,
        queue: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> JobRows:
        """Newest first, skipping `offset` matches: the job list with a queue filter and paging."""
        return await views.jobs_page(self.store, state=state, plugin=plugin, queue=queue, offset=offset, limit=limit)

    async def finished(self, *, limit: int = 10) -> JobRows:
        """The last `limit` jobs that reached a final state, newest first."""
        return await views.finished(self.store, limit=limit)

    async def throughput(self, *, window_s: float = 3600.0, bucket_s: float = 60.0) -> dict[str, Any]:
        """Jobs enqueued and finished per bucket over the last `window_s`, oldest bucket first."""
        return await views.throughput(self.store, window_s=window_s, bucket_s=bucket_s)

    async def log_entries(self, job_id: str, *, after: str = "-", limit: int = 1000) -> JobRows:
        """A job's captured lines after stream id `after` ("-": from the start), oldest first."""
        return await views.log_entries(self.store, job_id, after=after, limit=limit)

    # -- schedules: orchestrator/schedules/store.py does the work --
    def _schedules(self) -> ScheduleStore:
        return ScheduleStore(self.redis)

    async def add_schedule(
        self, schedule: Mapping[str, Any] | None = None, *, replace: bool = False, **fields: Any
    ) -> dict[str, Any]:
        """Validate and store a schedule; returns it as `list_schedules` shows it.

        Takes `{"id", "plugin", "params", "cron" | "every", "timezone", "queue", "priority",
        "misfire_grace_s", "overlap", "enabled"}` (as a dict or keywords), and the seed's
        `add_scheduled_task({"plugin": ..., "params": ..., "cron": "0 2 * * *"})` shape (the id is then
        derived from the definition). Raises JobError / ParamsError with the reason; nothing is stored.
        """
        data = {**(schedule or {}), **fields}
        stored = await schedule_store.add(self._schedules(), await self.submitter(), data, replace=replace)
        return await self.get_schedule(stored.spec.id)

    async def add_scheduled_task(self, task: Mapping[str, Any]) -> str:
        """The seed's name: `add_schedule` for its dict; returns the schedule id."""
        return str((await self.add_schedule(task))["id"])

    async def remove_schedule(self, schedule_id: str) -> None:
        await schedule_store.remove(self._schedules(), schedule_id)

    async def pause_schedule(self, schedule_id: str) -> None:
        await self._schedules().set_enabled(schedule_id, False)

    async def resume_schedule(self, schedule_id: str) -> None:
        await self._schedules().set_enabled(schedule_id, True)

    async def run_schedule(self, schedule_id: str) -> str:
        """Fire once now (whatever the trigger, pause or overlap); returns the job id."""
        return await schedule_store.run_now(self._schedules(), await self.submitter(), schedule_id)

    async def list_schedules(self) -> builtins.list[dict[str, Any]]:
        return await self._schedules().describe()

    async def get_schedule(self, schedule_id: str) -> dict[str, Any]:
        await self._schedules().get(schedule_id)  # NotFoundError
        return (await self._schedules().describe([schedule_id]))[0]

    async def schedule_history(self, schedule_id: str, *, limit: int = 50) -> builtins.list[dict[str, Any]]:
        """Newest first: fires with their job ids, states and durations, skipped slots, overlap skips."""
        await self._schedules().get(schedule_id)
        return await self._schedules().history(schedule_id, limit)
