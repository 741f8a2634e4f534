"""Schedules inside a running app: /api/schedules, /status, /metrics, and overlap=skip with a run
that is really running (real workers, a real plugin child)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from orchestrator.schedules.model import job_id_for
from tests.jobs.helpers import make_plugin, make_settings, run_app, wait_for
from tests.schedules.conftest import Rig

TOKEN = "s3cret"


async def _call(port: int, method: str, path: str, body: Any = None, token: str | None = TOKEN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"http://127.0.0.1:{port}{path}", json=body, headers=headers) as r,
    ):
        return r.status, await r.json()


async def test_http_routes_status_and_metrics(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url, api_token=TOKEN, leader_ttl_s=2)
    async with run_app(settings) as app:
        assert app.http is not None and app.http.bound_port is not None
        port = app.http.bound_port
        definition = {"id": "hourly", "plugin": "probe", "every": "1h", "params": {"name": "h"}}

        assert (await _call(port, "POST", "/api/schedules", definition, token=None))[0] == 401
        assert (await _call(port, "POST", "/api/schedules", definition, token="wrong"))[0] == 401
        status, body = await _call(port, "POST", "/api/schedules", {**definition, "cron": "0 2 * * *"})
        assert status == 400 and "exactly one of cron or every" in body["error"]
        status, body = await _call(port, "POST", "/api/schedules", {**definition, "params": {"sleep": "x"}})
        assert status == 400 and "sleep" in body["error"]
        assert (await _call(port, "GET", "/api/schedules"))[1] == []

        status, body = await _call(port, "POST", "/api/schedules", definition)
        assert status == 201 and body["id"] == "hourly" and body["next_run_at"].endswith(":00:00.000Z")
        assert (await _call(port, "GET", "/api/schedules", token=None))[0] == 401  # job params: behind the token
        assert [r["id"] for r in (await _call(port, "GET", "/api/schedules"))[1]] == ["hourly"]
        status, body = await _call(port, "POST", "/api/schedules/hourly/pause")
        assert status == 200 and body["enabled"] is False and body["next_run_at"] is None
        assert (await _call(port, "POST", "/api/schedules/hourly/resume"))[1]["enabled"] is True
        status, body = await _call(port, "POST", "/api/schedules/hourly/run")
        assert status == 201 and body["job_id"].startswith("sched:hourly:run-")
        history = (await _call(port, "GET", "/api/schedules/hourly/history"))[1]
        assert [(h["kind"], h["job_id"]) for h in history] == [("manual", body["job_id"])]
        assert (await _call(port, "GET", "/api/schedules/nope"))[0] == 404

        # this instance leads: /status shows the scheduler's own view, /metrics its counters
        async def shown() -> Any:
            _, st = await _call(port, "GET", "/status", token=None)
            rows = {r["id"]: r for r in st.get("schedules", [])}
            return rows.get("hourly") if rows.get("hourly", {}).get("fires") == 1 else None

        row = await wait_for(shown, timeout_s=10)
        assert row["last_job_id"] == body["job_id"] and row["next_run_at"].endswith(":00:00.000Z")
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
        assert 'orchestrator_schedule_fires_total{schedule="hourly"} 1.0' in text
        assert 'orchestrator_schedule_misfires_total{schedule="hourly"} 0.0' in text
        assert 'orchestrator_schedule_overlap_skips_total{schedule="hourly"} 0.0' in text

        assert (await _call(port, "DELETE", "/api/schedules/hourly"))[0] == 200
        assert (await _call(port, "GET", "/api/schedules"))[1] == []


async def test_overlap_skip_holds_back_while_the_previous_run_is_running(rig: Rig) -> None:
    s0 = 1_000_020.0
    await rig.client.add_schedule(id="slow", plugin="probe", every="10s", params={"sleep": 60})
    rig.clock.t = s0 - 1
    # workers only: this app never leads, so only the test's scheduler (and its clock) fires
    async with run_app(rig.settings, role="worker"), rig.scheduler() as sched:
        await rig.at(sched, s0)
        first = job_id_for("slow", s0)
        await wait_for(lambda: _state_is(rig, first, "running"), timeout_s=30)
        await rig.at(sched, s0 + 10)
        assert await rig.job_ids() == [first]
        assert (await rig.client.schedule_history("slow"))[0]["reason"] == f"previous run {first} is running"
        assert await rig.client.cancel(first, wait_s=20) == "cancelled"
        await rig.at(sched, s0 + 20)
        assert await rig.job_ids() == [first, job_id_for("slow", s0 + 20)]
        await rig.client.cancel(job_id_for("slow", s0 + 20), wait_s=20)


async def _state_is(rig: Rig, job_id: str, state: str) -> bool:
    job = await rig.client.status(job_id)
    return job is not None and job["state"] == state
