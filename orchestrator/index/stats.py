"""Redis keys of the index sink that the monitor reads (no Elasticsearch import here)."""

from __future__ import annotations

from redis.asyncio import Redis

from orchestrator.cdc.index_actions import index_stream


class IndexKeys:
    stats = "orch:index:stats"  # hash: indexed, failed (documents, since the Redis was created)


async def read_stats(redis: Redis, rules: list[str]) -> dict[str, int]:
    """{"indexed", "failed", "backlog"}: the counters and the actions waiting in the rules' streams."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hmget(IndexKeys.stats, ["indexed", "failed"])
        for rule in rules:
            pipe.xlen(index_stream(rule))
        out = await pipe.execute()
    indexed, failed = (int(x or 0) for x in out[0])
    return {"indexed": indexed, "failed": failed, "backlog": sum(int(n) for n in out[1:])}
