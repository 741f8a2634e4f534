"""Job records in Redis: the atomic transitions, the indexes by state and plugin, and stats.

Every transition is one round trip (a Lua script or a pipelined MULTI): the record, the state
indexes, arq's keys and the wake-up/done notifications change together or not at all.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix
from redis.exceptions import ResponseError

from orchestrator.errors import QueueFull
from orchestrator.jobs.group_commit import EnqueueGroup
from orchestrator.jobs.model import STATES, TERMINAL, JobRecord, JobState, Keys, RecordUpdate, encode_fields, now
from orchestrator.jobs.steps import WORKFLOW_STEP
from orchestrator.jobs.throttle import BacklogMode, lua_functions
from orchestrator.redis import scripts as lua
from orchestrator.redis.fence import Fence, fence_lua, no_fence_arg, raise_if_fenced

logger = logging.getLogger(__name__)

# What a worker needs of a claimed job (everything else stays in Redis).
_CLAIM_FIELDS = (
    "plugin", "params", "queue", "priority", "source", "attempt", "max_retries", "retry_backoff_s",
    "timeout_s", "context", "batch_id", "enqueued_at", "defer_until", "trace", "trace_first", "workflow",
    "previous",
)  # fmt: skip
# Added to a claimed job's score in arq's queue set (about 3,000 years in ms).
CLAIMED_OFFSET_MS = 10**14
# arq's in-progress key outlives any job: crash recovery releases jobs by heartbeat, not by TTL.
IN_PROGRESS_TTL_MS = 30 * 24 * 3600 * 1000

# The transitions, one script each (lua/*.lua: each file's header names its KEYS, ARGV and reply),
# given the constants above as Lua locals: claim.lua and enqueue.lua's push claim the same way.
_ENQUEUE = lua.script(
    "orchestrator.jobs", "enqueue.lua", fence_lua(), lua.cursor(), lua_functions(),
    constants={
        "CLAIM_FIELDS": _CLAIM_FIELDS, "CLAIM_ATTEMPT_AT": _CLAIM_FIELDS.index("attempt") + 1,
        "CLAIMED_OFFSET_MS": CLAIMED_OFFSET_MS, "PUSH_INSTANCE": lua.pattern(Keys.push_channel_format, "instance"),
    },
)  # fmt: skip
_CLAIM = lua.script(
    "orchestrator.jobs", "claim.lua", lua.cursor(), lua_functions(),
    constants={"CLAIM_FIELDS": _CLAIM_FIELDS, "CLAIMED_OFFSET_MS": CLAIMED_OFFSET_MS},
)  # fmt: skip
_FINISH = lua.script(
    "orchestrator.jobs",
    "finish.lua",
    lua_functions(),
    WORKFLOW_STEP,
    constants={"CLAIMED_OFFSET_MS": CLAIMED_OFFSET_MS},
)
_CANCEL = lua.script("orchestrator.jobs", "cancel.lua", WORKFLOW_STEP)
_RELEASE = lua.script(
    "orchestrator.jobs",
    "release.lua",
    lua.cursor(),
    lua_functions(),
    constants={"CLAIMED_OFFSET_MS": CLAIMED_OFFSET_MS},
)
_DELETE = lua.script("orchestrator.jobs", "delete.lua")
_SWEEP_THROTTLES = lua.script("orchestrator.jobs", "throttle_sweep.lua", lua_functions())
# A plugin/key with nothing running, held or waiting is forgotten after this long idle (its rate state too).
_THROTTLE_IDLE_MS = 3_600_000
_TRIM = lua.script("orchestrator.jobs", "trim.lua")
# Index entries checked per trim script call.
_TRIM_BATCH = 500


@dataclass(frozen=True)
class EnqueueItem:
    """One prepared job: its record, arq's payload and its score in the queue set."""

    record: JobRecord
    arq_payload: bytes
    score: float
    throttled: bool = False  # its plugin has a throttle: counted for max_queued under record.throttle_key
    fields: list[str] | None = None  # the record's hash fields, when made already (JobStore.enqueue)


