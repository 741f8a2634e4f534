"""The dashboard's routes and the client read side behind them and `orchestrator top` (in-process app, real Redis)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from orchestrator.client import Client
from orchestrator.cluster.lease import LeaderLease
from orchestrator.config import Settings
from orchestrator.monitor.dashboard_routes import STATIC_DIR
from tests.jobs.helpers import make_plugin, make_settings, run_app, wait_for


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    make_plugin(tmp_path / "plugins", "probe", max_retries=0)
    make_plugin(tmp_path / "plugins", "other", queue="warehouse")
    return make_settings(tmp_path, redis_url, queues={"default": {"concurrency": 4}, "warehouse": {"concurrency": 1}})


class Api:
    def __init__(self, base: str, session: aiohttp.ClientSession, client: Client) -> None:
        self.base = base
        self.session = session
        self.client = client

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.base + path) as r:
            return r.status, await r.json(content_type=None)

    async def run(self, plugin: str = "probe", **params: Any) -> dict[str, Any]:
        job = await self.client.trigger(plugin, params)
        return await self.client.result(job.job_id, timeout_s=30)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with (
        run_app(settings) as app,
        await Client.connect(settings.redis_url or "") as client,
        aiohttp.ClientSession() as session,
    ):
        assert app.http is not None
        yield Api(f"http://127.0.0.1:{app.http.bound_port}", session, client)


async def test_the_page_and_its_files_are_served_with_a_strict_policy(api: Api) -> None:
    async with api.session.get(api.base + "/") as r:
        assert r.status == 200
        assert r.content_type == "text/html"
        html = await r.text()
        csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert '<script src="/dashboard/app.js"' in html
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        async with api.session.get(f"{api.base}/dashboard/{name}") as r:
            assert r.status == 200
            assert kind in r.content_type
    for bad in ("/dashboard/index.htm", "/dashboard/..%2Fhttp.py", "/dashboard/%2E%2E%2Fdashboard_routes.py"):
        async with api.session.get(api.base + bad) as r:
            assert r.status == 404, bad


def test_the_page_ships_everything_it_loads_and_never_parses_html_from_data() -> None:
    files = {p.name: p.read_text() for p in STATIC_DIR.iterdir()}
    assert set(files) == {"index.html", "app.js", "style.css"}
    for name, text in files.items():
        # Nothing from another origin (the SVG namespace is an identifier, not a fetch).
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert urls == set(), f"{name} refers to {urls}"
    js = files["app.js"]
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in js, sink


async def test_job_logs_after_an_id(api: Api) -> None:
    job = await api.run(name="logged")
    status, body = await api.get(f"/api/jobs/{job['job_id']}/logs")
    assert status == 200
    assert body["state"] == "succeeded"
    assert [e["line"] for e in body["entries"]] == ["working on logged"]
    assert body["entries"][0]["stream"] == "stdout"
    last = body["entries"][-1]["id"]
    status, body = await api.get(f"/api/jobs/{job['job_id']}/logs?after={last}")
    assert (status, body["entries"]) == (200, [])
    status, body = await api.get("/api/jobs/no-such-job/logs")
    assert status == 404


async def test_throughput_counts_finished_jobs_of_the_last_hour(api: Api, tmp_path: Path) -> None:
    for i in range(3):
        await api.run(name=f"ok{i}")
    await api.run(name="bad", fail_until_file=str(tmp_path / "never"))
    status, body = await api.get("/api/throughput?window_s=3600&bucket_s=60")
    assert status == 200
    assert len(body["succeeded"]) == 60
    assert sum(body["succeeded"]) == 3
    assert sum(body["failed"]) == 1
    assert sum(body["enqueued"]) == 4
    assert body["failure_rate"] == 0.25
    # The newest bucket holds them all (they finished just now).
    assert body["succeeded"][-1] == 3
    status, body = await api.get("/api/throughput?window_s=86400&bucket_s=1")
    assert status == 400
    assert "1440 buckets" in body["error"]


async def test_the_job_list_pages_and_filters_by_queue(api: Api) -> None:
    done = [await api.run("other", name=f"w{i}") for i in range(5)]
    done += [await api.run("probe", name=f"d{i}") for i in range(4)]
    newest_first = [j["job_id"] for j in reversed(done)]
    status, everything = await api.get("/api/jobs?limit=100")
    assert [j["job_id"] for j in everything] == newest_first
    pages = [(await api.get(f"/api/jobs?limit=4&offset={o}"))[1] for o in (0, 4, 8)]
    assert [j["job_id"] for page in pages for j in page] == newest_first
    status, warehouse = await api.get("/api/jobs?queue=warehouse&limit=3&offset=1")
    assert [j["job_id"] for j in warehouse] == newest_first[5:8]
    status, mixed = await api.get("/api/jobs?plugin=other&state=succeeded&queue=default")
    assert (status, mixed) == (200, [])
    status, body = await api.get("/api/jobs?offset=x")
    assert status == 400 and "offset" in body["error"]


async def test_finished_lists_the_newest_final_jobs_across_states(api: Api, tmp_path: Path) -> None:
    first = await api.run(name="a")
    failed = await api.run(name="b", fail_until_file=str(tmp_path / "never"))
    last = await api.run(name="c")
    status, body = await api.get("/api/finished?limit=2")
    assert status == 200
    assert [j["job_id"] for j in body] == [last["job_id"], failed["job_id"]]
    assert first["job_id"] not in [j["job_id"] for j in body]


async def test_instances_and_the_leader_through_the_client(api: Api, settings: Settings) -> None:
    instances = await api.client.instances()
    assert len(instances) == 1
    (info,) = instances.values()
    assert info["alive"] is True
    assert set(info["queues"]) == {"default", "warehouse"}
    leader = await api.client.leader()
    lease: LeaderLease | None = None
    task: asyncio.Task[None] | None = None
    if leader is None:  # nobody leads yet: take the lease, as a leader instance would
        lease = LeaderLease(api.client.redis, "dashboard-test-leader", ttl_s=2)
        task = asyncio.create_task(lease.run())
        await asyncio.wait_for(lease.wait_gained(), 10)
        leader = await wait_for(api.client.leader)
        assert leader["instance_id"] == "dashboard-test-leader"
    assert isinstance(leader["token"], int)
    assert isinstance(leader["since"], float)
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
