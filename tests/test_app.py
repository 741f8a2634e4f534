"""The running app: status endpoint, health probe, API auth, start-up failures, and Redis going away."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp

from orchestrator.app import Orchestrator
from orchestrator.client import Client, connect_redis
from orchestrator.cluster.lease import LeaderLease
from orchestrator.components import BaseComponent, Component
from orchestrator.jobs.shared import Shared
from orchestrator.plugins.build import build_registry
from tests.jobs.helpers import cli, cli_env, make_plugin, make_settings, run_app, wait_for
from tests.services import RedisServer


def _base(app) -> str:  # type: ignore[no-untyped-def]
    return f"http://127.0.0.1:{app.http.bound_port}"


async def test_status_endpoint_routes(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    (tmp_path / "plugins" / "broken").mkdir()
    (tmp_path / "plugins" / "broken" / "plugin.json").write_text("{not json")
    settings = make_settings(tmp_path, redis_url)
    async with run_app(settings) as app, aiohttp.ClientSession() as http:
        base = _base(app)
        async with http.get(f"{base}/live") as r:
            assert r.status == 200
        async with http.get(f"{base}/health") as r:
            body = await r.json()
            assert r.status == 200 and body["status"] == "ok"
            assert set(body["components"]) == {
                "http", "loop", "redis", "leader", "heartbeat", "venv-builder", "plugin-reload", "workers", "reconcile",
                "housekeeping", "scheduler", "cdc",
            }  # fmt: skip
        async with http.get(f"{base}/status") as r:
            status = await r.json()
        assert status["instance_id"] == app.identity.instance_id
        assert status["plugins"]["valid"] == ["probe"]
        assert "broken" in status["plugins"]["invalid"]
        assert status["queues"]["default"] == {"depth": 0, "running": 0, "concurrency": 4}
        async with http.get(f"{base}/api/plugins") as r:
            plugins = {p["name"]: p for p in await r.json()}
        assert plugins["broken"]["state"] == "invalid" and plugins["broken"]["reason"]
        assert plugins["probe"]["state"] == "ready" and plugins["probe"]["reason"] is None
        async with http.get(f"{base}/api/jobs/nope") as r:
            assert r.status == 404

        async with Client(connect_redis(redis_url), owns_redis=True) as client:
            job = await client.trigger("probe")
            await client.result(job.job_id, timeout_s=20)
        async with http.get(f"{base}/api/jobs?state=succeeded") as r:
            assert [j["job_id"] for j in await r.json()] == [job.job_id]
        async with http.get(f"{base}/metrics") as r:
            text = await r.text()
        assert 'orchestrator_jobs{state="succeeded"} 1.0' in text
        assert "orchestrator_up 1.0" in text


async def test_api_writes_need_the_token(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    job = {"plugin": "probe", "params": {"name": "http"}}
    async with aiohttp.ClientSession() as http:
        async with (
            run_app(make_settings(tmp_path, redis_url)) as app,
            http.post(f"{_base(app)}/api/jobs", json=job) as r,
        ):
            assert r.status == 403 and "ORCH_API_TOKEN" in (await r.json())["error"]
        async with run_app(make_settings(tmp_path, redis_url, api_token="s3cret")) as app:
            base = _base(app)
            async with http.post(f"{base}/api/jobs", json=job, headers={"Authorization": "Bearer nope"}) as r:
                assert r.status == 401
            auth = {"Authorization": "Bearer s3cret"}
            async with http.post(f"{base}/api/jobs", json={"plugin": "probe", "params": {"x": 1}}, headers=auth) as r:
                assert r.status == 400 and "x" in (await r.json())["error"]
            async with http.post(f"{base}/api/jobs", json=job, headers=auth) as r:
                assert r.status == 201
                job_id = (await r.json())["job_id"]
            async with Client(connect_redis(redis_url), owns_redis=True) as client:
                assert (await client.result(job_id, timeout_s=20))["source"] == "http"


async def test_health_command(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url)
    async with run_app(settings) as app:
        r = await cli(settings, "health", "--url", _base(app))
        assert r.rc == 0 and r.out.strip() == "healthy"
        r = await cli(settings, "health", "--url", _base(app), "--json")
        assert r.rc == 0 and r.json()["status"] == "ok"
        # Not the status endpoint (a 404) and not an HTTP URL: unhealthy, one line each.
        for url, error in ((f"{_base(app)}/elsewhere", "Not Found"), ("ftp://x", "not an http(s) URL")):
            r = await cli(settings, "health", "--url", url)
            assert r.rc == 1 and r.out.startswith("unhealthy: ") and error in r.out, r
            assert "Traceback" not in r.err
    r = await cli(settings, "health", "--url", _base(app), "--timeout", "1")
    assert r.rc == 1 and "unreachable" in r.out
    # A password in --url is never printed (planted: refused, and not http).
    for url in (_base(app).replace("//", "//u:planted-pw@"), "ftp://u:planted-pw@x"):
        for args in ((), ("--json",)):
            r = await cli(settings, "health", "--url", url, *args)
            assert r.rc == 1 and "unreachable" in r.out and "u:***@" in r.out, r
            assert "planted-pw" not in r.out + r.err


_LOADED_BY_HEALTH = """
import sys
from orchestrator.cli.main import main
rc = main(["health", "--url", sys.argv[1]])
heavy = ["redis", "arq", "orchestrator.app", "orchestrator.client", "aiohttp"]
print(rc, [name for name in heavy if name in sys.modules])
"""


async def test_the_health_check_loads_neither_redis_nor_the_app(tmp_path: Path, redis_url: str) -> None:
    """The container runs `orchestrator health` every 15 s: it imports what it uses (the settings and
    the standard library's HTTP client), not redis, arq, aiohttp or the whole app, which took 0.84 s
    of CPU per check (bench/README.md, "The container's health check")."""
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url)
    async with run_app(settings) as app:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _LOADED_BY_HEALTH, _base(app), env=cli_env(settings),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode().splitlines()[-1] == "0 []"


async def test_port_in_use_fails_start_up_with_one_line(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(tmp_path, redis_url, http_port=port)
        r = await cli(settings, "run", ORCH_HTTP_PORT=str(port))
    assert r.rc == 1, r.err
    assert "cannot listen on 127.0.0.1" in r.err
    assert "Traceback" not in r.err


async def test_redis_going_away_keeps_the_process_serving(
    tmp_path: Path, redis_url: str, redis_server: RedisServer
) -> None:
    """Redis stops under a running app: /health says which component fails, /live still answers,
    nothing crashes; when Redis is back, jobs run again without a restart."""
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url)
    async with run_app(settings) as app, aiohttp.ClientSession() as http:
        base = _base(app)
        redis_server.stop()
        try:
            async with http.get(f"{base}/health") as r:
                body = await r.json()
            assert r.status == 503 and "redis" in body["failing"]
            assert body["components"]["redis"]["error"]
            async with http.get(f"{base}/live") as r:
                assert r.status == 200
            async with http.get(f"{base}/api/stats") as r:
                assert r.status == 503
            # every component is still running: nothing crashed the process
            assert app.supervisor is not None
            assert not [s.component.name for s in app.supervisor.slots if s.task is None or s.task.done()]
        finally:
            redis_server.start()
        await wait_for(lambda: _healthy(http, base), timeout_s=20, interval_s=0.2)
        # The test Redis keeps no data across a restart: validate against the local plugins folder.
        async with Client(connect_redis(redis_url), owns_redis=True) as client:
            registry = build_registry(settings, settings.venv_dir)
            await registry.load()
            local = Client.for_settings(settings, client.redis, registry)
            job = await local.trigger("probe", {"name": "after"})
            done = await local.result(job.job_id, timeout_s=30)
            assert done["state"] == "succeeded"


async def _healthy(http: aiohttp.ClientSession, base: str) -> bool:
    async with http.get(f"{base}/health") as r:
        return r.status == 200


class _Broken(BaseComponent):
    name = "broken"

    def __init__(self) -> None:
        self.started = 0

    async def run(self) -> None:
        self.started += 1
        raise RuntimeError("kaput")


class _BrokenStatus(BaseComponent):
    """Runs fine, but its status() and health() raise: the rest of /status and /health must still answer."""

    name = "broken-status"
    leader_only = True  # published by the leader: publishing must survive it too

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def status(self) -> dict[str, Any]:
        raise ValueError("no status today")


class _AppWithABrokenPart(Orchestrator):
    def _build_components(self, shared: Shared, lease: LeaderLease, client: Client, redis_url: str) -> list[Component]:
        return [*super()._build_components(shared, lease, client, redis_url), _Broken(), _BrokenStatus()]


async def test_a_failing_component_turns_health_503_and_the_rest_keeps_serving(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url)
    async with (
        run_app(settings, app_type=_AppWithABrokenPart) as app,
        aiohttp.ClientSession() as http,
        Client(connect_redis(redis_url), owns_redis=True) as client,
    ):
        base = _base(app)
        async with http.get(f"{base}/health") as r:
            body = await r.json()
        assert r.status == 503 and body["failing"] == ["broken"]
        assert "kaput" in body["components"]["broken"]["error"]
        async with http.get(f"{base}/live") as r:
            assert r.status == 200
        async with http.get(f"{base}/status") as r:
            status = await r.json()
        assert status["components"]["broken"]["state"] == "failed"
        assert status["components"]["workers"]["state"] == "running"
        assert status["components"]["broken-status"]["state"] == "running"
        assert "no status today" in status["components"]["broken-status"]["status_error"]
        assert "broken-status" not in status  # no block rather than one outside its type
        # everything else still works: a job runs
        job = await client.trigger("probe")
        assert (await client.result(job.job_id, timeout_s=20))["state"] == "succeeded"
