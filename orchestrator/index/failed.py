"""An index action Elasticsearch refused for good, kept as a failed `es_indexer` job.

`orchestrator jobs retry <id>` runs it again through the es_indexer plugin (same index, same
document or delete), e.g. after the mapping was fixed. The id comes from the change, so an action
sent twice (a replay after a crash) records one job.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from orchestrator.jobs.model import JobRecord, Keys

PLUGIN = "es_indexer"


def job_for(action: dict[str, Any], error: Any, *, queue: str = "default") -> JobRecord:
    params: dict[str, Any] = {"index": action["index"]}
    if action["op"] == "delete":
        params |= {"operation": "delete", "ids": [action["id"]]}
    else:
        params["documents"] = [{**(action.get("doc") or {}), "_id": action["id"]}]
    reason = error.get("reason") if isinstance(error, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    ts = time.time()
    return JobRecord(
        job_id=f"index:{action['rule']}:{action['change_id']}",
        plugin=PLUGIN,
        queue=queue,
        state="failed",
        params=params,
        source="index",
        enqueued_at=ts,
        finished_at=ts,
        error=f"elasticsearch refused the document: {kind}: {reason}"
        if kind
        else f"refused: {json.dumps(error)[:300]}",
        error_type=str(kind or "IndexError"),
        context={"index_action": action},
        trace=action.get("trace"),  # a re-run joins the trace of the change it came from
    )


async def record_failed(redis: Redis, action: dict[str, Any], error: Any, *, ttl_s: float, queue: str) -> str:
    """Write the failed job (kept `ttl_s` like other finished jobs); returns its id."""
    record = job_for(action, error, queue=queue)
    key = Keys.job(record.job_id)
    ts = record.finished_at or time.time()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping=record.to_hash())
        pipe.pexpire(key, int(ttl_s * 1000))
        pipe.zadd(Keys.state("failed"), {record.job_id: ts})
        pipe.zadd(Keys.plugin_jobs(PLUGIN), {record.job_id: ts})
        pipe.zadd(Keys.all_jobs, {record.job_id: ts})
        await pipe.execute()
    return record.job_id
