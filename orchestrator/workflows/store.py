"""Workflow records in Redis, beside the jobs: create (the record, the graph, the counters and the
first steps in one script), read (the record with each step's job state) and cancel.

The steps after the first are enqueued by the finish of what they wait for (jobs/lua/workflow.lua),
never from here.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis

from orchestrator.errors import ConflictError
from orchestrator.jobs.model import Keys, iso, new_job_id, now
from orchestrator.jobs.steps import WORKFLOW_STEP
from orchestrator.jobs.store import JobStore
from orchestrator.jobs.submit import arq_payload
from orchestrator.redis import scripts as lua

_CREATE = lua.script("orchestrator.workflows", "create.lua", WORKFLOW_STEP, lua.cursor())
_CANCEL = lua.script("orchestrator.workflows", "cancel.lua", WORKFLOW_STEP)
_RESUME = lua.script("orchestrator.workflows", "resume.lua", WORKFLOW_STEP)


def graph_key(workflow_id: str) -> str:
    return Keys.workflow(workflow_id) + ":graph"


@dataclass(frozen=True)
class NewWorkflow:
    """What WorkflowStore.create writes (workflows/submit.py prepares it)."""

    workflow_id: str
    record: dict[str, str]
    graph: dict[str, str]
    left: dict[str, str]
    entries: list[int]


class WorkflowStore:
    """Reads and writes workflows.

    Args:
        redis: the shared connection (the caller owns it).
        result_ttl_s: how long an ended workflow and its jobs are kept.
    """

    def __init__(self, redis: ArqRedis, *, result_ttl_s: float) -> None:
        self.redis = redis
        self.ttl_ms = int(result_ttl_s * 1000)
        self._create = redis.register_script(_CREATE)
        self._cancel = redis.register_script(_CANCEL)
        self._resume = redis.register_script(_RESUME)

    async def create(self, new: NewWorkflow) -> bool:
        """False when a workflow with this id exists (nothing written)."""
        wid = new.workflow_id
        record = [x for kv in new.record.items() for x in kv]
        left = [x for kv in new.left.items() for x in kv]
        args: list[Any] = [wid, now(), ",".join(map(str, new.entries)), len(record), *record, len(left), *left]
        args += [x for kv in new.graph.items() for x in kv]
        return bool(await self._create(keys=[Keys.workflow(wid), Keys.all_workflows], args=args))

    async def cancel(self, workflow_id: str) -> str:
        """'cancelled', the state it had already ended in, or 'missing'."""
        out = await self._cancel(keys=[Keys.workflow(workflow_id)], args=[workflow_id, now(), self.ttl_ms])
        return out.decode() if isinstance(out, bytes) else str(out)

    async def resume(self, workflow_id: str, step: str) -> str:
        """Start a failed workflow again from its failed step (and the steps its failure
        cancelled); returns the new job id of `step`. Raises ConflictError when it is not failed."""
        graph = graph_key(workflow_id)
        nodes = int(await self.redis.hget(Keys.workflow(workflow_id), "nodes") or 0)  # type: ignore[misc]
        names = [f"{i}:job" for i in range(1, nodes + 1)]
        job_ids = await self.redis.hmget(graph, names) if names else []  # type: ignore[misc]
        steps = [(str(i), j.decode()) for i, j in enumerate(job_ids, 1) if j is not None]
        states = await JobStore(self.redis, result_ttl_s=self.ttl_ms / 1000).states_of([j for _, j in steps])
        args: list[Any] = [workflow_id, now(), self.ttl_ms]
        restarted: list[str] = []
        for (node, _), state in zip(steps, states, strict=True):
            if state in ("failed", "cancelled"):
                new_id = new_job_id()
                payload = arq_payload(new_id, int(now() * 1000))
                args += [node, new_id, payload]
                restarted.append(node)
        out = await self._resume(keys=[Keys.workflow(workflow_id)], args=args)
        if not isinstance(out, list):
            msg = f"workflow {workflow_id} is {out.decode() if isinstance(out, bytes) else out}: only a failed one resumes"
            raise ConflictError(msg)
        new_ids: dict[str, str] = dict(zip(restarted, (i.decode() for i in out), strict=True))
        if not new_ids.get(step):
            msg = f"step {step} of workflow {workflow_id} was not failed or cancelled"
            raise ConflictError(msg)
        return new_ids[step]

    async def state(self, workflow_id: str) -> str | None:
        raw = await self.redis.hget(Keys.workflow(workflow_id), "state")  # type: ignore[misc]
        return raw.decode() if raw is not None else None

    async def get(self, workflow_id: str) -> dict[str, Any] | None:
        """The public workflow shape: its state, timings and the steps with their jobs' states."""
        raw = await self.redis.hgetall(Keys.workflow(workflow_id))  # type: ignore[misc]
        if not raw or b"tree" not in raw:
            return None
        rec = {k.decode(): v.decode() for k, v in raw.items()}
        tree = json.loads(rec["tree"])
        jobs = list(_job_steps(tree))
        if jobs:  # a resumed step runs as a new job: the graph names the current one
            current = await self.redis.hmget(graph_key(workflow_id), [f"{s['step']}:job" for s in jobs])  # type: ignore[misc]
            for step, job_id in zip(jobs, current, strict=True):
                if job_id is not None:
                    step["job_id"] = job_id.decode()
        async with self.redis.pipeline(transaction=False) as pipe:
            for step in jobs:
                pipe.hmget(Keys.job(step["job_id"]), ["state", "started_at", "finished_at", "error"])
            rows = await pipe.execute() if jobs else []
        state = rec["state"]
        counts: Counter[str] = Counter()
        for step, (st, started, finished, error) in zip(jobs, rows, strict=True):
            shown = st.decode() if st else ("pending" if state == "running" else "cancelled")
            step["state"] = shown
            step["started_at"] = iso(float(started)) if started else None
            step["finished_at"] = iso(float(finished)) if finished else None
            if error:
                step["error"] = error.decode()
            counts[shown] += 1
        created, finished_at = float(rec["created_at"]), rec.get("finished_at")
        return {
            "workflow_id": workflow_id,
            "name": rec.get("name") or None,
            "source": rec.get("source"),
            "state": state,
            "created_at": iso(created),
            "finished_at": iso(float(finished_at)) if finished_at else None,
            "duration_s": round(float(finished_at) - created, 6) if finished_at else None,
            "error": rec.get("error"),
            "result": json.loads(rec["result"]) if "result" in rec else None,
            "counts": dict(counts),
            "steps": tree,
        }

    async def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest workflows, newest first (state and timings only)."""
        ids = [i.decode() for i in await self.redis.zrevrange(Keys.all_workflows, 0, limit - 1)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for wid in ids:
                pipe.hmget(Keys.workflow(wid), ["state", "name", "created_at", "finished_at", "jobs"])
            rows = await pipe.execute() if ids else []
        out = []
        for wid, (state, name, created, finished, jobs) in zip(ids, rows, strict=True):
            if state is None:
                continue  # expired: its index entry is trimmed by trim()
            out.append({
                "workflow_id": wid,
                "name": name.decode() if name else None,
                "state": state.decode(),
                "created_at": iso(float(created)) if created else None,
                "finished_at": iso(float(finished)) if finished else None,
                "jobs": int(jobs) if jobs else 0,
            })  # fmt: skip
        return out

    async def outcomes(self) -> dict[str, int]:
        """How many workflows ended in each state (metrics)."""
        raw = await self.redis.hgetall(Keys.workflow_outcomes)  # type: ignore[misc]
        return {k.decode(): int(v) for k, v in raw.items()}

    async def trim(self) -> int:
        """Drop index entries of workflows older than the TTL (their records are gone or going)."""
        return int(await self.redis.zremrangebyscore(Keys.all_workflows, "-inf", now() - self.ttl_ms / 1000))


def _job_steps(tree: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if tree["kind"] == "job":
        yield tree
    for child in tree.get("steps", ()):
        yield from _job_steps(child)
