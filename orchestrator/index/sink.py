"""IndexSink: the leader-only component that sends change capture's index actions to Elasticsearch.

The poller appends one action per change to the rule's Redis stream in the same atomic script as
its position (cdc/index_actions.py). This component reads the streams in order, sends up to
`es_bulk_max_actions` actions in one `_bulk` request (waiting at most `es_bulk_max_wait_s` for a
batch to fill), and deletes stream entries only once the request that carried them was accepted.
So a crash, a lost lease or an Elasticsearch outage loses nothing: the next leader reads the
stream again from its start. Actions carry their change's position as an external version
(`version_type=external`), so one sent twice, or late, never puts an older state over a newer one:
Elasticsearch answers 409 and that counts as done.

Retries: a refused request (429, 5xx) or a connection error is retried with exponential backoff,
the same actions again; an item refused with 429 or 5xx inside an accepted request is retried too.
An item refused for good (a mapping error: 400) becomes a failed `es_indexer` job carrying the
action (`orchestrator jobs retry` runs it again through the plugin) and the rest go on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from elastic_transport import ConnectionError as EsConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError, AsyncElasticsearch
from redis.asyncio import Redis
from redis.exceptions import RedisError

from orchestrator.cdc.index_actions import index_stream
from orchestrator.components import BaseComponent, ComponentHealth
from orchestrator.index.failed import record_failed
from orchestrator.index.stats import IndexKeys, read_stats
from orchestrator.index.status import IndexStatus
from orchestrator.tracing.facade import Tracing

logger = logging.getLogger(__name__)

_FIRST_BACKOFF_S = 0.1


@dataclass
class _Pending:
    stream: str
    entry_id: str
    action: dict[str, Any]


def bulk_body(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `_bulk` body (action line, then the document for an upsert).

    An action with a `version` (its change's position) is written with `version_type=external`:
    Elasticsearch applies it only above the document's current version, so a replayed, retried or
    late (a deposed leader's) older state never replaces a newer one.
    """
    body: list[dict[str, Any]] = []
    for a in actions:
        meta: dict[str, Any] = {"_index": a["index"], "_id": a["id"]}
        if a.get("version"):
            meta.update(version=a["version"], version_type="external")
        if a["op"] == "delete":
            body.append({"delete": meta})
        else:
            body.append({"index": meta})
            body.append(a.get("doc") or {})
    return body


