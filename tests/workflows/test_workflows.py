"""Workflows end to end: a real Redis, a real `orchestrator run` (in-process or a child), real
plugin processes. Joins are enqueued by the finish script of what they wait for, exactly once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from orchestrator.app import Orchestrator
from orchestrator.client import Client
from orchestrator.config import Settings
from orchestrator.jobs.model import Keys
from orchestrator.workflows.model import chain, group, job
from tests.jobs.helpers import cli, make_settings, run_app, wait_for
from tests.workflows.helpers import lines, make_step_plugin


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    make_step_plugin(tmp_path / "plugins")
    return make_settings(tmp_path, redis_url, queues={"default": {"concurrency": 8}}, api_token="tok")


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Orchestrator]:
    async with run_app(settings) as running:
        yield running


@pytest.fixture
async def client(app: Orchestrator, redis_url: str) -> AsyncIterator[Client]:
    async with await Client.connect(redis_url) as c:
        yield c


async def test_a_three_step_chain_passes_each_result_to_the_next(client: Client) -> None:
    wid = await client.workflow(
        chain(job("step", {"name": "a"}), job("step", {"name": "b"}), job("step", {"name": "c"}))
    )
    done = await client.wait(wid, timeout_s=30)
    assert done["state"] == "succeeded", done
    assert done["result"] == {"name": "c", "previous": {"name": "b", "previous": {"name": "a", "previous": None}}}
    states = [s["state"] for s in done["steps"]["steps"]]
    assert states == ["succeeded"] * 3
    first = await client.status(done["steps"]["steps"][0]["job_id"])
    assert first is not None and first["workflow"] == wid and first["step"] == "1"


async def test_a_chord_of_50_hands_the_join_the_50_results_in_member_order(client: Client, tmp_path: Path) -> None:
    record = tmp_path / "join.jsonl"
    members = [job("step", {"name": f"m{i}", "sleep": 0.01 * (i % 5)}) for i in range(50)]
    wid = await client.workflow(chain(group(*members), job("step", {"name": "join", "record": str(record)})))
    done = await client.wait(wid, timeout_s=40)
    assert done["state"] == "succeeded", done
    joins = lines(record)
    assert len(joins) == 1
    assert [r["name"] for r in joins[0]["previous"]] == [f"m{i}" for i in range(50)]  # type: ignore[index]


async def test_a_chain_nested_in_a_group_nested_in_a_chain(client: Client) -> None:
    inner = chain(job("step", {"name": "x"}), job("step", {"name": "y"}))
    wid = await client.workflow(
        chain(job("step", {"name": "a"}), group(inner, job("step", {"name": "z"})), job("step", {"name": "end"}))
    )
    done = await client.wait(wid, timeout_s=30)
    assert done["state"] == "succeeded", done
    previous = done["result"]["previous"]
    assert [p["name"] for p in previous] == ["y", "z"]
    assert previous[0]["previous"]["name"] == "x" and previous[0]["previous"]["previous"]["name"] == "a"
    assert previous[1]["previous"]["name"] == "a"


async def test_a_failing_member_fails_the_workflow_cancels_what_waits_and_the_join_never_runs(
    client: Client, tmp_path: Path
) -> None:
    join_file = tmp_path / "join.jsonl"
    members = [job("step", {"name": "bad", "fail": True}), job("step", {"name": "slow", "sleep": 1.0})]
    members += [job("step", {"name": f"m{i}", "sleep": 0.5}) for i in range(10)]  # 8 slots: some wait
    wid = await client.workflow(
        chain(group(*members), job("step", {"name": "join", "record": str(join_file)}), job("step", {"name": "after"}))
    )
    done = await client.wait(wid, timeout_s=30)
    assert done["state"] == "failed"
    assert done["error"].startswith("step 0.0 (step) failed: ") and "failed on purpose" in done["error"]
    join, after = done["steps"]["steps"][1:]
    assert join["state"] == after["state"] == "cancelled" and join.get("job_id")
    assert await client.status(join["job_id"]) is None  # never enqueued
    waiting = [s for s in done["steps"]["steps"][0]["steps"] if s["state"] == "cancelled"]
    assert waiting, "no member was waiting when the first one failed"
    assert all("failed on purpose" in s["error"] for s in waiting)
    # the running members finish; the join still never runs
    slow = done["steps"]["steps"][0]["steps"][1]["job_id"]
    assert (await client.result(slow, timeout_s=20))["state"] == "succeeded"
    assert (await client.workflow_status(wid))["state"] == "failed"
    assert not join_file.exists()


async def test_on_failure_continue_runs_the_join_once_with_error_entries(client: Client, tmp_path: Path) -> None:
    join_file = tmp_path / "join.jsonl"
    members = group(job("step", {"name": "a"}), job("step", {"name": "b", "fail": True}), job("step", {"name": "c"}),
                    on_failure="continue")  # fmt: skip
    wid = await client.workflow(chain(members, job("step", {"name": "join", "record": str(join_file)})))
    done = await client.wait(wid, timeout_s=30)
    assert done["state"] == "succeeded", done
    (joined,) = lines(join_file)
    a, b, c = joined["previous"]  # type: ignore[misc]
    assert a["name"] == "a" and c["name"] == "c"
    assert b["state"] == "failed" and "failed on purpose" in b["error"] and b["job_id"]


async def test_cancel_mid_way_stops_the_running_step_and_nothing_after_it_starts(
    client: Client, tmp_path: Path
) -> None:
    started = tmp_path / "started.jsonl"
    wid = await client.workflow(
        chain(job("step", {"name": "long", "sleep": 30, "record": str(started)}), job("step", {"name": "next"}))
    )
    await wait_for(started.exists)
    assert await client.cancel_workflow(wid) == "cancelled"
    assert await client.cancel_workflow(wid) == "cancelled"  # already ended: says so
    done = await client.wait(wid, timeout_s=10)
    long_id, next_id = (s["job_id"] for s in done["steps"]["steps"])
    assert (await client.result(long_id, timeout_s=15))["state"] == "cancelled"
    assert await client.status(next_id) is None
    assert (await client.workflow_status(wid))["steps"]["steps"][1]["state"] == "cancelled"


async def test_a_step_that_ended_keeps_its_record_and_log_until_the_workflow_ends(
    client: Client, redis_url: str, tmp_path: Path
) -> None:
    started = tmp_path / "started.jsonl"
    wid = await client.workflow(
        chain(job("step", {"name": "first"}), job("step", {"name": "long", "sleep": 30, "record": str(started)}))
    )
    await wait_for(started.exists)
    first_id = (await client.workflow_status(wid))["steps"]["steps"][0]["job_id"]
    async with await Client.connect(redis_url) as other:
        redis = other.store.redis
        # the first step ended, its workflow runs on: neither expires (a TTL of -1 is none)
        assert await redis.pttl(Keys.job(first_id)) == -1
        assert await redis.pttl(Keys.log(first_id)) == -1
        await client.cancel_workflow(wid)
        await client.wait(wid, timeout_s=10)
        assert await redis.pttl(Keys.job(first_id)) > 0  # the workflow ended: the result TTL from now
        assert await redis.pttl(Keys.log(first_id)) > 0


async def test_retrying_the_failed_step_resumes_the_workflow_with_what_ended_meanwhile(
    client: Client, tmp_path: Path
) -> None:
    ready, held = tmp_path / "ready", tmp_path / "held"  # b fails until `ready`; c runs until `held`
    runs = tmp_path / "runs.jsonl"
    wid = await client.workflow(
        chain(
            job("step", {"name": "a", "record": str(runs)}),
            group(
                job("step", {"name": "b", "fail_until": str(ready)}),
                job("step", {"name": "c", "hold_until": str(held)}),
            ),
            job("step", {"name": "join"}),
        )
    )
    failed = await client.wait(wid, timeout_s=30)
    assert failed["state"] == "failed"
    bad, running = (s["job_id"] for s in failed["steps"]["steps"][1]["steps"])
    held.touch()  # c ends after the failure: its end is counted when the workflow resumes
    assert (await client.result(running, timeout_s=20))["state"] == "succeeded"
    ready.touch()
    new_id = await client.retry(bad)
    assert new_id != bad
    done = await client.wait(wid, timeout_s=30)
    assert done["state"] == "succeeded", done
    assert [p["name"] for p in done["result"]["previous"]] == ["b", "c"]
    assert done["result"]["previous"][0]["previous"]["name"] == "a"
    assert done["steps"]["steps"][1]["steps"][0]["job_id"] == new_id
    assert [r["name"] for r in lines(runs)] == ["a"]  # the steps that had succeeded did not run again
    old = await client.status(bad)
    assert old is not None and old["state"] == "failed"


async def test_the_http_api_starts_reads_and_cancels_workflows(app: Orchestrator, client: Client) -> None:
    assert app.http is not None
    base, auth = f"http://127.0.0.1:{app.http.bound_port}/api/workflows", {"Authorization": "Bearer tok"}
    spec = {
        "name": "demo",
        "chain": [
            {"plugin": "step", "params": {"name": "a"}},
            {"group": [{"plugin": "step"}, {"plugin": "step"}]},
            {"plugin": "step"},
        ],
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(base, json=spec, headers=auth) as r:
            assert r.status == 201
            wid = (await r.json())["workflow_id"]
        await client.wait(wid, timeout_s=30)
        async with http.get(f"{base}/{wid}") as r:
            assert r.status == 401  # job data: behind the token
        async with http.get(f"{base}/{wid}", headers=auth) as r:
            shown = await r.json()
        assert shown["state"] == "succeeded" and shown["name"] == "demo" and shown["counts"] == {"succeeded": 4}
        bad = {"chain": [{"plugin": "step"}, {"group": [{"plugin": "step", "params": {"sleep": "long"}}]}]}
        async with http.post(base, json=bad, headers=auth) as r:
            assert r.status == 400 and "step 1.0" in (await r.json())["error"]
        async with http.get(f"{base}/nope", headers=auth) as r:
            assert r.status == 404
        async with http.post(f"{base}/{wid}/cancel", headers=auth) as r:
            assert (await r.json()) == {"workflow_id": wid, "state": "succeeded"}
        async with http.get(f"http://127.0.0.1:{app.http.bound_port}/metrics") as r:
            metrics = await r.text()
    assert 'orchestrator_workflows_ended_total{outcome="succeeded"} 1.0' in metrics
    assert 'orchestrator_workflows_ended_total{outcome="failed"} 0.0' in metrics


async def test_the_cli_runs_a_file_or_stdin_or_a_configured_name_shows_and_cancels(
    app: Orchestrator, settings: Settings, tmp_path: Path
) -> None:
    spec = {"chain": [{"plugin": "step", "params": {"name": "a"}}, {"plugin": "step", "params": {"name": "b"}}]}
    ran = await cli(settings, "workflow", "run", "-", "--wait", "--json", stdin=json.dumps(spec))
    assert ran.rc == 0, ran.err
    assert ran.json()["state"] == "succeeded" and ran.json()["result"]["previous"]["name"] == "a"
    shown = await cli(settings, "workflow", "status", ran.json()["workflow_id"])
    assert shown.rc == 0 and "succeeded" in shown.out and "chain" in shown.out
    named = {"ORCH_WORKFLOWS": json.dumps({"slow": {"plugin": "step", "params": {"sleep": 30}}})}
    started = await cli(settings, "workflow", "run", "slow", **named)
    assert started.rc == 0, started.err
    cancelled = await cli(settings, "workflow", "cancel", started.out.strip(), "--json")
    assert cancelled.json() == {"workflow_id": started.out.strip(), "state": "cancelled"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"chain": [{"plugin": "step"}, {"group": []}]}))
    refused = await cli(settings, "workflow", "run", str(bad))
    assert refused.rc == 2 and "workflow.chain[1].group: expected a non-empty list of steps" in refused.err
    assert (await cli(settings, "workflow", "status", "nope")).rc == 1
    top = await cli(settings, "top", "--once")
    assert top.rc == 0 and "latest workflows" in top.out and ran.json()["workflow_id"] in top.out
