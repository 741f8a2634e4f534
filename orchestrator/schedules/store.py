"""Schedules in Redis: definitions, next-fire and last-fire state, counters and history.

Keys (all under `orch:sched...`):
- `orch:schedules` hash: id -> `{"spec": {...}, "config_fp", "note", "removed_at"}` (see StoredSchedule).
- `orch:schedules:version` counter, bumped with every definition change, which is also published
  on `orch:schedules:changed`: the scheduler sleeps until its next due time or that message, and
  compares the counter after a reconnect (a message sent while it was away is not lost).
- `orch:schedule-state` hash: `<id>|next` (the next slot not yet handled), `<id>|trigger` (what
  `next` was computed for), `<id>|slot`, `<id>|job`, `<id>|at` (the last fire). The scheduler
  writes it in the same atomic script as the jobs it enqueues (JobStore.enqueue_many's checkpoint).
- `orch:schedule-stats` hash: `<id>|fires`, `<id>|misfires`, `<id>|overlap_skips`, `<id>|errors`.
- `orch:schedule-history:<id>` list, newest first, capped: fires, skipped slots, overlap skips.

Writes made by the scheduler carry the lease's fencing token (redis/fence.py); writes made by users
(add, remove, pause, run now) carry none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from orchestrator.errors import JobError, NotFoundError
from orchestrator.jobs.model import Keys, iso, now
from orchestrator.jobs.submit import JobRequest, Submitter
from orchestrator.redis import scripts as lua
from orchestrator.redis.fence import Fence, fence_lua, no_fence_arg, raise_if_fenced
from orchestrator.schedules.model import ScheduleSpec, job_id_for, spec_from_seed

logger = logging.getLogger(__name__)

HISTORY_MAX = 200
ACTIVE_STATES = frozenset({"queued", "deferred", "running"})
COUNTERS = ("fires", "misfires", "overlap_skips", "errors")
STATE_FIELDS = ("next", "trigger", "slot", "job", "at")  # a schedule's fields in the state hash
# A schedule's fields in the state and stats hashes are `<id>|<name>` (field_of; the scripts too).
FIELD_SEPARATOR = "|"


class SchedKeys:
    definitions = "orch:schedules"
    version = "orch:schedules:version"
    changed_channel = "orch:schedules:changed"
    state = "orch:schedule-state"
    stats = "orch:schedule-stats"

    @staticmethod
    def history(schedule_id: str) -> str:
        return f"orch:schedule-history:{schedule_id}"


def field_of(schedule_id: str, name: str) -> str:
    return f"{schedule_id}{FIELD_SEPARATOR}{name}"


# The scripts (lua/*.lua: each file's header names its KEYS, ARGV and reply), given the field
# names above as Lua locals.
_FIELD_NAMES: dict[str, lua.LuaValue] = {
    "STATE_FIELDS": STATE_FIELDS, "COUNTERS": COUNTERS, "FIELD_SEPARATOR": FIELD_SEPARATOR,
}  # fmt: skip
_PUT = lua.script("orchestrator.schedules", "put.lua", fence_lua(), lua.cursor(), constants=_FIELD_NAMES)
_SET_ENABLED = lua.script("orchestrator.schedules", "set_enabled.lua", constants={"FIELD_SEPARATOR": FIELD_SEPARATOR})
_RECORD = lua.script("orchestrator.schedules", "record.lua", fence_lua(), lua.cursor())


@dataclass
class StoredSchedule:
    """A definition as stored: the spec plus what the config sync knows about it."""

    spec: ScheduleSpec
    config_fp: str | None = None  # the config definition it was last synced from (origin config)
    note: str | None = None  # a runtime change the config sync reported
    removed_at: float | None = None  # a config schedule removed at run time (kept so a restart does not re-add it)

    def dump(self) -> str:
        return json.dumps(
            {"spec": self.spec.model_dump(mode="json"), "config_fp": self.config_fp, "note": self.note,
             "removed_at": self.removed_at},
            separators=(",", ":"),
        )  # fmt: skip

    @classmethod
    def load(cls, raw: bytes | str) -> StoredSchedule:
        data = json.loads(raw)
        return cls(
            spec=ScheduleSpec.model_validate(data["spec"]),
            config_fp=data.get("config_fp"),
            note=data.get("note"),
            removed_at=data.get("removed_at"),
        )


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a schedule's history.

    kind: `fired` (a job was enqueued), `manual` (`schedules run`), `skipped` (missed slots older
    than the misfire grace: `count` of them from `slot` to `last_slot`), `overlap` (the previous
    run was still queued or running), `error` (the job was refused: unknown plugin, bad params,
    disabled plugin), `duplicate` (the slot's job existed already).
    """

    kind: str
    slot: float | None
    at: float
    job_id: str | None = None
    reason: str | None = None
    count: int | None = None
    last_slot: float | None = None

    def dump(self) -> str:
        data = {k: v for k, v in self.__dict__.items() if v is not None}
        return json.dumps(data, separators=(",", ":"))


