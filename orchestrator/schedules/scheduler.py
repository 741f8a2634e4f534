"""The scheduler: a leader-only component that enqueues one job per schedule slot.

It sleeps until the earliest next slot of its enabled schedules, or until a change to the
definitions is announced (`orch:schedules:changed`, with a version counter it re-reads after each
wake-up, so a message lost during a reconnect costs nothing). There is no periodic tick: with
1,000 daily schedules it wakes a few times a day.

Each round is two atomic, fenced writes: the jobs of every due schedule together with their
next-fire and last-fire state (JobStore.enqueue_many with a checkpoint), then counters and history
(ScheduleStore.record). Job ids are `sched:<id>:<slot>`: a stale leader racing the new one, or a
restart between the two writes, enqueues nothing twice.

Missed slots (downtime, a leader change): the newest missed slot still fires if it is at most
`misfire_grace_s` old; every other missed slot is recorded as skipped. Never a burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from redis.exceptions import RedisError

from orchestrator.cluster.lease import LeaderLease
from orchestrator.components import BaseComponent, ComponentHealth
from orchestrator.errors import FencedError, JobError, PluginError
from orchestrator.jobs.model import TERMINAL, iso
from orchestrator.jobs.store import Checkpoint
from orchestrator.jobs.submit import JobRequest, PreparedJob, Submitter
from orchestrator.redis.fence import Fence
from orchestrator.redis.subscribe import listen_forever
from orchestrator.schedules.model import ScheduleSpec, job_id_for
from orchestrator.schedules.status import ScheduleRow, status_row
from orchestrator.schedules.store import (
    ACTIVE_STATES,
    HistoryEntry,
    Outcome,
    SchedKeys,
    ScheduleStore,
    StoredSchedule,
    describe_one,
    field_of,
)
from orchestrator.tracing.facade import Tracing
from orchestrator.workflows.named import NamedWorkflows

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
# After a Redis error: wait this long before the next attempt (a back-off, not a tick).
_RETRY_S = 1.0


class Scheduler(BaseComponent):
    """Fires schedules on the leader.

    Args:
        store: schedule definitions and state.
        submitter: returns a Submitter (validates and enqueues the jobs).
        lease: the leader lease; every write carries its token.
        config: the `[[schedules]]` of the config file, synced into Redis when this instance starts
            leading (see sync_config).
        clock: epoch seconds; tests pass a controllable one and call `wake()` after moving it.
        catchup_limit: at most this many missed slots of one schedule are looked at after downtime.
        tracing: a `schedule.fire` span per fired slot, the root of its job's trace (no-op when off).
        workflows: starts the workflows named in config, for schedules with `workflow = "..."`.
    """

    name = "scheduler"
    status_key = "schedules"  # the /status key users read
    leader_only = True

    def __init__(
        self,
        store: ScheduleStore,
        submitter: Callable[[], Awaitable[Submitter]],
        lease: LeaderLease,
        *,
        config: Sequence[ScheduleSpec] = (),
        clock: Clock = time.time,
        catchup_limit: int = 1000,
        tracing: Tracing | None = None,
        workflows: NamedWorkflows | None = None,
    ) -> None:
        self.tracing = tracing or Tracing()
        self.store = store
        self.workflows = workflows
        self.submitter = submitter
        self.lease = lease
        self.config = list(config)
        self.clock = clock
        self.catchup_limit = catchup_limit
        self.last_error: str | None = None
        self.reports: list[str] = []
        self.rounds = 0  # rounds (wake-ups) done while leading
        self._asked = 0  # step() calls so far
        self._served = 0  # the last step() call a finished round had seen
        self._stored: dict[str, StoredSchedule] = {}  # every definition (paused ones too)
        self._specs: dict[str, ScheduleSpec] = {}  # the enabled ones
        self._next: dict[str, float] = {}
        # What Redis holds, mirrored: status() is built from memory (it is published every few seconds).
        self._state: dict[str, dict[str, str]] = {}
        self._counters: dict[str, dict[str, int]] = {}
        self._job_states: dict[str, str | None] = {}
        self._rows: list[ScheduleRow] | None = None
        self._version = -1
        self._wake = asyncio.Event()
        self._round_done = asyncio.Condition()

    def wake(self) -> None:
        """Re-read the clock and the definitions now (the change listener calls it too)."""
        self._wake.set()

    async def step(self) -> None:
        """Wake the loop and return once a whole round has run after this call (tests move their
        clock, then step: no sleeping, no polling)."""
        self._asked += 1
        target = self._asked
        self.wake()
        async with self._round_done:
            await self._round_done.wait_for(lambda: self._served >= target)

    # -- the loop --
    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._listen(), name="scheduler-listener")
            await self._lead_forever()

    async def _lead_forever(self) -> None:
        while True:
            await self.lease.wait_gained()
            fence = self.lease.fence()
            if fence is None:
                # Lost in between, or only overdue for a renewal that may still succeed with the
                # same token: the lease's own loop settles it within ttl/3.
                await self._settle_lease()
                continue
            try:
                await self._lead(fence)
            except FencedError as e:
                logger.warning("scheduler: a newer leader exists, stopping: %s", e)
                await self._settle_lease()
            except (RedisError, OSError) as e:
                self.last_error = f"{type(e).__name__}: {e}"
                logger.warning("scheduler: redis error, retrying in %.0fs: %s", _RETRY_S, e)
                await asyncio.sleep(_RETRY_S)

    async def _settle_lease(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.lease.ttl_s / 3):
                await self.lease.wait_lost()

    async def _lead(self, fence: Fence) -> None:
        self.reports = await sync_config(self.store, self.config, fence)
        for line in self.reports:
            logger.warning("scheduler: %s", line)
        self._version = -1
        while True:
            if self.lease.fence() != fence:
                return
            # Cleared before reading anything: a change announced from here on wakes the wait below.
            self._wake.clear()
            asked = self._asked
            version = await self.store.version()
            if version != self._version:
                await self._reload(version, fence)
            t = self.clock()
            due = sorted(i for i, slot in self._next.items() if slot <= t)
            if due:
                await self._fire(due, t, fence)
            self.last_error = None
            async with self._round_done:
                self.rounds += 1
                self._served = asked
                self._round_done.notify_all()
            upcoming = min(self._next.values(), default=None)
            delay = None if upcoming is None else max(0.0, upcoming - self.clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _listen(self) -> None:
        """Wake the loop on every announced change; after a reconnect, once anyway."""
        await listen_forever(
            self.store.redis,
            [SchedKeys.changed_channel],
            lambda _channel, _data: self.wake(),
            name="scheduler",
            on_subscribed=self.wake,
        )

    async def _reload(self, version: int, fence: Fence) -> None:
        stored = await self.store.all()
        self._state = await self.store.state()
        self._counters = await self.store.counters()
        t = self.clock()
        self._stored = stored
        self._specs = {i: s.spec for i, s in stored.items() if s.spec.enabled}
        self._next = {}
        fresh = Outcome()
        for schedule_id, spec in self._specs.items():
            st = self._state.get(schedule_id, {})
            if st.get("next") and st.get("trigger") == spec.trigger:
                self._next[schedule_id] = float(st["next"])
            else:
                # New, resumed, or its trigger changed: from its next slot after now. Written at
                # once, so a leader change before the first fire keeps that slot.
                self._next[schedule_id] = spec.next_after(t)
                fresh.state[field_of(schedule_id, "next")] = repr(self._next[schedule_id])
                fresh.state[field_of(schedule_id, "trigger")] = spec.trigger
        await self._record(fresh, fence)
        self._rows = None
        self._version = version
        logger.info("scheduler: %d schedule(s) enabled (definitions version %d)", len(self._specs), version)

    async def _fire(self, due: list[str], t: float, fence: Fence) -> None:
        outcome = Outcome()
        checkpoint: dict[str, str] = {}
        prepared: list[tuple[str, float, PreparedJob]] = []
        previous = await self._previous_states(due)
        submitter = await self.submitter()
        for schedule_id in due:
            spec = self._specs[schedule_id]
            slot = self._account_missed(schedule_id, spec, t, outcome)
            self._next[schedule_id] = spec.next_after(t)
            checkpoint[field_of(schedule_id, "next")] = repr(self._next[schedule_id])
            checkpoint[field_of(schedule_id, "trigger")] = spec.trigger
            if slot is None:
                continue
            last = self._last_job(schedule_id)
            if spec.overlap == "skip" and last and previous.get(last) in ACTIVE_STATES:
                reason = f"previous run {last} is {previous[last]}"
                outcome.add(schedule_id, HistoryEntry("overlap", slot, t, reason=reason))
                outcome.count(schedule_id, "overlap_skips")
                continue
            if spec.workflow is not None:
                await self._start_workflow(schedule_id, spec.workflow, slot, t, outcome, checkpoint)
                continue
            request = self._request(schedule_id, spec, slot)
            with self.tracing.span(
                "schedule.fire",
                root=True,
                kind="producer",
                attributes={"schedule.id": schedule_id, "schedule.slot": iso(slot), "job.plugin": spec.plugin},
            ) as span:
                request.trace = span.carrier
            try:
                job = await submitter.prepare(request)
            except (JobError, PluginError) as e:
                outcome.add(schedule_id, HistoryEntry("error", slot, t, reason=str(e)))
                outcome.count(schedule_id, "errors")
                logger.warning("scheduler: schedule %s slot %s not enqueued: %s", schedule_id, iso(slot), e)
                continue
            prepared.append((schedule_id, slot, job))
            job_id = job.record.job_id
            checkpoint.update(
                {field_of(schedule_id, "slot"): repr(slot), field_of(schedule_id, "job"): job_id,
                 field_of(schedule_id, "at"): repr(t)}
            )  # fmt: skip
        results = await submitter.write_many(
            [job for _, _, job in prepared], fence=fence, checkpoint=Checkpoint(SchedKeys.state, checkpoint)
        )
        self._mirror(checkpoint)
        for (schedule_id, slot, job), result in zip(prepared, results, strict=True):
            job_id = job.record.job_id
            if result == 1:
                outcome.add(schedule_id, HistoryEntry("fired", slot, t, job_id=job_id))
                outcome.count(schedule_id, "fires")
            elif result == 0:
                outcome.add(schedule_id, HistoryEntry("duplicate", slot, t, job_id=job_id, reason="already enqueued"))
            else:
                outcome.add(schedule_id, HistoryEntry("error", slot, t, reason="plugin disabled"))
                outcome.count(schedule_id, "errors")
        await self._record(outcome, fence)

    async def _start_workflow(
        self, schedule_id: str, name: str, slot: float, t: float, outcome: Outcome, checkpoint: dict[str, str]
    ) -> None:
        """Start the schedule's workflow for `slot`, once: its id is the slot's job id, which the
        create script skips when it exists (a round repeated after a leader change)."""
        workflow_id = job_id_for(schedule_id, slot)
        try:
            if self.workflows is None:
                raise JobError(f"workflow {name}: started by `orchestrator run` only")
            _, created = await self.workflows.start(
                name, source="schedule", workflow_id=workflow_id,
                context={"schedule_id": schedule_id, "scheduled_at": iso(slot)},
            )  # fmt: skip
        except (JobError, PluginError) as e:
            outcome.add(schedule_id, HistoryEntry("error", slot, t, reason=str(e)))
            outcome.count(schedule_id, "errors")
            logger.warning("scheduler: schedule %s slot %s: workflow not started: %s", schedule_id, iso(slot), e)
            return
        checkpoint.update(
            {field_of(schedule_id, "slot"): repr(slot), field_of(schedule_id, "job"): workflow_id,
             field_of(schedule_id, "at"): repr(t)}
        )  # fmt: skip
        if created:
            outcome.add(schedule_id, HistoryEntry("fired", slot, t, job_id=workflow_id))
            outcome.count(schedule_id, "fires")
        else:
            outcome.add(schedule_id, HistoryEntry("duplicate", slot, t, job_id=workflow_id, reason="already started"))

    async def _record(self, outcome: Outcome, fence: Fence) -> None:
        await self.store.record(outcome, fence=fence)
        self._mirror(outcome.state)
        for key, n in outcome.counters.items():
            schedule_id, _, name = key.rpartition("|")
            counters = self._counters.setdefault(schedule_id, {})
            counters[name] = counters.get(name, 0) + n

    def _mirror(self, fields: dict[str, str]) -> None:
        for key, value in fields.items():
            schedule_id, _, name = key.rpartition("|")
            self._state.setdefault(schedule_id, {})[name] = value
        self._rows = None

    def _last_job(self, schedule_id: str) -> str | None:
        return self._state.get(schedule_id, {}).get("job")

    def _account_missed(self, schedule_id: str, spec: ScheduleSpec, t: float, outcome: Outcome) -> float | None:
        """The slot to fire now (None: none), recording the missed ones it skips."""
        first = self._next[schedule_id]
        later, complete = spec.slots_between(first, t, limit=self.catchup_limit)
        slots = [first, *later]
        exact = True
        if spec.every is not None:
            count = int((t - first) // spec.every) + 1  # exact, however long the downtime
            before_newest: float | None = slots[-1] - spec.every
        elif complete:
            count = len(slots)
            before_newest = slots[-2] if len(slots) > 1 else None
        else:
            # A long downtime of a frequent cron: only the slots inside the grace matter exactly.
            tail, _ = spec.slots_between(max(first, t - spec.misfire_grace_s), t, limit=self.catchup_limit)
            slots += tail
            count, exact, before_newest = len(slots), False, None
        newest = slots[-1]
        fire = t - newest <= spec.misfire_grace_s
        skipped = count - 1 if fire else count
        if skipped:
            reason = f"missed by more than the misfire grace ({spec.misfire_grace_s:g}s)"
            if not exact:
                reason += f"; at least {skipped} slots"
            last_skipped = before_newest if fire else newest
            entry = HistoryEntry("skipped", first, t, count=skipped, last_slot=last_skipped, reason=reason)
            outcome.add(schedule_id, entry)
            outcome.count(schedule_id, "misfires", skipped)
            logger.warning("scheduler: schedule %s skipped %d missed slot(s) from %s", schedule_id, skipped, iso(first))
        return newest if fire else None

    async def _previous_states(self, due: list[str]) -> dict[str, str | None]:
        ids = [j for i in due if (j := self._last_job(i)) and self._specs[i].overlap == "skip"]
        return await self.store.job_states(ids)

    @staticmethod
    def _request(schedule_id: str, spec: ScheduleSpec, slot: float) -> JobRequest:
        assert spec.plugin is not None  # noqa: S101  narrows the type: a workflow's schedule starts its workflow instead
        return JobRequest(
            plugin=spec.plugin,
            params=dict(spec.params),
            priority=spec.priority,
            queue=spec.queue,
            job_id=job_id_for(schedule_id, slot),
            source="schedule",
            context={"schedule_id": schedule_id, "scheduled_at": iso(slot)},
        )

    # -- reporting --
    async def health(self) -> ComponentHealth:
        if self.last_error:
            return ComponentHealth.failing(self.last_error)
        return ComponentHealth(detail={"schedules": len(self._specs)})

    async def status(self) -> list[ScheduleRow]:
        """Built from memory; only the states of last jobs that were not final yet are read."""
        pending = [j for st in self._state.values() if (j := st.get("job")) and self._job_states.get(j) not in TERMINAL]
        if pending:
            fresh = await self.store.job_states(pending)
            if any(self._job_states.get(j) != state for j, state in fresh.items()):
                self._job_states.update(fresh)
                self._rows = None
        if self._rows is None:
            t = self.clock()
            self._rows = [
                status_row(describe_one(s, self._state.get(i, {}), self._counters.get(i, {}), self._job_states, at=t))
                for i, s in sorted(self._stored.items())
            ]
        return self._rows


async def sync_config(store: ScheduleStore, config: Sequence[ScheduleSpec], fence: Fence | None) -> list[str]:
    """Bring the config file's schedules into Redis; returns what it reports (one line each).

    - new in the config: added;
    - unchanged in the config, changed at run time (paused, replaced): the runtime version is kept
      and reported (it is not silently overwritten); a config schedule removed at run time stays
      removed, reported;
    - changed in the config file since the last start: the new definition applies (a runtime change
      it replaces is reported);
    - gone from the config: removed;
    - an id the config shares with a schedule added at run time: the runtime one is kept, reported.
    """
    stored = await store.all(include_removed=True)
    writes: list[tuple[str, StoredSchedule | None]] = []
    reports: list[str] = []
    for spec in config:
        spec = spec.model_copy(update={"origin": "config"})
        fp = spec.fingerprint()
        current = stored.get(spec.id)
        note: str | None = None
        if current is None:
            writes.append((spec.id, StoredSchedule(spec, config_fp=fp)))
            continue
        if current.spec.origin == "runtime":
            diffs = spec.differences(current.spec)
            if not diffs:
                writes.append((spec.id, StoredSchedule(spec, config_fp=fp)))
                continue
            note = f"also in the config file; the schedule added at run time is kept (differs in {', '.join(diffs)})"
        elif current.config_fp == fp:
            if current.removed_at is not None:
                note = "removed at run time: not re-added (delete it from the config file to silence this)"
            elif diffs := spec.differences(current.spec):
                note = f"changed at run time ({', '.join(diffs)}): kept; the config file says otherwise"
        else:
            runtime_changed = current.removed_at is not None or current.spec.fingerprint() != current.config_fp
            writes.append((spec.id, StoredSchedule(spec, config_fp=fp)))
            if runtime_changed:
                reports.append(f"schedule {spec.id}: the config file changed; its definition replaces a runtime change")
            continue
        if note is not None:
            reports.append(f"schedule {spec.id}: {note}")
        if note != current.note:
            current.note = note
            writes.append((spec.id, current))
    wanted = {s.id for s in config}
    for schedule_id, current in stored.items():
        if current.spec.origin == "config" and schedule_id not in wanted:
            writes.append((schedule_id, None))
            reports.append(f"schedule {schedule_id}: no longer in the config file: removed")
    if writes:
        await store.put(writes, fence=fence)
    return reports


__all__ = ["Clock", "Scheduler", "sync_config"]
