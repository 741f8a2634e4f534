"""Job requests: validated against the plugin's manifest, then enqueued in arq with the record.

Every source (CLI, HTTP, Python API, batches, scheduler, change capture) comes through here, so
a job that is in Redis has passed the same checks whoever asked for it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from orchestrator.errors import JobError, ParamsError
from orchestrator.jobs.model import JobRecord, Keys, job_id_problem, new_job_id, now, parse_priority, queue_score
from orchestrator.jobs.settings import JobSettings
from orchestrator.jobs.store import Checkpoint, EnqueueItem, JobStore
from orchestrator.jobs.throttle import BacklogMode, ThrottleBook
from orchestrator.plugins.manifest import Manifest, validate_params
from orchestrator.redis.fence import Fence

ARQ_FUNCTION = "run_plugin"


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def arq_payload(job_id: str, enqueue_ms: int) -> bytes:
    """arq's payload of a job, so arq's own tools can read the queue: what arq's
    `serialize_job(ARQ_FUNCTION, (job_id,), {}, None, enqueue_ms)` makes with `json_bytes`, byte for
    byte (tests/jobs/test_group_commit.py), without building and encoding its dict per job."""
    return b'{"t":null,"f":"%s","a":[%s],"k":{},"et":%d}' % (
        ARQ_FUNCTION.encode(),
        json.dumps(job_id).encode(),
        enqueue_ms,
    )


@dataclass(frozen=True)
class CatalogEntry:
    """What the submitter needs to know of one plugin."""

    manifest: Manifest | None
    enabled: bool
    state: str
    reason: str | None = None


class PluginCatalog(Protocol):
    """Where manifests come from: the local plugins folder, or what running instances published."""

    async def lookup(self, name: str) -> CatalogEntry | None: ...


@dataclass(frozen=True)
class JobDefaults:
    """Config values a job falls back to when its manifest does not say."""

    default_queue: str = "default"
    job_timeout_s: float = 1800.0
    max_retries: int = 3
    retry_backoff_s: float = 60.0

    @classmethod
    def from_section(cls, section: JobSettings) -> JobDefaults:
        return cls(
            default_queue=section.default_queue,
            job_timeout_s=section.job_timeout_s,
            max_retries=section.max_retries,
            retry_backoff_s=section.retry_backoff_s,
        )


@dataclass
class JobRequest:
    """One job to enqueue, as any source describes it."""

    plugin: str
    params: dict[str, Any] = field(default_factory=dict)
    priority: str | int | None = None
    queue: str | None = None
    job_id: str | None = None
    defer_s: float | None = None
    at: datetime | None = None
    source: str = "api"
    batch_id: str | None = None
    retry_of: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    notify: str | None = None  # the triggering client's done channel (jobs/results.py)
    trace: dict[str, str] | None = None  # the trigger's trace context: the job's spans join its trace


@dataclass(frozen=True)
class PreparedJob:
    record: JobRecord
    score: float
    enqueue_ms: int
    throttled: bool = False  # its plugin has a throttle (counted for max_queued)


class Submitter:
    """Validates and enqueues jobs.

    Args:
        store: the job records.
        catalog: the plugin manifests to validate against.
        queues: the queue names this deployment knows (from config, or published by instances).
        defaults: config fallbacks for queue, timeout and retries.
        throttles: the plugins' limits as Redis holds them (cached briefly; shared by a client's submitters).
    """

    def __init__(
        self,
        store: JobStore,
        catalog: PluginCatalog,
        queues: set[str],
        defaults: JobDefaults,
        throttles: ThrottleBook | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.queues = queues
        self.defaults = defaults
        self.throttles = throttles or ThrottleBook(store.redis)

    async def prepare(self, request: JobRequest) -> PreparedJob:
        """Check everything; raise JobError / ParamsError (nothing is written)."""
        entry = await self.catalog.lookup(request.plugin)
        if entry is None or entry.manifest is None:
            reason = f": {entry.reason}" if entry and entry.reason else ""
            msg = f"unknown or invalid plugin {request.plugin!r}{reason}"
            raise JobError(msg)
        if not entry.enabled:
            msg = f"plugin {request.plugin!r} is disabled (orchestrator plugins enable {request.plugin})"
            raise JobError(msg)
        manifest = entry.manifest
        params = validate_params(manifest, request.params)
        try:
            priority = parse_priority(request.priority)
        except ValueError as e:
            raise JobError(str(e)) from e
        queue = request.queue or manifest.queue or self.defaults.default_queue
        if self.queues and queue not in self.queues:
            msg = f"unknown queue {queue!r}; configured queues: {', '.join(sorted(self.queues))}"
            raise JobError(msg)
        if request.job_id is not None and (problem := job_id_problem(request.job_id)):
            raise JobError(problem)
        try:
            json_bytes(request.context)
        except (TypeError, ValueError) as e:
            msg = f"job context is not JSON-serialisable: {e}"
            raise JobError(msg) from e

        throttled, throttle_key = await self.throttles.key_for(manifest.name, params)

        ts = now()
        ready_at = ts
        if request.at is not None:
            at = request.at if request.at.tzinfo else request.at.replace(tzinfo=UTC)
            ready_at = max(at.timestamp(), ts)
        elif request.defer_s:
            if request.defer_s < 0:
                raise JobError("defer must not be negative")
            ready_at = ts + request.defer_s
        deferred = ready_at > ts
        record = JobRecord(
            job_id=request.job_id or new_job_id(),
            plugin=manifest.name,
            params=params,
            queue=queue,
            priority=priority,
            source=request.source,
            state="deferred" if deferred else "queued",
            attempt=0,
            max_retries=manifest.max_retries if manifest.max_retries is not None else self.defaults.max_retries,
            retry_backoff_s=(
                manifest.retry_backoff if manifest.retry_backoff is not None else self.defaults.retry_backoff_s
            ),
            timeout_s=manifest.timeout or self.defaults.job_timeout_s,
            enqueued_at=ts,
            defer_until=ready_at if deferred else None,
            batch_id=request.batch_id,
            retry_of=request.retry_of,
            context=request.context or None,
            notify=request.notify,
            throttle_key=throttle_key,
            trace=request.trace,
        )
        # A deferred job keeps its plain due time as score: the priority offset would make it ready at once.
        # Microsecond resolution (a fraction of arq's ms score): two jobs enqueued in the same
        # millisecond keep their order instead of being ordered by id.
        score = round(ready_at * 1000, 3) if deferred else queue_score(round(ts * 1000, 3), priority)
        return PreparedJob(record=record, score=score, enqueue_ms=int(ts * 1000), throttled=throttled)

    async def write(self, job: PreparedJob) -> bool:
        """Enqueue; False when a job with this id already exists (nothing written). Raises QueueFull
        (nothing written) past the plugin's max_queued."""
        # push: an idle worker that offered a slot gets the job with its claim (no claim round trip)
        outcome = await self.store.enqueue(
            job.record, arq_payload=self._payload(job), score=job.score, push=True, throttled=job.throttled
        )
        if outcome < 0:
            msg = f"plugin {job.record.plugin!r} is disabled (orchestrator plugins enable {job.record.plugin})"
            raise JobError(msg)
        return outcome == 1

    async def write_many(
        self,
        jobs: list[PreparedJob],
        *,
        fence: Fence | None = None,
        checkpoint: Checkpoint | None = None,
        backlog: BacklogMode = "count",
    ) -> list[int]:
        """Enqueue prepared jobs and write `checkpoint` atomically: leader-only sources, and batches.

        Returns one outcome per job: 1 enqueued, 0 the id existed (nothing written), -1 the plugin
        was disabled. Raises FencedError (nothing written) when `fence` is stale.

        `backlog`: schedules and change capture cannot be refused, so by default jobs past a
        plugin's max_queued go in and are counted (`over_cap` in /status and /metrics); a batch
        passes "refuse": QueueFull, and nothing of it is written.
        """
        items = [EnqueueItem(j.record, self._payload(j), j.score, j.throttled) for j in jobs]
        return await self.store.enqueue_many(items, fence=fence, checkpoint=checkpoint, backlog=backlog)

    def _payload(self, job: PreparedJob) -> bytes:
        return arq_payload(job.record.job_id, job.enqueue_ms)

    async def submit(self, request: JobRequest) -> tuple[str, bool]:
        """(job id, created). created is False when a job with that id already exists."""
        job = await self.prepare(request)
        return job.record.job_id, await self.write(job)


