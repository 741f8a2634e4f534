"""A Redis connection for change capture's bulk enqueue: the same pool settings, a faster packer.

One atomic write of 500 jobs is one EVALSHA with about 23,000 arguments. redis-py's asyncio
connection packs those in Python (about 0.5 µs per argument: 12 ms per write, measured here),
while its sync client already uses hiredis' C packer when available; hiredis comes with arq
(`redis[hiredis]`) and packs the same command in 1.6 ms. The poller writes through its own pool
with that packer; nothing else in the process is affected.
"""

from __future__ import annotations

from typing import Any, cast

import hiredis
from arq.connections import ArqRedis
from redis.asyncio import BlockingConnectionPool

from orchestrator.jobs.store import JobStore
from orchestrator.jobs.submit import Submitter

_POOL_WAIT_S = 20


def _pack_command(self: Any, *args: Any) -> list[bytes]:
    # As redis-py's own: a command name with a space ("CONFIG GET") is sent as separate arguments.
    if isinstance(args[0], str):
        args = (*args[0].encode().split(), *args[1:])
    elif b" " in args[0]:
        args = (*args[0].split(), *args[1:])
    return [hiredis.pack_command(args)]


def bulk_submitter(submitter: Submitter) -> tuple[Submitter, ArqRedis | None]:
    """A Submitter like `submitter` on a one-connection pool of its own with the C packer, and that
    client (the caller closes it); or `submitter` itself and None where the shared pool is not a
    plain one (Sentinel: its connections are tied to the pool that discovers the primary).

    One connection is enough: the poller sends one write at a time (README, "Connection budget",
    counts change capture as about one connection).
    """
    pool = submitter.store.redis.connection_pool
    base = pool.connection_class
    if "Sentinel" in type(pool).__name__ or "Sentinel" in base.__name__:
        return submitter, None
    connection_class = type(f"Bulk{base.__name__}", (base,), {"pack_command": _pack_command})
    bulk_pool = BlockingConnectionPool(
        connection_class=connection_class, max_connections=1, timeout=_POOL_WAIT_S, **pool.connection_kwargs
    )
    # from_pool: closing the client closes its pool too
    redis = cast(ArqRedis, ArqRedis.from_pool(bulk_pool))
    store = JobStore(redis, result_ttl_s=submitter.store.ttl_ms / 1000)
    return Submitter(store, submitter.catalog, submitter.queues, submitter.defaults), redis
