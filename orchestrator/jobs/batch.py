"""Batches: many jobs validated together, enqueued only if every entry is valid."""

from __future__ import annotations

import json
from typing import Any

from orchestrator.errors import JobError, NotFoundError, OrchestratorError
from orchestrator.jobs.model import STATES, TERMINAL, Keys, new_job_id, now
from orchestrator.jobs.submit import JobRequest, PreparedJob, Submitter


class BatchError(JobError):
    """At least one batch entry is invalid; nothing was enqueued.

    Args:
        problems: one line per bad entry, naming its index.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            f"{len(problems)} invalid batch entr{'y' if len(problems) == 1 else 'ies'}: " + "; ".join(problems)
        )


def parse_batch(data: Any) -> list[dict[str, Any]]:
    """The batch file: a JSON list of {"plugin": ..., "params": {...}} (plus optional priority/queue/job_id)."""
    if isinstance(data, dict) and isinstance(data.get("jobs"), list):
        data = data["jobs"]
    if not isinstance(data, list) or not data:
        raise BatchError(['expected a non-empty JSON list of {"plugin": ..., "params": {...}}'])
    return data


async def submit_batch(
    submitter: Submitter,
    entries: list[dict[str, Any]],
    *,
    source: str = "batch",
    trace: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Validate every entry first (one bad entry: nothing enqueued), then enqueue them all.

    `trace`: the trigger's trace context, which every job of the batch joins.
    """
    batch_id = new_job_id()
    prepared: list[PreparedJob] = []
    problems: list[str] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("plugin"), str):
            problems.append(f"[{index}]: expected an object with a 'plugin' name")
            continue
        params = entry.get("params", {})
        if not isinstance(params, dict):
            problems.append(f"[{index}] {entry['plugin']}: 'params' must be an object")
            continue
        request = JobRequest(
            plugin=entry["plugin"],
            params=params,
            priority=entry.get("priority"),
            queue=entry.get("queue"),
            job_id=entry.get("job_id"),
            source=source,
            batch_id=batch_id,
            trace=trace,
        )
        try:
            prepared.append(await submitter.prepare(request))
        except OrchestratorError as e:
            problems.append(f"[{index}] {entry['plugin']}: {e}")
    if problems:
        raise BatchError(problems)
    job_ids = [p.record.job_id for p in prepared]
    # one script for the whole batch: past a plugin's max_queued it is refused whole (QueueFull),
    # before the batch's own hash is written
    outcomes = await submitter.write_many(prepared, backlog="refuse")
    # No TTL while a job of it may wait: housekeeping starts the TTL once every job ended
    # (JobStore.close_ended_batches), so a batch lives as long as its jobs. Written after the jobs:
    # an open batch whose record of a job is missing means that job ended and expired.
    created_at = now()
    async with submitter.store.redis.pipeline(transaction=True) as pipe:
        pipe.hset(Keys.batch(batch_id), mapping={"job_ids": json.dumps(job_ids), "created_at": str(created_at)})
        pipe.zadd(Keys.open_batches, {batch_id: created_at})
        await pipe.execute()
    return {"batch_id": batch_id, "job_ids": job_ids, "created": sum(1 for o in outcomes if o == 1)}


async def batch_status(submitter: Submitter, batch_id: str) -> dict[str, Any]:
    raw = await submitter.store.redis.hget(Keys.batch(batch_id), "job_ids")  # type: ignore[misc]
    if raw is None:
        msg = f"no batch {batch_id!r}"
        raise NotFoundError(msg)
    job_ids: list[str] = json.loads(raw)
    states = await submitter.store.states_of(job_ids)
    counts: dict[str, int] = {s: 0 for s in STATES}
    for s in states:
        if s is not None:
            counts[s] += 1
    return {
        "batch_id": batch_id,
        "job_ids": job_ids,
        "states": counts,
        "done": all(s in TERMINAL for s in states if s is not None),
        "total": len(job_ids),
    }