class RedisCatalog:
    """Manifests as the running instances published them: lets a client trigger with only a Redis URL.

    Entries are cached for `ttl_s`: a busy producer validates without a round trip per job. A
    disable is still never missed: the enqueue script checks the flag itself.
    """

    def __init__(self, store: JobStore, *, ttl_s: float = 2.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, CatalogEntry | None]] = {}

    async def lookup(self, name: str) -> CatalogEntry | None:
        cached = self._cache.get(name)
        if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
            return cached[1]
        entry = await self._fetch(name)
        self._cache[name] = (time.monotonic(), entry)
        return entry

    def invalidate(self) -> None:
        self._cache.clear()

    async def _fetch(self, name: str) -> CatalogEntry | None:
        async with self.store.redis.pipeline(transaction=False) as pipe:
            pipe.hget(Keys.plugins, name)
            pipe.hget(Keys.plugin_enabled, name)
            raw, flag = await pipe.execute()
        if raw is None:
            return None
        data = json.loads(raw)
        manifest = Manifest.model_validate(data["manifest"]) if data.get("manifest") else None
        return CatalogEntry(
            manifest=manifest,
            enabled=data.get("enabled", True) if flag is None else flag == b"1",
            state=data.get("state", "ready"),
            reason=data.get("reason"),
        )


async def enabled_override(store: JobStore, name: str) -> bool | None:
    raw = await store.redis.hget(Keys.plugin_enabled, name)  # type: ignore[misc]
    return None if raw is None else raw == b"1"


__all__ = [
    "ARQ_FUNCTION",
    "CatalogEntry",
    "JobDefaults",
    "JobRequest",
    "ParamsError",
    "PluginCatalog",
    "PreparedJob",
    "RedisCatalog",
    "Submitter",
    "arq_payload",
    "enabled_override",
    "json_bytes",
]