@dataclass(frozen=True)
class Checkpoint:
    """A hash write that lands atomically with an enqueue (e.g. change capture's position)."""

    key: str
    fields: Mapping[str, str]
    streams: Mapping[str, Sequence[str]] = field(default_factory=dict)  # stream key -> payloads to XADD


class JobStore:
    """Reads and writes job records. Shared by the client, the workers and the monitor.

    Args:
        redis: an arq connection (a redis.asyncio client); the caller owns and closes it.
        result_ttl_s: how long finished records, results and logs are kept.
    """

    def __init__(self, redis: ArqRedis, *, result_ttl_s: float) -> None:
        self.redis = redis
        self.ttl_ms = int(result_ttl_s * 1000)
        self._enqueue = redis.register_script(_ENQUEUE)
        self._cancel = redis.register_script(_CANCEL)
        self._release = redis.register_script(_RELEASE)
        self._claim = redis.register_script(_CLAIM)
        self._finish = redis.register_script(_FINISH)
        self._delete = redis.register_script(_DELETE)
        self._sweep_throttles = redis.register_script(_SWEEP_THROTTLES)
        self._trim = redis.register_script(_TRIM)
        # single enqueues that overlap share a script call (jobs/group_commit.py); a lone one pushes
        self._group: EnqueueGroup[EnqueueItem] = EnqueueGroup(
            lambda items, backlog: self.enqueue_many(items, push=True, backlog=backlog),
            lambda item: (item.record.plugin, item.record.throttle_key or ""),
        )
        # queue -> this process's push channel, for the queues whose worker offers slots to pushes
        # (set by the worker once its offer is in Redis): claims and finishes keep the offer exact.
        self.offering: dict[str, str] = {}

    # -- writes --
    async def enqueue(
        self, record: JobRecord, *, arq_payload: bytes, score: float, push: bool = False, throttled: bool = False
    ) -> int:
        """Create the record and the arq job at once; with `push`, hand it straight to an idle
        worker that offered a slot, if any (see lua/enqueue.lua). With `push`, enqueues that
        overlap share one script call (jobs/group_commit.py): only a call of one job pushes.

        Returns 1 (enqueued), 0 (a job with this id exists: nothing written) or -1 (the plugin is
        disabled: the flag is checked inside the same script, so a disable is never raced).
        """
        # the fields are made here, so that a record that does not encode fails its own caller, not
        # the triggers that share its call
        item = EnqueueItem(record, arq_payload, score, throttled, fields=record.to_enqueue_fields())
        if push:
            return await self._group.enqueue(item)
        return (await self.enqueue_many([item]))[0]

    async def wait_enqueued(self) -> None:
        """Until every enqueue started so far has its answer (a client closing its connection)."""
        await self._group.wait_idle()

    async def enqueue_many(
        self,
        items: Sequence[EnqueueItem],
        *,
        fence: Fence | None = None,
        checkpoint: Checkpoint | None = None,
        push: bool = False,
        backlog: BacklogMode = "refuse",
    ) -> list[int]:
        """Enqueue every item and write `checkpoint` in one atomic script; one outcome per item (see enqueue).

        `backlog`: what a throttled plugin's `max_queued` does to items that would pass it: refuse
        the whole call, or (schedules, change capture) let them in and count them (lua/throttle.lua).

        Raises:
            FencedError: `fence` is not the lease's current token: nothing was written.
            QueueFull: `backlog` is "refuse" and a plugin/key would pass its max_queued: nothing was written.
        """
        pairs = [x for kv in (checkpoint.fields.items() if checkpoint else ()) for x in kv]
        # the checkpoint's key goes with its fields: the script reads it only when there are some
        keys = [Keys.leader, Keys.plugin_enabled, Keys.all_jobs] + ([checkpoint.key] if checkpoint and pairs else [])
        args: list[Any] = [no_fence_arg(fence), len(items), len(pairs) // 2]
        args += _backlog_section(items, backlog)
        args += pairs
        streams = [(k, v) for k, v in (checkpoint.streams.items() if checkpoint else ()) if v]
        keys += [k for k, _ in streams]
        entries = [x for slot, (_, payloads) in enumerate(streams, 1) for p in payloads for x in (slot, p)]
        args += [len(streams), len(entries) // 2, *entries]
        for item in items:
            record = item.record
            job_id = record.job_id
            fields = item.fields if item.fields is not None else record.to_enqueue_fields()
            keys += [
                Keys.job(job_id),
                job_key_prefix + job_id,
                Keys.queue(record.queue),
                Keys.state(record.state),
                Keys.plugin_jobs(record.plugin),
            ]
            args += [
                job_id, item.arq_payload, item.score, record.enqueued_at, Keys.wake_channel(record.queue),
                record.plugin, len(fields), *fields,
            ]  # fmt: skip
        if push and len(items) == 1 and checkpoint is None and items[0].record.state == "queued":
            record = items[0].record
            keys += [Keys.offers(record.queue), Keys.state("running"), in_progress_key_prefix + record.job_id]
            # the head check compares with the enqueue's own clock, the one its score was made from
            now_ms = round((record.enqueued_at or now()) * 1000, 3)
            args += ["push", now_ms, now(), IN_PROGRESS_TTL_MS, uuid.uuid4().hex[:12]]
        try:
            reply = await self._enqueue(keys=keys, args=args)
        except ResponseError as e:
            raise_if_fenced(e)
            raise
        if reply and reply[0] == b"full":
            _, plugin, key, cap, waiting = reply
            raise QueueFull(plugin.decode(), key.decode(), int(cap), int(waiting))
        return [int(x) for x in reply]

    async def claim(
        self, queue: str, limit: int, instance_id: str, *, in_progress_ttl_ms: int, look_ahead_ms: int
    ) -> tuple[list[JobRecord], float | None]:
        """Claim up to `limit` ready jobs; returns their records, and when the next deferred one is due (epoch ms).

        One read (the ready ids and the next due time) and, only when there are ready jobs, one
        script that claims them atomically (so instances never contend for an id).
        """
        ts = now()
        # Scores have microsecond resolution (Submitter.prepare): a job enqueued earlier in this
        # same millisecond is due now, not a millisecond later.
        now_ms = round(ts * 1000, 3)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(Keys.queue(queue), "-inf", now_ms, start=0, num=limit)
            pipe.zrangebyscore(Keys.queue(queue), f"({now_ms}", now_ms + look_ahead_ms, start=0, num=1, withscores=True)
            ready, upcoming = await pipe.execute()
        next_due_ms = float(upcoming[0][1]) if upcoming else None
        if not ready:
            return [], next_due_ms
        ids = [i.decode() for i in ready]
        # The claim's time (the jobs' started_at) is read again, after the read: a job enqueued
        # while the read was on its way was enqueued after `ts` (a priority's score is below its
        # enqueue time, so it is ready at once), and must not start before it was enqueued.
        _, held, _, claimed = await self._claim_ids(
            queue, ids, instance_id, now(), in_progress_ttl_ms, "ids", look_ahead_ms
        )
        if held:
            # A throttle held a candidate back (lua/throttle.lua): it left the ready range, or stayed as
            # the scout due at the next allowed start, after the read above. Look again now: the jobs
            # behind it are claimed, and the next read sees when the scout is due.
            next_due_ms = now_ms
        return claimed, next_due_ms

    async def claim_head(
        self, queue: str, job_id: str, instance_id: str, *, in_progress_ttl_ms: int, look_ahead_ms: int
    ) -> tuple[list[JobRecord], bool, float | None] | None:
        """Claim `job_id`, named by an enqueue's wake-up, in one round trip, if it is the queue's first
        ready job. Returns (the claimed record, or none if another worker was first; whether more
        are ready; when the next deferred one is due), or None when it was not first (read, then claim).
        """
        ok, more, next_due, claimed = await self._claim_ids(
            queue, [job_id], instance_id, now(), in_progress_ttl_ms, "head", look_ahead_ms
        )
        return (claimed, more, next_due) if ok else None

    async def _claim_ids(
        self, queue: str, ids: list[str], instance_id: str, ts: float, in_progress_ttl_ms: int, mode: str,
        look_ahead_ms: int,
    ) -> tuple[bool, bool, float | None, list[JobRecord]]:  # fmt: skip
        keys = [
            Keys.queue(queue), Keys.state("queued"), Keys.state("deferred"), Keys.state("running"), Keys.offers(queue),
        ]  # fmt: skip
        for job_id in ids:
            keys += [in_progress_key_prefix + job_id, Keys.job(job_id), job_key_prefix + job_id]
        claim_id = f"{instance_id}:{uuid.uuid4().hex[:12]}"
        now_ms = round(ts * 1000, 3)
        channel = self.offering.get(queue, "")
        args: list[Any] = [ts, now_ms, instance_id, in_progress_ttl_ms, claim_id, mode, look_ahead_ms, channel, *ids]
        ok, more, next_due, *flat = await self._claim(keys=keys, args=args)
        claimed = []
        for job_id, values in zip(flat[::2], flat[1::2], strict=True):
            raw = {f: v for f, v in zip(_CLAIM_FIELDS, values, strict=True) if v is not None}
            claimed.append(
                JobRecord.from_hash(raw, job_id=job_id.decode(), state="running", started_at=ts, claim=claim_id)
            )
        return bool(ok), bool(more), float(next_due) if next_due is not None else None, claimed

    async def finish(
        self,
        record: JobRecord,
        new_state: JobState,
        update: RecordUpdate,
        *,
        retry_score_ms: int = 0,
        frees_slot: bool = True,
    ) -> bool:
        """Leave `running` for a final state, `deferred` (a retry at `retry_score_ms`) or `queued` (put back).

        `frees_slot=False`: the job never held one of this worker's slots (a push it had no room
        for), so its worker's push offer is left as it is.

        Returns False when the claim is no longer current (this instance was presumed dead and
        the job was given to another): nothing was written.
        """
        job_id = record.job_id
        mode = "final" if new_state in TERMINAL else "retry" if new_state == "deferred" else "putback"
        args: list[Any] = [
            job_id, now(), self.ttl_ms, mode, retry_score_ms, Keys.done_channel(job_id), record.claim,
            Keys.wake_channel(record.queue), self.offering.get(record.queue, "") if frees_slot else "",
        ]  # fmt: skip
        for k, v in encode_fields({**update, "state": new_state}).items():
            args += [k, v]
        keys = [
            Keys.job(job_id),
            Keys.state("running"),
            Keys.state(new_state),
            in_progress_key_prefix + job_id,
            job_key_prefix + job_id,
            Keys.queue(record.queue),
            Keys.offers(record.queue),
            Keys.log(job_id),
        ]
        return bool(await self._finish(keys=keys, args=args))

    async def offer(self, queue: str, channel: str, slots: int) -> None:
        """Offer `slots` free slots of the worker reading `channel` to pushes (lua/enqueue.lua)."""
        await self.redis.hset(Keys.offers(queue), channel, str(slots))  # type: ignore[misc]
        self.offering[queue] = channel

    async def withdraw_offer(self, queue: str, channel: str) -> None:
        """No more pushes to this worker (it stops taking jobs)."""
        self.offering.pop(queue, None)
        await self.redis.hdel(Keys.offers(queue), channel)  # type: ignore[misc]

    @staticmethod
    def pushed_record(data: bytes) -> JobRecord | None:
        """The job a push message hands over, claimed for this worker (None if it is not one)."""
        try:
            job_id, claim, started_at, values = json.loads(data)
            raw = {f: v for f, v in zip(_CLAIM_FIELDS, values, strict=True) if v is not None and v is not False}
            return JobRecord.from_hash(raw, job_id=job_id, state="running", started_at=float(started_at), claim=claim)
        except (ValueError, TypeError, AttributeError):  # not our script's message: never crash the listener
            return None

    async def cancel(self, job_id: str, queue: str) -> str:
        """'cancelled' (it was waiting), 'cancelling' (it runs: its worker stops it), a final state, or 'missing'."""
        keys = [
            Keys.job(job_id),
            job_key_prefix + job_id,
            Keys.queue(queue),
            in_progress_key_prefix + job_id,
            Keys.state("queued"),
            Keys.state("deferred"),
            Keys.state("cancelled"),
            abort_jobs_ss,
            Keys.log(job_id),
        ]
        args: list[Any] = [job_id, now(), self.ttl_ms, Keys.done_channel(job_id), Keys.cancel_channel]
        result = await self._cancel(keys=keys, args=args)
        return result.decode() if isinstance(result, bytes) else str(result)

    async def release_instance(self, instance_id: str) -> list[str]:
        """Put the jobs `instance_id` was running back on their queues, and forget the instance."""
        running = [i.decode() for i in await self.redis.zrange(Keys.state("running"), 0, -1)]
        owners: list[list[bytes | None]] = []
        if running:
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in running:
                    pipe.hmget(Keys.job(job_id), ["instance", "queue"])
                owners = await pipe.execute()
        keys = [Keys.state("running"), Keys.state("queued"), Keys.instances, Keys.heartbeat(instance_id)]
        args: list[Any] = [instance_id, now()]
        for job_id, (owner, queue) in zip(running, owners, strict=True):
            if owner is not None and owner.decode() != instance_id:
                continue
            q = queue.decode() if queue is not None else ""
            keys += [in_progress_key_prefix + job_id, Keys.job(job_id), Keys.queue(q)]
            args += [job_id, Keys.wake_channel(q)]
        ids = await self._release(keys=keys, args=args)
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def delete(self, record: JobRecord) -> int | str:
        """Delete a job that is not running (as read in `record`). Returns 1 (deleted), 0 (it was gone),
        or its current state when that is `running` or changed since it was read."""
        keys = [
            Keys.job(record.job_id),
            Keys.log(record.job_id),
            job_key_prefix + record.job_id,
            Keys.queue(record.queue),
            Keys.state(record.state),
            Keys.plugin_jobs(record.plugin),
            Keys.all_jobs,
        ]
        out = await self._delete(keys=keys, args=[record.job_id, record.state])
        return out.decode() if isinstance(out, bytes) else int(out)

    async def sweep_throttles(self) -> tuple[int, int]:
        """The throttles' safety net (lua/throttle_sweep.lua): (stale running entries dropped, held jobs brought back)."""
        dropped, released = await self._sweep_throttles(keys=[], args=[round(now() * 1000), _THROTTLE_IDLE_MS])
        return int(dropped), int(released)

    async def ids_in_state(self, state: str, *, entered_before: float) -> list[str]:
        """Jobs that entered `state` before this time (the state index is scored by that moment)."""
        return [i.decode() for i in await self.redis.zrangebyscore(Keys.state(state), "-inf", entered_before)]

    async def append_log(self, job_id: str, lines: list[tuple[str, str]], *, max_lines: int) -> None:
        if not lines:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, line in lines:
                pipe.xadd(Keys.log(job_id), {"s": stream, "l": line}, maxlen=max_lines, approximate=True)
            pipe.pexpire(Keys.log(job_id), self.ttl_ms)
            await pipe.execute()

    # -- reads --
    async def get(self, job_id: str) -> JobRecord | None:
        raw = await self.redis.hgetall(Keys.job(job_id))  # type: ignore[misc]
        return _from_hash(job_id, raw)

    async def get_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        if not job_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(Keys.job(job_id))
            raws = await pipe.execute()
        return [_from_hash(job_id, raw) for job_id, raw in zip(job_ids, raws, strict=True)]

    async def states_of(self, job_ids: list[str]) -> list[str | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(Keys.job(job_id), "state")
            raws = await pipe.execute()
        return [r.decode() if r else None for r in raws]

    async def stats(self, queues: dict[str, int]) -> dict[str, Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for s in STATES:
                pipe.zcard(Keys.state(s))
            for q in queues:
                pipe.zcard(Keys.queue(q))
            pipe.zrange(Keys.state("running"), 0, -1)
            counts = await pipe.execute()
        states = dict(zip(STATES, counts[: len(STATES)], strict=True))
        totals = counts[len(STATES) : len(STATES) + len(queues)]
        # Running jobs are few (bounded by the total concurrency): count them per queue from their records.
        running_ids = [i.decode() for i in counts[-1]]
        running: dict[str, int] = dict.fromkeys(queues, 0)
        if running_ids:
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in running_ids:
                    pipe.hget(Keys.job(job_id), "queue")
                for q in await pipe.execute():
                    if q is not None and q.decode() in running:
                        running[q.decode()] += 1
        out_queues = {
            # arq keeps a running job in its queue set until it finishes
            q: {"depth": max(total - running[q], 0), "running": running[q], "concurrency": concurrency}
            for (q, concurrency), total in zip(queues.items(), totals, strict=True)
        }
        return {"states": states, "queues": out_queues}

    async def trim_indexes(self) -> int:
        """Drop index entries whose records have expired (lua/trim.lua).

        Entries older than the result TTL are only candidates: a record expires a TTL after its
        job *ended*, and a job that waited longer than that (deferred, in a backlog) is alive.
        """
        cutoff = now() - self.ttl_ms / 1000
        removed = 0
        keys = [Keys.state(s) for s in STATES] + [Keys.all_jobs]
        async for key in self.redis.scan_iter(match=Keys.plugin_jobs("*"), count=200):
            keys.append(key.decode() if isinstance(key, bytes) else key)
        for key in keys:
            offset = 0
            while True:
                ids = [i.decode() for i in await self.redis.zrangebyscore(
                    key, "-inf", cutoff, start=offset, num=_TRIM_BATCH
                )]  # fmt: skip
                if not ids:
                    break
                dropped = int(await self._trim(keys=[key, *map(Keys.job, ids)], args=[cutoff, *ids]))
                removed += dropped
                offset += len(ids) - dropped  # the kept ones stay ahead of the next page
                if len(ids) < _TRIM_BATCH:
                    break
        return removed

    async def close_ended_batches(self) -> int:
        """Start the result TTL of every open batch whose jobs all ended (or are gone); how many."""
        closed = 0
        for raw in await self.redis.zrange(Keys.open_batches, 0, -1):
            batch_id = raw.decode()
            job_ids = await self.redis.hget(Keys.batch(batch_id), "job_ids")  # type: ignore[misc]
            if job_ids is not None:
                states = await self.states_of(json.loads(job_ids))
                if any(s is not None and s not in TERMINAL for s in states):
                    continue
                await self.redis.pexpire(Keys.batch(batch_id), self.ttl_ms)
            closed += await self.redis.zrem(Keys.open_batches, batch_id)
        return closed

    async def read_log(self, job_id: str, after: str = "-", count: int = 1000) -> list[tuple[str, str, str]]:
        """(entry id, stream, line) after the given stream id."""
        start = "-" if after == "-" else f"({after}"
        entries = await self.redis.xrange(Keys.log(job_id), min=start, max="+", count=count)
        return [(eid.decode(), f[b"s"].decode(), f[b"l"].decode()) for eid, f in entries]

    async def published_json(self, key: str) -> dict[str, Any]:
        raw = await self.redis.hgetall(key)  # type: ignore[misc]
        return {k.decode(): json.loads(v) for k, v in raw.items()}


def _backlog_section(items: Sequence[EnqueueItem], mode: BacklogMode) -> list[Any]:
    """The enqueue's backlog section (lua/throttle.lua throttle_backlog): the throttled items grouped by plugin/key."""
    groups: dict[tuple[str, str], list[str]] = {}
    for item in items:
        if item.throttled:
            groups.setdefault((item.record.plugin, item.record.throttle_key or ""), []).append(item.record.job_id)
    section: list[Any] = [mode, now(), len(groups)]
    for (plugin, key), ids in groups.items():
        section += [plugin, key, len(ids), *ids]
    return section


def _from_hash(job_id: str, raw: dict[bytes, bytes]) -> JobRecord | None:
    """A record, or None for a missing one (or a leftover hash that lacks the essential fields)."""
    if not raw or b"plugin" not in raw or b"queue" not in raw:
        return None
    return JobRecord.from_hash(raw, job_id=job_id)
