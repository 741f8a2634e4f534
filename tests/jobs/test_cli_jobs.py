"""Every job command of the real CLI (a child process), against a real Redis and a running app."""

from __future__ import annotations

import json
from pathlib import Path

import redis.asyncio as aioredis

from orchestrator.jobs.model import Keys
from tests.jobs.helpers import cli, make_plugin, make_settings, read_events, run_app, wait_for


async def test_trigger_status_list_stats_logs(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url)
    async with run_app(settings):
        r = await cli(settings, "trigger", "probe", "-p", "name=cli", "--priority", "high")
        assert r.rc == 0, r.err
        job_id = r.out.strip()
        assert len(job_id) == 32 and "\n" not in job_id  # id=$(orchestrator trigger ...) works

        r = await cli(settings, "trigger", "probe", "--params-json", '{"name": "waited"}', "--wait", "--json")
        assert r.rc == 0, r.err
        waited = r.json()
        assert waited["state"] == "succeeded" and waited["result"] == {"name": "waited", "attempt": 1}

        status = await wait_for(lambda: _status(settings, job_id))
        assert status["priority"] == 1 and status["source"] == "cli" and status["queue"] == "default"

        r = await cli(settings, "jobs", "list", "--state", "succeeded", "--json")
        assert {j["job_id"] for j in r.json()} == {job_id, waited["job_id"]}
        r = await cli(settings, "jobs", "list", "--plugin", "probe", "--limit", "1", "--json")
        assert len(r.json()) == 1
        r = await cli(settings, "jobs", "stats", "--json")
        assert r.json()["states"]["succeeded"] == 2
        assert r.json()["queues"]["default"]["concurrency"] == 4
        r = await cli(settings, "jobs", "logs", job_id)
        assert r.out == "working on cli\n"
        r = await cli(settings, "jobs", "stats")  # the rich table renders
        assert r.rc == 0 and "succeeded" in r.out


async def _status(settings, job_id):  # type: ignore[no-untyped-def]
    r = await cli(settings, "status", job_id, "--json")
    data = r.json()
    return data if data["state"] == "succeeded" else None


async def test_usage_and_validation_errors_exit_2_and_enqueue_nothing(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url)
    async with run_app(settings):
        for args in (
            ["trigger", "probe", "-p", "sleep=abc"],
            ["trigger", "probe", "-p", "nokey"],
            ["trigger", "ghost"],
            ["trigger", "probe", "--priority", "11"],
            ["trigger", "probe", "--queue", "nope"],
            ["trigger", "probe", "--defer", "soon"],
        ):
            r = await cli(settings, *args)
            assert r.rc == 2, (args, r.out, r.err)
            assert r.err.strip(), args
        r = await cli(settings, "jobs", "stats", "--json")
        assert sum(r.json()["states"].values()) == 0
        r = await cli(settings, "status", "no-such-job")
        assert r.rc == 1 and "no job or batch" in r.err
        r = await cli(settings, "trigger", "probe", "-p", "sleep=abc", "--json")
        assert r.rc == 2 and "sleep" in r.json()["error"]


async def test_duplicate_id_cancel_retry_and_wait_failure(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins", max_retries=0)
    settings = make_settings(tmp_path, redis_url)
    gate = tmp_path / "gate"
    async with run_app(settings):
        r1 = await cli(settings, "trigger", "probe", "--job-id", "fixed-1", "--defer", "1h")
        r2 = await cli(settings, "trigger", "probe", "--job-id", "fixed-1", "--json")
        assert r1.rc == 0 and r2.rc == 0
        assert r2.json() == {"job_id": "fixed-1", "created": False}
        assert "already exists" in r2.err
        r = await cli(settings, "jobs", "cancel", "fixed-1")
        assert r.rc == 0 and r.out.strip() == "fixed-1 cancelled"

        r = await cli(settings, "trigger", "probe", "-p", f"fail_until_file={gate}", "--wait")
        assert r.rc == 1 and "does not exist yet" in r.err
        failed_id = json.loads((await cli(settings, "jobs", "list", "--state", "failed", "--json")).out)[0]["job_id"]
        gate.touch()
        r = await cli(settings, "jobs", "retry", failed_id, "--json")
        assert r.rc == 0, r.err
        new_id = r.json()["job_id"]
        done = await wait_for(lambda: _status(settings, new_id))
        assert done["retry_of"] == failed_id
        r = await cli(settings, "jobs", "retry", new_id)
        assert r.rc == 2 and "only failed or cancelled" in r.err


async def test_batch_command(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url)
    record = tmp_path / "events.jsonl"
    good = [{"plugin": "probe", "params": {"name": f"b{i}", "record": str(record)}} for i in range(4)]
    async with run_app(settings):
        bad = [*good, {"plugin": "probe", "params": {"sleep": "x"}}]
        r = await cli(settings, "batch", "-", stdin=json.dumps(bad))
        assert r.rc == 2 and "[4] probe" in r.err
        assert read_events(record) == []
        assert sum((await cli(settings, "jobs", "stats", "--json")).json()["states"].values()) == 0

        path = tmp_path / "batch.json"
        path.write_text(json.dumps(good))
        r = await cli(settings, "batch", str(path), "--wait", "--json", "--timeout", "30s")
        assert r.rc == 0, r.err
        state = r.json()
        assert state["done"] and state["states"]["succeeded"] == 4
        r = await cli(settings, "status", state["batch_id"], "--json")
        assert r.json()["total"] == 4


async def test_plugins_enable_disable_is_seen_by_triggers(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url)
    async with run_app(settings):
        assert (await cli(settings, "plugins", "disable", "probe")).rc == 0
        r = await cli(settings, "trigger", "probe")
        assert r.rc == 2 and "disabled" in r.err
        listed = (await cli(settings, "plugins", "list", "--json")).json()
        assert listed[0]["enabled"] is False
        assert (await cli(settings, "plugins", "enable", "probe")).rc == 0
        assert (await cli(settings, "trigger", "probe")).rc == 0
        assert (await cli(settings, "plugins", "disable", "ghost")).rc == 1


async def test_logs_follow_streams_until_the_job_ends(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url)
    record = tmp_path / "events.jsonl"
    async with run_app(settings):
        r = await cli(settings, "trigger", "probe", "-p", "name=streamed", "-p", "sleep=2", "-p", f"record={record}")
        job_id = r.out.strip()
        await wait_for(lambda: read_events(record))  # running
        r = await cli(settings, "jobs", "logs", job_id, "--follow")
        assert r.rc == 0, r.err
        assert r.out == "working on streamed\n"
        assert [e["event"] for e in read_events(record)] == ["start", "end"]  # it returned only at the end
        r = await cli(settings, "jobs", "logs", "nope")
        assert r.rc == 1


async def test_a_job_id_with_a_line_break_is_refused_in_one_line(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url)
    for job_id in ("a\r\nforged",):  # the API test tries more; a CLI start costs a second
        r = await cli(settings, "trigger", "probe", "--job-id", job_id)
        assert r.rc == 2, (job_id, r.out, r.err)
        (line,) = r.err.strip().splitlines()
        assert "printable characters only" in line
    redis = aioredis.Redis.from_url(redis_url)
    try:
        assert await redis.zcard(Keys.all_jobs) == 0  # nothing enqueued
    finally:
        await redis.aclose()
