"""Nothing lost: SIGTERM with running jobs, and kill -9 of `orchestrator run` (real processes)."""

from __future__ import annotations

import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from orchestrator.client import Client, connect_redis
from tests.jobs.conftest import StartRun
from tests.jobs.helpers import make_plugin, make_settings, pid_alive, read_events, wait_for


async def test_sigterm_lets_running_jobs_finish_within_grace(
    tmp_path: Path, redis_url: str, start_run: StartRun
) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url, shutdown_grace_s=10.0)
    record = tmp_path / "events.jsonl"
    proc = await start_run(settings, tmp_path / "run.log")
    async with Client(connect_redis(redis_url), owns_redis=True) as client:
        await wait_for(client.queues)  # published: the app is up
        ids = [(await client.trigger("probe", {"sleep": 1.0, "record": str(record)})).job_id for _ in range(3)]
        await wait_for(lambda: len([e for e in read_events(record) if e["event"] == "start"]) == 3)
        assert await proc.signal_and_wait(signal.SIGTERM) == 0, proc.log()
        states = [(await client.status(i))["state"] for i in ids]  # type: ignore[index]
        assert states == ["succeeded"] * 3
    assert "shutdown complete" in proc.log()


async def test_sigterm_puts_back_jobs_that_outlive_the_grace(
    tmp_path: Path, redis_url: str, start_run: StartRun
) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url, shutdown_grace_s=0.5)
    record = tmp_path / "events.jsonl"
    proc = await start_run(settings, tmp_path / "run.log")
    async with Client(connect_redis(redis_url), owns_redis=True) as client:
        await wait_for(client.queues)
        ids = [
            (await client.trigger("probe", {"sleep": 30, "spawn_child": True, "record": str(record)})).job_id
            for _ in range(2)
        ]
        await wait_for(lambda: len([e for e in read_events(record) if e["event"] == "child"]) == 2)
        assert await proc.signal_and_wait(signal.SIGTERM) == 0, proc.log()
        pids = [e["pid"] for e in read_events(record) if e["event"] in {"start", "child"}]
        assert not any(pid_alive(p) for p in pids), "a plugin process outlived the shutdown"
        for job_id in ids:
            job = await client.status(job_id)
            assert job is not None and job["state"] == "queued" and job["attempt"] == 0, job
        stats = await client.stats()
        assert stats["queues"]["default"]["depth"] == 2 and stats["queues"]["default"]["running"] == 0


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_kill_9_with_20_running_and_100_queued_loses_nothing(
    tmp_path: Path, redis_url: str, start_run: StartRun
) -> None:
    """kill -9 of the whole orchestrator; after a restart every job ends `succeeded`, none ran twice at once,
    and the interrupted ones start again within 30 s."""
    make_plugin(tmp_path / "plugins")
    settings = make_settings(
        tmp_path, redis_url, queues={"default": {"concurrency": 20}}, heartbeat_interval_s=2.0, instance_ttl_s=10.0
    )
    record = tmp_path / "events.jsonl"
    # Held until the kill: with only a 3 s sleep, the first jobs could end before the twentieth started
    # on a loaded machine (20 interpreters starting on 2 cores), and "20 running" was never seen.
    hold = tmp_path / "hold"
    hold.touch()
    params = {"sleep": 3.0, "record": str(record), "hold_while_file": str(hold)}
    first = await start_run(settings, tmp_path / "run1.log")
    async with Client(connect_redis(redis_url), owns_redis=True) as client:
        await wait_for(client.queues)
        ids = [(await client.trigger("probe", {**params, "name": str(i)})).job_id for i in range(120)]
        await wait_for(lambda: len([e for e in read_events(record) if e["event"] == "start"]) == 20)
        stats = await client.stats()
        assert stats["states"]["running"] == 20 and stats["states"]["queued"] == 100
        interrupted = {e["job"] for e in read_events(record) if e["event"] == "start"}
        plugin_pids = [e["pid"] for e in read_events(record) if e["event"] == "start"]
        await first.kill9()
        # The plugin children die with their parent: no orphan keeps working on a job.
        await wait_for(lambda: not any(pid_alive(p) for p in plugin_pids), timeout_s=5)
        hold.unlink()  # from here on each job sleeps its 3 s and ends

        restart_wall = time.time()
        second = await start_run(settings, tmp_path / "run2.log")
        try:
            await wait_for(lambda: _all_succeeded(client, ids), timeout_s=150, interval_s=0.5)
        finally:
            assert await second.signal_and_wait(signal.SIGTERM) == 0

    events = read_events(record)
    _assert_never_concurrent(events, interrupted, restart_wall)
    restarts = {e["job"]: e["t"] for e in events if e["event"] == "start" and e["t"] > restart_wall}
    assert interrupted <= set(restarts), "an interrupted job never ran again"
    assert max(restarts[j] for j in interrupted) - restart_wall < 30
    ends = defaultdict(int)
    for e in events:
        if e["event"] == "end":
            ends[e["job"]] += 1
    assert set(ends) == set(ids)


async def _all_succeeded(client: Client, ids: list[str]) -> bool:
    states = await client.store.states_of(ids)
    return all(s == "succeeded" for s in states)


def _assert_never_concurrent(events: list[dict[str, Any]], interrupted: set[str], restart_wall: float) -> None:
    """Each job finished exactly once; only the interrupted ones started twice, once per instance.

    Together with "every plugin process of the killed instance was dead before the restart",
    no job ever ran twice at the same time."""
    starts: dict[str, list[float]] = defaultdict(list)
    ends: dict[str, int] = defaultdict(int)
    for e in events:
        if e["event"] == "start":
            starts[e["job"]].append(e["t"])
        elif e["event"] == "end":
            ends[e["job"]] += 1
    assert all(n == 1 for n in ends.values()), "a job finished twice"
    for job, ts in starts.items():
        before = [t for t in ts if t < restart_wall]
        after = [t for t in ts if t >= restart_wall]
        assert len(after) == 1, (job, ts)
        assert len(before) == (1 if job in interrupted else 0), (job, ts)
