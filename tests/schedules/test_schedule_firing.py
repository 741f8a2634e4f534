"""The scheduler component on a real Redis and a real lease, with a clock the test moves."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from orchestrator.cluster.lease import LeaderLease
from orchestrator.errors import FencedError
from orchestrator.jobs.model import Keys, iso
from orchestrator.schedules.model import job_id_for, slot_name
from orchestrator.schedules.scheduler import Scheduler
from tests.schedules.conftest import Rig

S0 = 1_000_020.0  # a multiple of 60: a slot of every 10s, 30s and 1m schedule


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


async def test_interval_fires_at_its_slots_with_deterministic_ids(rig: Rig) -> None:
    await rig.client.add_schedule(id="tick", plugin="probe", every="10s", overlap="allow", params={"name": "t"})
    rig.clock.t = S0 - 9.5
    async with rig.scheduler() as sched:
        assert await rig.job_ids() == []
        await rig.at(sched, S0 - 0.001)
        assert await rig.job_ids() == []
        await rig.at(sched, S0)
        assert await rig.job_ids() == [f"sched:tick:{slot_name(S0)}"]
        await rig.at(sched, S0 + 10.4)
        assert await rig.job_ids() == [job_id_for("tick", S0), job_id_for("tick", S0 + 10)]
        # a round with nothing due enqueues nothing
        await rig.at(sched, S0 + 15)
        assert len(await rig.job_ids()) == 2

    job = await rig.client.status(job_id_for("tick", S0 + 10))
    assert job is not None
    assert (job["plugin"], job["source"], job["params"]["name"], job["state"]) == ("probe", "schedule", "t", "queued")
    row = await rig.client.get_schedule("tick")
    assert row["last_job_id"] == job_id_for("tick", S0 + 10)
    assert row["last_state"] == "queued"
    assert row["fires"] == 2
    assert row["next_run_at"] == iso(S0 + 20)


async def test_cron_fires_at_its_slot_in_its_time_zone(rig: Rig) -> None:
    # 02:00 in Berlin on 1 Dec (CET, UTC+1) is 01:00 UTC
    await rig.client.add_schedule(id="nightly", plugin="probe", cron="0 2 * * *", timezone="Europe/Berlin")
    rig.clock.t = utc(2026, 12, 1, 0, 30)
    async with rig.scheduler() as sched:
        await rig.at(sched, utc(2026, 12, 1, 0, 59, 59))
        assert await rig.job_ids() == []
        await rig.at(sched, utc(2026, 12, 1, 1, 0, 0))
        assert await rig.job_ids() == ["sched:nightly:20261201T010000Z"]
        row = (await rig.client.list_schedules())[0]
        assert row["next_run_at"] == "2026-12-02T01:00:00.000Z"


async def test_dst_in_berlin_fires_each_wall_time_once(rig: Rig) -> None:
    """Spring forward (02:00 -> 03:00, 29 Mar 2026) and fall back (03:00 -> 02:00, 25 Oct 2026):
    a daily 02:30 fires once each day (at the jump when 02:30 does not exist); a half-hourly
    schedule never fires a wall time twice and does not crash in the gap."""
    berlin = ZoneInfo("Europe/Berlin")
    for cron, sid in (("30 2 * * *", "daily"), ("*/30 * * * *", "halfhourly")):
        await rig.client.add_schedule(id=sid, plugin="probe", cron=cron, timezone="Europe/Berlin", overlap="allow")
    for start in (utc(2026, 3, 28, 20, 0), utc(2026, 10, 24, 20, 0)):
        rig.clock.t = start
        async with rig.scheduler() as sched:
            for step in range(1, 8 * 6 + 1):  # eight hours in 10-minute steps
                await rig.at(sched, start + step * 600)

    ids = await rig.job_ids()
    daily = [i for i in ids if i.startswith("sched:daily:")]
    assert daily == ["sched:daily:20260329T010000Z", "sched:daily:20261025T003000Z"]
    half = [datetime.strptime(i.rsplit(":", 1)[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) for i in ids if "half" in i]
    walls = [h.astimezone(berlin).replace(tzinfo=None) for h in half]
    assert len(walls) == len(set(walls)), "a wall time fired twice"
    # spring: 01:30 is followed by 03:00 (02:xx does not exist); fall: 02:00 and 02:30 once each
    spring = [w for w in walls if w.month == 3]
    assert datetime(2026, 3, 29, 1, 30) in spring and datetime(2026, 3, 29, 3, 0) in spring
    assert not any(w.hour == 2 for w in spring)
    fall = [w for w in walls if w.month == 10]
    assert [w for w in fall if w.hour == 2] == [datetime(2026, 10, 25, 2, 0), datetime(2026, 10, 25, 2, 30)]


async def test_a_missed_slot_inside_the_grace_fires_once_older_ones_are_skipped(rig: Rig) -> None:
    await rig.client.add_schedule(id="m", plugin="probe", every="1m", misfire_grace_s=30, overlap="allow")
    rig.clock.t = S0 - 1
    async with rig.scheduler() as sched:
        # down for five minutes and ten seconds: S0 .. S0+240 are older than the grace; S0+300 is 10 s late
        await rig.at(sched, S0 + 310)
        assert await rig.job_ids() == [job_id_for("m", S0 + 300)]
        # down again: the newest missed slot (S0+600) is 45 s late, past the grace: nothing fires
        await rig.at(sched, S0 + 645)
        assert await rig.job_ids() == [job_id_for("m", S0 + 300)]
        await rig.at(sched, S0 + 660)  # the next slot is on time again
        assert await rig.job_ids() == [job_id_for("m", S0 + 300), job_id_for("m", S0 + 660)]

    history = await rig.client.schedule_history("m")
    assert [(h["kind"], h["count"]) for h in history] == [
        ("fired", None),
        ("skipped", 5),
        ("fired", None),
        ("skipped", 5),
    ]
    assert (history[1]["slot"], history[1]["last_slot"]) == (iso(S0 + 360), iso(S0 + 600))
    assert (history[3]["slot"], history[3]["last_slot"]) == (iso(S0), iso(S0 + 240))
    row = await rig.client.get_schedule("m")
    assert (row["fires"], row["misfires"]) == (2, 10)


async def test_overlap_skip_holds_back_while_the_previous_run_is_queued(rig: Rig) -> None:
    """No workers here: the first run stays queued. (Running: see test_schedule_app.py.)"""
    await rig.client.add_schedule(id="o", plugin="probe", every="10s")
    rig.clock.t = S0 - 1
    async with rig.scheduler() as sched:
        await rig.at(sched, S0)
        await rig.at(sched, S0 + 10)
        assert await rig.job_ids() == [job_id_for("o", S0)]
        history = await rig.client.schedule_history("o")
        assert history[0]["kind"] == "overlap"
        assert history[0]["reason"] == f"previous run {job_id_for('o', S0)} is queued"
        # the previous run ends (here: cancelled): the next slot fires
        assert await rig.client.cancel(job_id_for("o", S0)) == "cancelled"
        await rig.at(sched, S0 + 20)
        assert await rig.job_ids() == [job_id_for("o", S0), job_id_for("o", S0 + 20)]
    row = await rig.client.get_schedule("o")
    assert (row["fires"], row["overlap_skips"]) == (2, 1)


async def test_a_restart_does_not_fire_a_slot_twice(rig: Rig) -> None:
    await rig.client.add_schedule(id="r", plugin="probe", every="10s", overlap="allow")
    rig.clock.t = S0 - 1
    async with rig.scheduler(instance="first") as sched:
        await rig.at(sched, S0 + 0.2)
    assert await rig.job_ids() == [job_id_for("r", S0)]
    # a new process: same moment (as if it restarted at once), then the next slot
    async with rig.scheduler(instance="second") as sched:
        await rig.at(sched, S0 + 0.3)
        assert await rig.job_ids() == [job_id_for("r", S0)]
        await rig.at(sched, S0 + 10)
    assert await rig.job_ids() == [job_id_for("r", S0), job_id_for("r", S0 + 10)]
    kinds = [h["kind"] for h in await rig.client.schedule_history("r")]
    assert kinds == ["fired", "fired"]  # no `duplicate`: the restarted scheduler did not even try


async def test_pause_fires_nothing_and_resume_starts_from_the_next_slot(rig: Rig) -> None:
    await rig.client.add_schedule(id="p", plugin="probe", every="10s", overlap="allow")
    rig.clock.t = S0 - 1
    async with rig.scheduler() as sched:
        await rig.client.pause_schedule("p")
        await rig.at(sched, S0 + 35)
        assert await rig.job_ids() == []
        assert (await rig.client.get_schedule("p"))["next_run_at"] is None
        await rig.client.resume_schedule("p")
        await rig.at(sched, S0 + 36)
        assert await rig.job_ids() == []  # no backlog from the pause
        await rig.at(sched, S0 + 40)
        assert await rig.job_ids() == [job_id_for("p", S0 + 40)]
        assert [h["kind"] for h in await rig.client.schedule_history("p")] == ["fired"]


async def test_a_change_wakes_the_idle_scheduler(rig: Rig) -> None:
    """With no schedules the scheduler sleeps with no timeout; an added schedule wakes it (pub/sub)."""
    rig.clock.t = S0 - 1
    async with rig.scheduler() as sched:
        rounds = sched.rounds
        await rig.client.add_schedule(id="w", plugin="probe", every="10s")
        # woken by the announcement alone: nobody calls step() here
        async with sched._round_done:
            await sched._round_done.wait_for(lambda: sched.rounds > rounds and "w" in sched._specs)
        assert sched._next["w"] == S0


async def test_run_now_fires_once_even_when_paused(rig: Rig) -> None:
    await rig.client.add_schedule(id="n", plugin="probe", every="1h", enabled=False)
    job_id = await rig.client.run_schedule("n")
    assert job_id.startswith("sched:n:run-")
    job = await rig.client.status(job_id)
    assert job is not None and job["source"] == "schedule"
    row = await rig.client.get_schedule("n")
    assert (row["last_job_id"], row["last_state"], row["fires"]) == (job_id, "queued", 1)
    assert [h["kind"] for h in await rig.client.schedule_history("n")] == ["manual"]


async def test_a_refused_job_is_recorded_and_the_schedule_goes_on(rig: Rig) -> None:
    await rig.client.add_schedule(id="d", plugin="probe", every="10s", overlap="allow")
    rig.clock.t = S0 - 1
    async with rig.scheduler() as sched:
        await rig.client.set_enabled("probe", False)
        await rig.at(sched, S0)
        assert await rig.job_ids() == []
        await rig.client.set_enabled("probe", True)
        await rig.at(sched, S0 + 10)
        assert await rig.job_ids() == [job_id_for("d", S0 + 10)]
    history = await rig.client.schedule_history("d")
    assert [h["kind"] for h in history] == ["fired", "error"]
    assert "disabled" in history[1]["reason"]
    assert (await rig.client.get_schedule("d"))["errors"] == 1


async def test_a_stale_leader_cannot_fire_a_slot_the_new_one_fired(rig: Rig) -> None:
    """Split brain: `a` still believes it leads (its lease has not noticed) while `b` took over.
    `a`'s fire carries its old token: refused whole (no job, no state, no history)."""
    await rig.client.add_schedule(id="sb", plugin="probe", every="10s", overlap="allow")
    rig.clock.t = S0 - 1
    redis = rig.client.redis
    lease_a = LeaderLease(redis, "a", ttl_s=30.0)
    await lease_a._step()
    stale = lease_a.fence()
    assert stale is not None
    sched_a = Scheduler(rig.store, rig.client.submitter, lease_a, clock=rig.clock)
    task = asyncio.create_task(sched_a.run())
    try:
        await sched_a.step()  # loaded, waiting for S0
        await redis.delete(Keys.leader)  # as if a's lease expired while it was paused
        async with rig.scheduler(instance="b") as sched_b:
            await rig.at(sched_b, S0)
            with pytest.raises(FencedError):
                await sched_a._fire(["sb"], S0 + 10.5, stale)
            await rig.at(sched_b, S0 + 1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await rig.job_ids() == [job_id_for("sb", S0)]
    assert [h["kind"] for h in await rig.client.schedule_history("sb")] == ["fired"]
    assert (await rig.client.get_schedule("sb"))["next_run_at"] == iso(S0 + 10)