@dataclass
class Outcome:
    """What one round of the scheduler writes after its enqueue: see ScheduleStore.record."""

    state: dict[str, str] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    history: list[tuple[str, HistoryEntry]] = field(default_factory=list)

    def count(self, schedule_id: str, name: str, n: int = 1) -> None:
        if n:
            key = field_of(schedule_id, name)
            self.counters[key] = self.counters.get(key, 0) + n

    def add(self, schedule_id: str, entry: HistoryEntry) -> None:
        self.history.append((schedule_id, entry))


class ScheduleStore:
    """Reads and writes schedules. Shared by the scheduler, the client and the monitor.

    Args:
        redis: a redis.asyncio client; the caller owns and closes it.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._put = redis.register_script(_PUT)
        self._set_enabled = redis.register_script(_SET_ENABLED)
        self._record = redis.register_script(_RECORD)

    # -- definitions --
    async def put(self, items: Sequence[tuple[str, StoredSchedule | None]], *, fence: Fence | None = None) -> int:
        """Write (or, with None, delete) definitions and announce the change; returns the new version."""
        keys = [Keys.leader, SchedKeys.definitions, SchedKeys.version, SchedKeys.state, SchedKeys.stats]
        args: list[Any] = [no_fence_arg(fence), SchedKeys.changed_channel, len(items)]
        for schedule_id, stored in items:
            keys.append(SchedKeys.history(schedule_id))
            args += [schedule_id, stored.dump() if stored is not None else ""]
        try:
            return int(await self._put(keys=keys, args=args))
        except ResponseError as e:
            raise_if_fenced(e)
            raise

    async def set_enabled(self, schedule_id: str, enabled: bool) -> None:
        keys = [SchedKeys.definitions, SchedKeys.version, SchedKeys.state]
        done = await self._set_enabled(
            keys=keys, args=[schedule_id, "1" if enabled else "0", SchedKeys.changed_channel]
        )
        if not done:
            msg = f"no schedule {schedule_id!r}"
            raise NotFoundError(msg)

    async def all(self, *, include_removed: bool = False) -> dict[str, StoredSchedule]:
        raw = await self.redis.hgetall(SchedKeys.definitions)  # type: ignore[misc]
        out: dict[str, StoredSchedule] = {}
        for key, value in raw.items():
            try:
                stored = StoredSchedule.load(value)
            except ValueError as e:  # written by a newer or broken version: skip it, say so
                logger.warning("schedule %s: unreadable definition skipped: %s", key.decode(), e)
                continue
            if include_removed or stored.removed_at is None:
                out[key.decode()] = stored
        return out

    async def get(self, schedule_id: str) -> StoredSchedule:
        raw = await self.redis.hget(SchedKeys.definitions, schedule_id)  # type: ignore[misc]
        stored = StoredSchedule.load(raw) if raw is not None else None
        if stored is None or stored.removed_at is not None:
            msg = f"no schedule {schedule_id!r}"
            raise NotFoundError(msg)
        return stored

    async def version(self) -> int:
        raw = await self.redis.get(SchedKeys.version)
        return int(raw) if raw else 0

    # -- state --
    async def state(self) -> dict[str, dict[str, str]]:
        """id -> {next, trigger, slot, job, at}."""
        return _group(await self.redis.hgetall(SchedKeys.state))  # type: ignore[misc]

    async def counters(self) -> dict[str, dict[str, int]]:
        grouped = _group(await self.redis.hgetall(SchedKeys.stats))  # type: ignore[misc]
        return {i: {c: int(v.get(c, 0)) for c in COUNTERS} for i, v in grouped.items()}

    async def record(self, outcome: Outcome, *, fence: Fence | None = None) -> None:
        """Write state fields, counter increments and history entries in one atomic, fenced script."""
        if not (outcome.state or outcome.counters or outcome.history):
            return
        keys = [Keys.leader, SchedKeys.state, SchedKeys.stats] + [SchedKeys.history(i) for i, _ in outcome.history]
        args: list[Any] = [no_fence_arg(fence), HISTORY_MAX, len(outcome.state)]
        args += [x for kv in outcome.state.items() for x in kv]
        args.append(len(outcome.counters))
        args += [x for kv in outcome.counters.items() for x in kv]
        args += [entry.dump() for _, entry in outcome.history]
        try:
            await self._record(keys=keys, args=args)
        except ResponseError as e:
            raise_if_fenced(e)
            raise

    async def history(self, schedule_id: str, limit: int = 50) -> list[dict[str, Any]]:
        raw = await self.redis.lrange(SchedKeys.history(schedule_id), 0, limit - 1)  # type: ignore[misc]
        entries = [json.loads(r) for r in raw]
        job_ids = [e.get("job_id") for e in entries]
        records = await self._job_fields([j for j in job_ids if j], ("state", "duration_s", "finished_at"))
        out = []
        for entry in entries:
            rec = records.get(entry.get("job_id") or "", {})
            out.append(
                {
                    "kind": entry["kind"],
                    "slot": iso(entry.get("slot")),
                    "at": iso(entry.get("at")),
                    "job_id": entry.get("job_id"),
                    "state": rec.get("state") if entry.get("job_id") else None,
                    "duration_s": float(rec["duration_s"]) if rec.get("duration_s") else None,
                    "reason": entry.get("reason"),
                    "count": entry.get("count"),
                    "last_slot": iso(entry.get("last_slot")),
                }
            )
        return out

    async def job_states(self, job_ids: list[str]) -> dict[str, str | None]:
        fields = await self._job_fields(job_ids, ("state",))
        return {j: fields.get(j, {}).get("state") for j in job_ids}

    async def _job_fields(self, job_ids: list[str], names: tuple[str, ...]) -> dict[str, dict[str, str]]:
        if not job_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(Keys.job(job_id), list(names))
            rows = await pipe.execute()
        return {
            j: {n: v.decode() for n, v in zip(names, row, strict=True) if v is not None}
            for j, row in zip(job_ids, rows, strict=True)
        }

    # -- the public shape --
    async def describe(self, ids: Sequence[str] | None = None, *, at: float | None = None) -> list[dict[str, Any]]:
        """The schedule JSON of DESIGN.md for every (or the given) schedule, with its next and last run."""
        stored = await self.all()
        if ids is not None:
            stored = {i: stored[i] for i in ids if i in stored}
        state, counters = await self.state(), await self.counters()
        last_jobs = [state.get(i, {}).get("job") for i in stored]
        states = await self.job_states([j for j in last_jobs if j])
        ts = now() if at is None else at
        return [
            describe_one(s, state.get(i, {}), counters.get(i, {}), states, at=ts) for i, s in sorted(stored.items())
        ]


def describe_one(
    stored: StoredSchedule,
    state: Mapping[str, str],
    counters: Mapping[str, int],
    job_states: Mapping[str, str | None],
    *,
    at: float,
) -> dict[str, Any]:
    spec = stored.spec
    next_run: float | None = None
    if spec.enabled:
        stored_next = float(state["next"]) if state.get("next") and state.get("trigger") == spec.trigger else None
        # Before a scheduler has seen it, the next run is what it will compute.
        next_run = stored_next if stored_next is not None else spec.next_after(at)
    last_job = state.get("job")
    return {
        **spec.to_json(),
        "trigger": spec.trigger,
        "next_run_at": iso(next_run),
        "last_run_at": iso(float(state["at"])) if state.get("at") else None,
        "last_slot": iso(float(state["slot"])) if state.get("slot") else None,
        "last_job_id": last_job,
        "last_state": (job_states.get(last_job) or "expired") if last_job else None,
        **{c: counters.get(c, 0) for c in COUNTERS},
        "note": stored.note,
    }


def _group(raw: Mapping[bytes, bytes]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for key, value in raw.items():
        schedule_id, _, name = key.decode().rpartition(FIELD_SEPARATOR)
        out.setdefault(schedule_id, {})[name] = value.decode()
    return out


# -- user actions (the client delegates here) --
async def add(
    store: ScheduleStore, submitter: Submitter, data: ScheduleSpec | Mapping[str, Any], *, replace: bool = False
) -> StoredSchedule:
    """Validate (expression, plugin, params, queue, priority) and store; nothing is stored on error.

    Raises:
        JobError: a bad definition, an unknown plugin or queue, or the id exists (without `replace`).
        ParamsError: the params do not match the plugin's manifest.
    """
    try:
        spec = data if isinstance(data, ScheduleSpec) else spec_from_seed(dict(data))
    except ValueError as e:
        raise JobError(f"invalid schedule: {e}") from None
    if spec.plugin is None:  # a workflow's: it is checked by name and step when it fires
        msg = f"schedule {spec.id!r}: workflow schedules are configured in [[schedules]] only"
        raise JobError(msg)
    # The same checks a fire makes, so a schedule that is stored can fire.
    await submitter.prepare(
        JobRequest(plugin=spec.plugin, params=dict(spec.params), priority=spec.priority, queue=spec.queue,
                   job_id=job_id_for(spec.id, spec.next_after(now())), source="schedule")
    )  # fmt: skip
    existing = (await store.all()).get(spec.id)
    if existing is not None and not replace:
        msg = f"schedule {spec.id!r} exists (remove it first, or replace it)"
        raise JobError(msg)
    if existing is not None and existing.spec.origin == "config":
        # Still a config schedule, changed at run time: the next start reports the difference.
        stored = StoredSchedule(spec.model_copy(update={"origin": "config"}), config_fp=existing.config_fp)
    else:
        stored = StoredSchedule(spec.model_copy(update={"origin": "runtime"}))
    await store.put([(spec.id, stored)])
    return stored


async def remove(store: ScheduleStore, schedule_id: str) -> StoredSchedule:
    """Delete a schedule. A config schedule is kept as removed, so the next start does not re-add it."""
    current = await store.get(schedule_id)
    if current.spec.origin == "config":
        current.removed_at = now()
        await store.put([(schedule_id, current)])
    else:
        await store.put([(schedule_id, None)])
    return current


async def run_now(store: ScheduleStore, submitter: Submitter, schedule_id: str) -> str:
    """Fire once now, whatever the trigger, pause or overlap; returns the job id."""
    spec = (await store.get(schedule_id)).spec
    if spec.plugin is None:
        msg = f"schedule {schedule_id!r} starts workflow {spec.workflow!r}: it fires on its slots only"
        raise JobError(msg)
    ts = now()
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
    job = await submitter.prepare(
        JobRequest(plugin=spec.plugin, params=dict(spec.params), priority=spec.priority, queue=spec.queue,
                   job_id=f"sched:{schedule_id}:run-{stamp}", source="schedule",
                   context={"schedule_id": schedule_id, "scheduled_at": iso(ts)})
    )  # fmt: skip
    await submitter.write(job)
    job_id: str = job.record.job_id
    outcome = Outcome(state={field_of(schedule_id, "job"): job_id, field_of(schedule_id, "at"): repr(ts)})
    outcome.add(schedule_id, HistoryEntry("manual", ts, ts, job_id=job_id))
    outcome.count(schedule_id, "fires")
    await store.record(outcome)
    await store.put([])  # announce it: the leader's status shows the new last run and count
    return job_id


__all__ = [
    "ACTIVE_STATES", "HistoryEntry", "Outcome", "SchedKeys", "ScheduleStore", "StoredSchedule", "add", "field_of",
    "remove", "run_now",
]  # fmt: skip
