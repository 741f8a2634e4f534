"""The async Python API: trigger, batch, status, result, cancel, retry, list, stats.

Usable from another application (a FastAPI service, say) with only a Redis URL: plugin manifests
and queue names are read from what running instances publish in Redis.

    async with await Client.connect("redis://localhost:6379/0") as client:   # or rediss://, redis+sentinel://
        job = await client.trigger("data_processor", {"operation": "sync_data"}, priority="high")
        print(await client.result(job.job_id, timeout_s=60))
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

from arq.connections import ArqRedis

from orchestrator.errors import JobError, NotFoundError
from orchestrator.jobs.batch import batch_status, parse_batch, submit_batch
from orchestrator.jobs.model import TERMINAL, JobRecord, Keys
from orchestrator.jobs.state import JobStore
from orchestrator.jobs.submit import JobDefaults, JobRequest, PluginCatalog, RedisCatalog, Submitter
from orchestrator.redis_conn import RedisOptions, confirm_replicated
from orchestrator.redis_conn import connect as _connect

DEFAULT_RESULT_TTL_S = 7 * 24 * 3600.0
_CACHE_S = 5.0


@dataclass(frozen=True)
class Triggered:
    job_id: str
    created: bool  # False: a job with this id already existed and nothing was enqueued


def _record_from_message(data: bytes) -> dict[str, Any] | None:
    """A done message carries the final record as a flat JSON list (see JobStore's scripts)."""
    try:
        flat = json.loads(data)
    except ValueError:
        return None
    if not isinstance(flat, list) or len(flat) % 2:
        return None
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    job_id = fields.get("job_id")
    if not isinstance(job_id, str) or "plugin" not in fields or "queue" not in fields:
        return None
    record = JobRecord.from_hash(fields, job_id=job_id)
    return record.to_json() if record.state in TERMINAL else None


def connect_redis(url: str, options: RedisOptions | None = None) -> ArqRedis:
    """A Redis client for `url` (TLS, Sentinel, a bounded pool: see orchestrator.redis_conn)."""
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
    ) -> None:
        self.redis = redis
        self.store = JobStore(redis, result_ttl_s=result_ttl_s)
        self._catalog = catalog or RedisCatalog(self.store)
        self._queues = dict(queues) if queues is not None else None
        self._defaults = defaults or JobDefaults()
        self._owns_redis = owns_redis
        self._published_queues: tuple[float, dict[str, int]] | None = None
        self._wait_replicas = wait_replicas
        self._wait_timeout_s = wait_timeout_s

    @classmethod
    async def connect(cls, redis_url: str, *, redis_options: RedisOptions | None = None, **kwargs: Any) -> Client:
        """`redis_options` carries the TLS files, the sentinels' password and the pool's bound."""
        return cls(connect_redis(redis_url, redis_options), owns_redis=True, **kwargs)

    async def close(self) -> None:
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

    async def _submitter(self) -> Submitter:
        return Submitter(self.store, self._catalog, set(await self.queues()), self._defaults)

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
    ) -> Triggered:
        """Validate against the manifest and enqueue. Raises JobError / ParamsError (nothing enqueued)."""
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
        )
        new_id, created = await (await self._submitter()).submit(request)
        await self._replicated()
        return Triggered(new_id, created)

    async def batch(self, entries: Any) -> dict[str, Any]:
        """A list of {"plugin", "params", ...} (or {"jobs": [...]}): all entries valid, or BatchError
        listing each problem and nothing enqueued."""
        out = await submit_batch(await self._submitter(), parse_batch(entries))
        await self._replicated()
        return out

    async def _replicated(self) -> None:
        if self._wait_replicas:
            await confirm_replicated(self.redis, self._wait_replicas, self._wait_timeout_s)

    async def batch_status(self, batch_id: str) -> dict[str, Any]:
        return await batch_status(await self._submitter(), batch_id)

    async def status(self, job_id: str) -> dict[str, Any] | None:
        record = await self.store.get(job_id)
        return record.to_json() if record else None

    async def result(self, job_id: str, *, timeout_s: float | None = None) -> dict[str, Any]:
        """Wait until the job is final (woken by Redis pub/sub, not by polling) and return it."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            # Subscribe before reading the state, so a finish in between is not missed.
            await pubsub.subscribe(Keys.done_channel(job_id))
            async with asyncio.timeout(timeout_s):
                while True:
                    job = await self.status(job_id)
                    if job is None:
                        msg = f"no job {job_id!r}"
                        raise NotFoundError(msg)
                    if job["state"] in TERMINAL:
                        return job
                    # Bounded wait: a deferred retry publishes nothing until it ends.
                    message = await pubsub.get_message(timeout=5.0)
                    if message is not None and (final := _record_from_message(message["data"])) is not None:
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
        request = JobRequest(
            plugin=record.plugin,
            params=record.params,
            priority=record.priority,
            queue=record.queue,
            source="retry",
            retry_of=job_id,
            context=record.context or {},
        )
        new_id, _ = await (await self._submitter()).submit(request)
        await self.store.redis.hset(Keys.job(job_id), "retried_as", new_id)  # type: ignore[misc]
        return new_id

    async def list(
        self, *, state: str | None = None, plugin: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        return await self.store.list_jobs(state=state, plugin=plugin, limit=limit)

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

    async def set_enabled(self, plugin: str, enabled: bool) -> None:
        """Stored in Redis: every instance sees it at the next trigger."""
        await self.redis.hset(Keys.plugin_enabled, plugin, "1" if enabled else "0")  # type: ignore[misc]
        if isinstance(self._catalog, RedisCatalog):
            self._catalog.invalidate()
