"""Joins run exactly once when instances die or come back late: the member's finish that
enqueues the join is fenced by the claim id, like every finish."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.client import Client, connect_redis
from orchestrator.jobs.model import Keys, now
from orchestrator.jobs.store import IN_PROGRESS_TTL_MS
from orchestrator.jobs.submit import CatalogEntry
from orchestrator.plugins.manifest import Manifest
from orchestrator.workflows.model import chain, group, job
from tests.jobs.conftest import StartRun
from tests.jobs.helpers import make_settings, wait_for
from tests.workflows.helpers import STEP_PARAMS, lines, make_step_plugin


class StepCatalog:
    """The step plugin's manifest, for a client with no running instance to publish it."""

    async def lookup(self, name: str) -> CatalogEntry | None:
        manifest = Manifest.model_validate(
            {"name": name, "version": "1", "entry_point": "main.run", "parameters": STEP_PARAMS}
        )
        return CatalogEntry(manifest=manifest, enabled=True, state="ready")


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Client]:
    async with Client(connect_redis(redis_url), catalog=StepCatalog(), queues={"default": 1}, owns_redis=True) as c:
        yield c


async def test_a_members_finish_replayed_by_a_stalled_instance_after_the_fence_is_refused(client: Client) -> None:
    store = client.store
    wid = await client.workflow(chain(group(job("step", {"name": "a"}), job("step", {"name": "b"})), job("step")))
    claim = {"in_progress_ttl_ms": IN_PROGRESS_TTL_MS, "look_ahead_ms": 0}
    stale, _ = await store.claim("default", 2, "stalled", **claim)
    assert len(stale) == 2
    # the stalled instance is presumed dead: its jobs go back, and another instance runs them
    assert sorted(await store.release_instance("stalled")) == sorted(r.job_id for r in stale)
    fresh, _ = await store.claim("default", 2, "fresh", **claim)
    assert {r.job_id for r in fresh} == {r.job_id for r in stale}
    for record in fresh:
        assert await store.finish(record, "succeeded", {"finished_at": now(), "result": record.params["name"]})
    steps = (await client.workflow_status(wid))["steps"]["steps"]
    join_id = steps[1]["job_id"]
    join = await store.get(join_id)
    assert join is not None and join.state == "queued" and join.previous == ["a", "b"]

    for record in stale:  # the stalled instance comes back and reports its outcomes
        assert not await store.finish(record, "succeeded", {"finished_at": now(), "result": "late"})
    for record in fresh:  # and a retried finish of the current claim
        assert not await store.finish(record, "failed", {"finished_at": now(), "error": "again"})
    assert await client.redis.zcard(Keys.queue("default")) == 1  # the join, once
    assert await client.redis.hget(Keys.workflow(wid) + ":left", steps[0]["step"]) == b"0"
    again = await store.get(join_id)
    assert again is not None and again.previous == ["a", "b"] and again.enqueued_at == join.enqueued_at
    assert (await client.workflow_status(wid))["state"] == "running"


@pytest.mark.timeout(90)
async def test_kill_9_while_the_last_of_200_members_runs_the_join_runs_exactly_once(
    tmp_path: Path, redis_url: str, start_run: StartRun
) -> None:
    make_step_plugin(tmp_path / "plugins")
    settings = make_settings(
        tmp_path, redis_url, queues={"default": {"concurrency": 20}}, heartbeat_interval_s=0.5, instance_ttl_s=3.0
    )
    record = tmp_path / "runs.jsonl"
    ttl = {"ORCH_INSTANCE_TTL_S": "3"}
    first = await start_run(settings, tmp_path / "run1.log", **ttl)
    async with Client(connect_redis(redis_url), owns_redis=True) as client:
        await wait_for(client.queues)
        members = [job("step", {"name": f"m{i}"}) for i in range(199)]
        release = tmp_path / "release"  # `last` runs until this exists
        members.append(job("step", {"name": "last", "hold_until": str(release), "record": str(record)}))
        wid = await client.workflow(chain(group(*members), job("step", {"name": "join", "record": str(record)})))

        def last_runs_alone() -> bool:
            return [r["name"] for r in lines(record)] == ["last"]

        async def only_last_runs() -> bool:
            counts = (await client.workflow_status(wid))["counts"]
            return counts == {"succeeded": 199, "running": 1, "pending": 1}

        await wait_for(last_runs_alone)
        await wait_for(only_last_runs)  # the other members still in flight end first
        second = await start_run(settings, tmp_path / "run2.log", **ttl)

        async def both_up() -> bool:
            return len(await client.instances()) == 2

        await wait_for(both_up)
        await first.kill9()  # while `last` runs there
        release.touch()
        try:
            done = await client.wait(wid, timeout_s=60)
        finally:
            assert await second.signal_and_wait(signal.SIGTERM) == 0
    runs = [r["name"] for r in lines(record)]
    assert runs == ["last", "last", "join"]  # the last member ran again; the join ran once
    assert done["state"] == "succeeded"
    assert [r["name"] for r in done["result"]["previous"]] == [f"m{i}" for i in range(199)] + ["last"]
