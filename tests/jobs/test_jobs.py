"""Jobs end to end through the Python API: a real Redis, real arq workers, real plugin processes."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from orchestrator.client import Client
from orchestrator.errors import JobError, ParamsError
from orchestrator.jobs.batch import BatchError
from orchestrator.jobs.model import Keys
from orchestrator.plugins.build import build_registry
from tests.jobs.helpers import make_plugin, make_settings, pid_alive, read_events, run_app, wait_for


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    make_plugin(tmp_path / "plugins")
    return tmp_path / "plugins"


async def test_trigger_runs_the_plugin_and_records_the_result(
    tmp_path: Path, redis_url: str, plugins_dir: Path
) -> None:
    settings = make_settings(tmp_path, redis_url)
    async with run_app(settings), Client(await _redis(redis_url), owns_redis=True) as client:
        job = await client.trigger("probe", {"name": "hello"})
        assert job.created
        result = await client.result(job.job_id, timeout_s=20)
        assert result["state"] == "succeeded", result
        assert result["result"] == {"name": "hello", "attempt": 1}
        assert result["attempt"] == 1
        assert result["source"] == "api"
        assert result["duration_s"] > 0
        assert result["exit_code"] == 0
        assert "working on hello" in result["log_tail"]
        assert [line async for _, line in client.logs(job.job_id)] == ["working on hello"]
        stats = await client.stats()
        assert stats["states"]["succeeded"] == 1
        assert set(stats["queues"]) == {"high", "default", "low"}
        listed = await client.list(plugin="probe")
        assert [j["job_id"] for j in listed] == [job.job_id]
        assert await client.list(state="failed") == []


async def test_validation_happens_before_anything_is_enqueued(
    tmp_path: Path, redis_url: str, plugins_dir: Path
) -> None:
    settings = make_settings(tmp_path, redis_url)
    async with run_app(settings), Client(await _redis(redis_url), owns_redis=True) as client:
        with pytest.raises(ParamsError, match="sleep"):
            await client.trigger("probe", {"sleep": "long"})
        with pytest.raises(JobError, match="unknown or invalid plugin"):
            await client.trigger("nope")
        with pytest.raises(JobError, match="unknown queue"):
            await client.trigger("probe", queue="warehouse")
        with pytest.raises(JobError, match="priority"):
            await client.trigger("probe", priority="urgent")
        await client.set_enabled("probe", False)
        with pytest.raises(JobError, match="disabled"):
            await client.trigger("probe")
        assert await client.redis.zcard(Keys.all_jobs) == 0
        await client.set_enabled("probe", True)
        assert (await client.trigger("probe")).created


async def test_duplicate_job_id_is_not_enqueued_twice(tmp_path: Path, redis_url: str, plugins_dir: Path) -> None:
    settings = make_settings(tmp_path, redis_url)
    record = tmp_path / "events.jsonl"
    async with run_app(settings), Client(await _redis(redis_url), owns_redis=True) as client:
        first = await client.trigger("probe", {"record": str(record)}, job_id="nightly-2026-11-23")
        second = await client.trigger("probe", {"record": str(record)}, job_id="nightly-2026-11-23")
        assert first.created and not second.created
        await client.result("nightly-2026-11-23", timeout_s=20)
        third = await client.trigger("probe", {"record": str(record)}, job_id="nightly-2026-11-23")
        assert not third.created  # finished jobs keep their id for result_ttl
    starts = [e for e in read_events(record) if e["event"] == "start"]
    assert len(starts) == 1


async def test_high_priority_jobs_start_first_when_saturated(tmp_path: Path, redis_url: str, plugins_dir: Path) -> None:
    settings = make_settings(tmp_path, redis_url, queues={"default": {"concurrency": 1}})
    record = tmp_path / "events.jsonl"
    async with Client(await _redis(redis_url), owns_redis=True) as client:
        registry = build_registry(settings, settings.venv_dir)
        await registry.load()
        local = Client.for_settings(settings, client.redis, registry)
        # Enqueued before any worker runs, in the "wrong" order: low first, high last.
        await local.trigger("probe", {"name": "blocker", "record": str(record), "sleep": 0.3}, priority=0)
        for prio in ("low", "default", 7, "high", 2):
            await local.trigger("probe", {"name": f"p{prio}", "record": str(record)}, priority=prio)
        async with run_app(settings):
            await wait_for(lambda: len([e for e in read_events(record) if e["event"] == "end"]) == 6)
    order = [e["name"] for e in read_events(record) if e["event"] == "start"]
    assert order == ["blocker", "phigh", "p2", "pdefault", "p7", "plow"]


async def test_retry_with_backoff_then_failed_then_manual_retry(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins", max_retries=2, retry_backoff=0.2)
    settings = make_settings(tmp_path, redis_url)
    gate = tmp_path / "gate"
    record = tmp_path / "events.jsonl"
    async with run_app(settings) as app:
        client = Client.for_settings(settings, await _redis(redis_url), None)
        try:
            job = await client.trigger("probe", {"fail_until_file": str(gate), "record": str(record)})
            failed = await client.result(job.job_id, timeout_s=30)
            assert failed["state"] == "failed"
            assert failed["attempt"] == 3  # the first run and max_retries=2 retries
            assert "does not exist yet" in failed["error"]
            assert failed["error_type"] == "RuntimeError"
            assert "Traceback" in failed["traceback"]
            starts = [e for e in read_events(record) if e["event"] == "start"]
            assert [e["attempt"] for e in starts] == [1, 2, 3]
            gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(starts)]
            assert gaps[0] >= 0.1 and gaps[1] >= 0.2  # 0.2 * 2^(n-1), jitter 0.5-1.0
            assert [j["job_id"] for j in await client.list(state="failed")] == [job.job_id]

            gate.touch()
            new_id = await client.retry(job.job_id)
            again = await client.result(new_id, timeout_s=20)
            assert again["state"] == "succeeded"
            assert again["retry_of"] == job.job_id
            assert again["params"] == failed["params"]
            assert app.identity.instance_id == again["instance"]
        finally:
            await client.redis.aclose()


async def test_cancel_queued_and_running_jobs(tmp_path: Path, redis_url: str, plugins_dir: Path) -> None:
    settings = make_settings(tmp_path, redis_url, queues={"default": {"concurrency": 1}})
    record = tmp_path / "events.jsonl"
    async with run_app(settings), Client(await _redis(redis_url), owns_redis=True) as client:
        running = await client.trigger("probe", {"sleep": 60, "spawn_child": True, "record": str(record)})
        queued = await client.trigger("probe", {"name": "never"})
        events = await wait_for(lambda: [e for e in read_events(record) if e["event"] == "child"])
        pids = [events[0]["pid"]] + [e["pid"] for e in read_events(record) if e["event"] == "start"]

        assert await client.cancel(queued.job_id) == "cancelled"
        assert (await client.status(queued.job_id))["state"] == "cancelled"  # type: ignore[index]

        assert await client.cancel(running.job_id) == "cancelled"
        job = await client.status(running.job_id)
        assert job is not None and job["state"] == "cancelled"
        await wait_for(lambda: not any(pid_alive(p) for p in pids), timeout_s=10)
        assert (await client.stats())["queues"]["default"] == {"depth": 0, "running": 0, "concurrency": 1}
        # a cancelled job is not run by the now idle worker
        assert not any(e.get("name") == "never" for e in read_events(record))
        # a finished job cannot be cancelled again
        assert await client.cancel(running.job_id) == "cancelled"


async def test_batch_with_one_bad_entry_enqueues_nothing(tmp_path: Path, redis_url: str, plugins_dir: Path) -> None:
    settings = make_settings(tmp_path, redis_url)
    async with run_app(settings), Client(await _redis(redis_url), owns_redis=True) as client:
        with pytest.raises(BatchError) as info:
            await client.batch(
                [
                    {"plugin": "probe", "params": {"name": "a"}},
                    {"plugin": "probe", "params": {"sleep": "x"}},
                    {"plugin": "ghost", "params": {}},
                ]
            )
        assert len(info.value.problems) == 2
        assert info.value.problems[0].startswith("[1] probe")
        assert info.value.problems[1].startswith("[2] ghost")
        assert await client.redis.zcard(Keys.all_jobs) == 0

        batch = await client.batch([{"plugin": "probe", "params": {"name": str(i)}} for i in range(5)])
        await wait_for(lambda: _batch_done(client, batch["batch_id"]), timeout_s=30)
        status = await client.batch_status(batch["batch_id"])
        assert status["states"]["succeeded"] == 5 and status["done"]


async def test_deferred_job_waits_for_its_time(tmp_path: Path, redis_url: str, plugins_dir: Path) -> None:
    settings = make_settings(tmp_path, redis_url)
    async with run_app(settings), Client(await _redis(redis_url), owns_redis=True) as client:
        job = await client.trigger("probe", defer_s=1.0)
        assert (await client.status(job.job_id))["state"] == "deferred"  # type: ignore[index]
        done = await client.result(job.job_id, timeout_s=20)
        assert done["state"] == "succeeded"
        from datetime import datetime

        started = datetime.fromisoformat(done["started_at"])
        enqueued = datetime.fromisoformat(done["enqueued_at"])
        assert (started - enqueued).total_seconds() >= 0.95


async def _batch_done(client: Client, batch_id: str) -> bool:
    return bool((await client.batch_status(batch_id))["done"])


async def _redis(url: str):  # type: ignore[no-untyped-def]
    from orchestrator.client import connect_redis

    return connect_redis(url)


async def test_a_process_serves_only_its_queues(tmp_path: Path, redis_url: str, plugins_dir: Path) -> None:
    settings = make_settings(tmp_path, redis_url)
    async with run_app(settings, queues=["high"]), Client(await _redis(redis_url), owns_redis=True) as client:
        on_high = await client.trigger("probe", queue="high")
        on_low = await client.trigger("probe", queue="low")
        assert (await client.result(on_high.job_id, timeout_s=20))["state"] == "succeeded"
        assert (await client.status(on_low.job_id))["state"] == "queued"  # type: ignore[index]
        assert (await client.stats())["queues"]["low"]["depth"] == 1
    async with run_app(settings, queues=["low"]), Client(await _redis(redis_url), owns_redis=True) as client:
        assert (await client.result(on_low.job_id, timeout_s=20))["state"] == "succeeded"
