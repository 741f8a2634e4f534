"""The job store's read side for the dashboard and `orchestrator top`: pages, the last finished
jobs, throughput per time bucket, a job's log lines. The Client's read calls and the HTTP routes go
through these, next to `stats()`, so each number has one way to be computed."""

from __future__ import annotations

from typing import Any

from orchestrator.jobs.model import TERMINAL, Keys, iso, now
from orchestrator.jobs.store import JobStore

PAGE_SCAN_MAX = 20_000  # index entries a filtered job-list page may read

JobRows = list[dict[str, Any]]


async def jobs_page(
    store: JobStore,
    *,
    state: str | None = None,
    plugin: str | None = None,
    queue: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> JobRows:
    """Newest first, skipping `offset` matches: the job list with a queue filter and paging."""
    index = Keys.plugin_jobs(plugin) if plugin else Keys.state(state) if state else Keys.all_jobs
    wanted_state = state if plugin else None  # the state index needs no filtering by state
    if not (wanted_state or queue):
        ids = [i.decode() for i in await store.redis.zrevrange(index, offset, offset + limit - 1)]
        return [r.to_json() for r in await store.get_many(ids) if r is not None]
    # Filtered: read the index in growing chunks, bounded so a rare filter cannot scan a week of
    # jobs, and only the two fields the filter needs (decoding whole records cost 10x more).
    matches: list[str] = []
    skipped, start, chunk = 0, 0, max(limit * 4, 200)
    while len(matches) < limit and start < PAGE_SCAN_MAX:
        ids = [i.decode() for i in await store.redis.zrevrange(index, start, start + chunk - 1)]
        if not ids:
            break
        start, chunk = start + len(ids), min(chunk * 2, 5000)
        async with store.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(Keys.job(job_id), ["state", "queue"])
            fields = await pipe.execute()
        for job_id, (st, q) in zip(ids, fields, strict=True):
            if st is None or (wanted_state and st.decode() != wanted_state) or (queue and q != queue.encode()):
                continue
            if skipped < offset:
                skipped += 1
                continue
            matches.append(job_id)
            if len(matches) >= limit:
                break
    return [r.to_json() for r in await store.get_many(matches) if r is not None]


async def finished(store: JobStore, *, limit: int = 10) -> JobRows:
    """The last `limit` jobs that reached a final state, newest first (the state indexes are
    scored by the time a job entered the state)."""
    async with store.redis.pipeline(transaction=False) as pipe:
        for state in sorted(TERMINAL):
            pipe.zrevrange(Keys.state(state), 0, limit - 1, withscores=True)
        ranges = await pipe.execute()
    newest = sorted(((score, i.decode()) for r in ranges for i, score in r), reverse=True)[:limit]
    records = await store.get_many([job_id for _, job_id in newest])
    return [r.to_json() for r in records if r is not None]


async def throughput(store: JobStore, *, window_s: float = 3600.0, bucket_s: float = 60.0) -> dict[str, Any]:
    """Jobs enqueued and finished per bucket over the last `window_s`, oldest bucket first.

    Counted with ZCOUNT over the indexes (scored by enqueue time and by the time a job entered
    its final state): one pipelined round trip of O(log n) commands, however many jobs ran.
    """
    end = now()
    n = max(1, int(window_s // bucket_s))
    start = end - n * bucket_s
    series = {"enqueued": Keys.all_jobs, **{s: Keys.state(s) for s in sorted(TERMINAL)}}
    async with store.redis.pipeline(transaction=False) as pipe:
        for key in series.values():
            for b in range(n):
                lo = start + b * bucket_s
                pipe.zcount(key, f"({lo}" if b else lo, lo + bucket_s)
        counts = await pipe.execute()
    out: dict[str, Any] = {"start": iso(start), "end": iso(end), "bucket_s": bucket_s}
    for k, name in enumerate(series):
        out[name] = counts[k * n : (k + 1) * n]
    ended = sum(out["succeeded"]) + sum(out["failed"])
    out["failure_rate"] = round(sum(out["failed"]) / ended, 4) if ended else None
    return out


async def log_entries(store: JobStore, job_id: str, *, after: str = "-", limit: int = 1000) -> JobRows:
    """A job's captured lines after stream id `after` ("-": from the start), oldest first."""
    entries = await store.read_log(job_id, after=after, count=limit)
    return [{"id": entry_id, "stream": stream, "line": line} for entry_id, stream, line in entries]