class IndexSink(BaseComponent):
    """Sends the index streams of `rules` to Elasticsearch.

    Args:
        es: the client (closed by the caller).
        redis: the Redis the poller writes to.
        rules: the names of the rules with `index = {...}`.
        max_actions / max_wait_s: a batch's size and time bounds.
        max_backoff_s: the longest wait between two attempts of a refused request.
        result_ttl_s / queue: how long a refused document's failed job is kept, and its queue.
        tracing: an `es.bulk` span per batch, linked to the `cdc.change` spans of what it carries.
    """

    name = "index"
    leader_only = True

    def __init__(
        self,
        es: AsyncElasticsearch,
        redis: Redis,
        rules: list[str],
        *,
        max_actions: int = 500,
        max_wait_s: float = 0.2,
        max_backoff_s: float = 10.0,
        result_ttl_s: float = 7 * 86400,
        queue: str = "default",
        tracing: Tracing | None = None,
    ) -> None:
        self.es = es
        self.tracing = tracing or Tracing()
        self.redis = redis
        self.rules = list(rules)
        self.streams = [index_stream(r) for r in rules]
        self.max_actions = max_actions
        self.max_wait_s = max_wait_s
        self.max_backoff_s = max_backoff_s
        self.result_ttl_s = result_ttl_s
        self.queue = queue  # of the failed jobs: where `jobs retry` runs them
        self.last_error: str | None = None
        self.requests = 0  # `_bulk` requests sent (accepted or not), for the figures
        self.indexed = 0
        self.failed = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    def poke(self) -> None:
        """Read the streams now rather than at the next idle check (every `max_wait_s`, at least 50 ms)."""
        self._wake.set()

    async def run(self) -> None:
        # Every run starts at the streams' beginnings: entries are deleted only once accepted.
        last = {s: "0-0" for s in self.streams}
        retry: list[_Pending] = []
        first_seen: float | None = None
        while not self._stopping:
            batch = list(retry)
            fresh: dict[str, str] = {}  # stream -> the newest entry read this time
            try:
                for stream in self.streams:
                    room = self.max_actions - len(batch)
                    if room <= 0:
                        break
                    entries = await self.redis.xrange(stream, min=f"({last[stream]}", count=room)
                    for entry_id, fields in entries:
                        eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                        batch.append(_Pending(stream, eid, json.loads(fields[b"d"])))
                        fresh[stream] = eid
            except RedisError as e:
                self.last_error = f"redis: {e}"
                await self._sleep(1.0)
                continue
            if not batch:
                first_seen = None
                await self._sleep(max(self.max_wait_s, 0.05))
                continue
            now = time.monotonic()
            first_seen = first_seen if first_seen is not None else now
            if len(batch) < self.max_actions and now - first_seen < self.max_wait_s:
                await self._sleep(self.max_wait_s - (now - first_seen))
                continue  # read again: the batch may have grown
            last.update(fresh)
            self._idle.clear()
            try:
                # its own trace (one batch carries many changes), linked to each change's
                with self.tracing.span(
                    "es.bulk",
                    root=True,
                    kind="client",
                    links=[p.action.get("trace") for p in batch],
                    attributes={"es.actions": len(batch)},
                ) as span:
                    retry = await self._send(batch)
                    span.set("es.retried_actions", len(retry))
            finally:
                self._idle.set()
            first_seen = time.monotonic() if retry else None

        await asyncio.Event().wait()  # drained: idle until cancelled

    async def drain(self) -> None:
        """Finish the request in flight (its entries are deleted once accepted), then close the client.

        The supervisor bounds this; an interrupted request leaves its entries in the stream for the next leader.
        """
        self._stopping = True
        self._wake.set()
        await self._idle.wait()
        await self.es.close()

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _send(self, batch: list[_Pending]) -> list[_Pending]:
        """Send `batch` until a request is accepted; returns the items to send again (per-item 429/5xx)."""
        backoff = _FIRST_BACKOFF_S
        while True:
            self.requests += 1
            try:
                response = await self.es.bulk(operations=bulk_body([p.action for p in batch]), refresh=False)
                break
            except ApiError as e:
                if e.meta.status != 429 and e.meta.status < 500:
                    # the whole request refused for good (e.g. 401): nothing can be done by resending
                    # soon, but nothing may be lost either: keep retrying, slowly, and say why
                    backoff = self.max_backoff_s
                self.last_error = f"_bulk refused: HTTP {e.meta.status}"
            except (EsConnectionError, ConnectionTimeout) as e:
                self.last_error = f"elasticsearch unreachable: {type(e).__name__}: {str(e)[:200]}"
            if self._stopping:  # shutting down: the actions stay in Redis for the next run
                return batch
            logger.warning("index sink: %s; retrying %d action(s) in %.1fs", self.last_error, len(batch), backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)
        self.last_error = None
        done: list[_Pending] = []
        retry: list[_Pending] = []
        failed: list[tuple[_Pending, dict[str, Any]]] = []
        items: list[dict[str, Any]] = response.body.get("items", [])
        # Walk backwards: an item to send again whose document a later action of this batch already
        # wrote is done (resending it would put the older version back).
        written_later: set[tuple[str, str]] = set()
        for i in reversed(range(len(batch))):
            p = batch[i]
            key = (p.action["index"], p.action["id"])
            # an answer with fewer items than sent: the missing ones go again
            result = next(iter(items[i].values())) if i < len(items) else {"status": 503}
            status = int(result.get("status", 500))
            # 409 on a versioned action: the index already holds this change or a newer one: done
            newer_there = status == 409 and bool(p.action.get("version"))
            if status < 300 or (p.action["op"] == "delete" and status == 404) or newer_there or key in written_later:
                done.append(p)
                written_later.add(key)
            elif status == 429 or status >= 500:
                retry.append(p)
            else:
                failed.append((p, result))
        retry.reverse()  # in stream order
        for p, result in failed:
            await record_failed(self.redis, p.action, result.get("error"), ttl_s=self.result_ttl_s, queue=self.queue)
            done.append(p)
        await self._ack(done, indexed=len(done) - len(failed), failed=len(failed))
        return retry

    async def _ack(self, done: list[_Pending], *, indexed: int, failed: int) -> None:
        by_stream: dict[str, list[str]] = {}
        for p in done:
            by_stream.setdefault(p.stream, []).append(p.entry_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            for stream, ids in by_stream.items():
                pipe.xdel(stream, *ids)
            pipe.hincrby(IndexKeys.stats, "indexed", indexed)
            pipe.hincrby(IndexKeys.stats, "failed", failed)
            await pipe.execute()
        self.indexed += indexed
        self.failed += failed

    async def backlog(self) -> int:
        async with self.redis.pipeline(transaction=False) as pipe:
            for s in self.streams:
                pipe.xlen(s)
            return sum(int(n) for n in await pipe.execute())

    async def health(self) -> ComponentHealth:
        if self.last_error:
            return ComponentHealth.failing(self.last_error)
        return ComponentHealth()

    async def status(self) -> IndexStatus:
        # totals from Redis (every leader's work), backlog: the actions waiting in the streams
        totals = await read_stats(self.redis, self.rules)
        return {
            "rules": self.rules,
            "indexed": totals["indexed"],
            "failed": totals["failed"],
            "backlog": totals["backlog"],
            "requests": self.requests,
            "error": self.last_error,
        }
