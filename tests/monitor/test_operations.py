"""What operators meet: one log line per job, loop lag in /health, job deletion and purge, and a
plugin reload that reaches every instance."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from orchestrator.app import Orchestrator
from orchestrator.client import Client, connect_redis
from orchestrator.cluster.lease import LeaderLease
from orchestrator.cluster.plugin_reload import PluginReloader
from orchestrator.components import BaseComponent, Component
from orchestrator.jobs.model import Keys
from orchestrator.jobs.shared import Shared
from tests.jobs.helpers import cli, make_plugin, make_settings, run_app, wait_for
from tests.monitor.conftest import Server


def test_each_job_logs_one_start_and_one_end_line_with_its_fields(server: Server) -> None:
    job_id = server.trigger(name="logged")
    server.wait_state(job_id, "succeeded")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [json.loads(x) for x in server.log().splitlines() if job_id in x and x.startswith("{")]
        events = [x for x in lines if x.get("event", "").startswith("job.")]
        if len(events) == 2:
            break
        time.sleep(0.05)
    start, end = events
    assert start["event"] == "job.start" and end["event"] == "job.end"
    for line in (start, end):
        assert (line["job_id"], line["plugin"], line["queue"], line["attempt"]) == (job_id, "probe", "default", 1)
        assert line["level"] == "info"
    assert end["outcome"] == "succeeded" and end["duration_s"] >= 0
    assert "working on logged" not in server.log()  # the plugin's own output stays in the job log


class _Blocker(BaseComponent):
    """Test-only: blocks the event loop once when asked (a stand-in for a sync call in a plugin-free path)."""

    name = "blocker"

    def __init__(self) -> None:
        self.go = asyncio.Event()

    async def run(self) -> None:
        while True:
            await self.go.wait()
            self.go.clear()
            time.sleep(1.5)  # noqa: ASYNC251 - blocking the loop is what this test is about


class _AppWithBlocker(Orchestrator):
    blocker = _Blocker()

    def _build_components(self, shared: Shared, lease: LeaderLease, client: Client, redis_url: str) -> list[Component]:
        return [*super()._build_components(shared, lease, client, redis_url), self.blocker]


async def _health(http: aiohttp.ClientSession, base: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with http.get(f"{base}/health") as r:
        return r.status, await r.json()


async def test_a_stalled_loop_turns_health_503_then_200(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url, loop_lag_threshold_s=0.5, loop_lag_window_s=2.0)
    async with run_app(settings, app_type=_AppWithBlocker) as app, aiohttp.ClientSession() as http:
        assert app.http is not None
        base = f"http://127.0.0.1:{app.http.bound_port}"
        assert (await _health(http, base))[0] == 200
        _AppWithBlocker.blocker.go.set()
        _, body = await wait_for(lambda: _failing(http, base), timeout_s=10)
        assert body["failing"] == ["loop"] and "stalled for 1." in body["components"]["loop"]["error"]
        await wait_for(lambda: _ok(http, base), timeout_s=10)


async def _failing(http: aiohttp.ClientSession, base: str) -> tuple[int, dict] | None:  # type: ignore[type-arg]
    status, body = await _health(http, base)
    return (status, body) if status == 503 else None


async def _ok(http: aiohttp.ClientSession, base: str) -> bool:
    return (await _health(http, base))[0] == 200


async def _keys_of(redis_url: str, job_id: str) -> list[str]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        found = [k.decode() for k in await client.keys(f"*{job_id}*")]
        for index in [Keys.all_jobs, Keys.plugin_jobs("probe"), *(Keys.state(s) for s in ("succeeded", "failed"))]:
            if await client.zscore(index, job_id) is not None:
                found.append(index)
        return found
    finally:
        await client.aclose()


async def test_delete_and_purge_leave_nothing_of_a_job(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins", max_retries=0)
    settings = make_settings(tmp_path, redis_url)
    async with run_app(settings), Client(connect_redis(redis_url), owns_redis=True) as client:
        done = await client.trigger("probe", {"name": "chatty"})
        bad = [await client.trigger("probe", {"fail_until_file": str(tmp_path / "never")}) for _ in range(3)]
        running = await client.trigger("probe", {"sleep": 30})
        for job in (done, *bad):
            await client.result(job.job_id, timeout_s=20)
        assert await _keys_of(redis_url, done.job_id)  # the record, its log and its index entries

        r = await cli(settings, "jobs", "delete", done.job_id)
        assert r.rc == 0, r.err
        assert await _keys_of(redis_url, done.job_id) == []

        await wait_for(lambda: _state_is(client, running.job_id, "running"))
        r = await cli(settings, "jobs", "delete", running.job_id)
        assert r.rc == 1 and "cancel it first" in r.err
        assert await client.status(running.job_id) is not None

        r = await cli(settings, "jobs", "purge", "--state", "failed")  # no terminal: asks for --yes
        assert r.rc == 2 and "would delete 3 failed jobs" in r.err
        r = await cli(settings, "jobs", "purge", "--state", "failed", "--older-than", "1h", "--yes")
        assert r.rc == 0 and "deleted 0" in r.out  # all newer than an hour
        r = await cli(settings, "jobs", "purge", "--state", "failed", "--plugin", "probe", "--yes", "--json")
        assert r.rc == 0 and r.json() == {"deleted": 3}
        for job in bad:
            assert await _keys_of(redis_url, job.job_id) == []
        await client.cancel(running.job_id)


async def _state_is(client: Client, job_id: str, state: str) -> bool:
    job = await client.status(job_id)
    return job is not None and job["state"] == state


async def test_plugins_reload_reaches_every_instance(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins", "probe")
    settings = make_settings(tmp_path, redis_url, api_token="tok")
    auth = {"Authorization": "Bearer tok"}
    async with run_app(settings) as one, run_app(settings) as two, aiohttp.ClientSession() as http:
        bases = [f"http://127.0.0.1:{app.http.bound_port}" for app in (one, two) if app.http]
        for base in bases:  # not there yet: refused
            async with http.post(f"{base}/api/jobs", json={"plugin": "fresh"}, headers=auth) as r:
                assert r.status == 400
        make_plugin(tmp_path / "plugins", "fresh")
        reloaded = await cli(settings, "plugins", "reload")
        assert reloaded.rc == 0, reloaded.err
        triggered = []
        for base in bases:
            await wait_for(lambda b=base: _plugin_listed(http, b, "fresh"), timeout_s=10)
            async with http.post(f"{base}/api/jobs", json={"plugin": "fresh"}, headers=auth) as r:
                assert r.status == 201, await r.text()
                triggered.append((await r.json())["job_id"])
        # The runs import main.py and write __pycache__ into the folder: let them end before it goes
        # (removing it under a run raced with both, and failed the run or the removal).
        async with Client(connect_redis(redis_url), owns_redis=True) as client:
            for job_id in triggered:
                assert (await client.result(job_id, timeout_s=20))["state"] == "succeeded"

        # removed from the folder: new triggers are refused on every instance
        shutil.rmtree(tmp_path / "plugins" / "fresh")
        async with http.post(f"{bases[0]}/api/plugins/fresh/reload", headers=auth) as r:
            assert r.status == 202
        for base in bases:
            await wait_for(lambda b=base: _plugin_gone(http, b, "fresh"), timeout_s=10)
            async with http.post(f"{base}/api/jobs", json={"plugin": "fresh"}, headers=auth) as r:
                assert r.status == 400 and "fresh" in (await r.json())["error"]


async def _plugin_listed(http: aiohttp.ClientSession, base: str, name: str) -> bool:
    async with http.get(f"{base}/api/plugins", headers={"Authorization": "Bearer tok"}) as r:
        return name in {p["name"] for p in await r.json()}


async def _plugin_gone(http: aiohttp.ClientSession, base: str, name: str) -> bool:
    return not await _plugin_listed(http, base, name)


async def test_plugins_watch_reloads_on_file_changes(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins", "probe")
    settings = make_settings(tmp_path, redis_url, plugins_watch=True)
    async with run_app(settings) as app, aiohttp.ClientSession() as http:
        assert app.http is not None
        base = f"http://127.0.0.1:{app.http.bound_port}"
        assert app.supervisor is not None
        reloader = app.supervisor.get("plugin-reload")
        assert isinstance(reloader, PluginReloader)
        await asyncio.wait_for(reloader.watching.wait(), 10)
        make_plugin(tmp_path / "plugins", "dropped_in")
        await wait_for(lambda: _plugin_listed(http, base, "dropped_in"), timeout_s=15)
