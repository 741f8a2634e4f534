"""Workflows end to end: a real Redis, a real `orchestrator run` (in-process or a child), real
plugin processes. Joins are enqueued by the finish script of what they wait for, exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.app import Orchestrator
from orchestrator.client import Client
from orchestrator.workflows.model import chain, group, job
from tests.jobs.helpers import make_settings, run_app
from tests.workflows.helpers import lines, make_step_plugin


@pytest.fixture
async def app(tmp_path: Path, redis_url: str) -> AsyncIterator[Orchestrator]:
    make_step_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, redis_url, queues={"default": {"concurrency": 8}})
    async with run_app(settings) as running:
        yield running


@pytest.fixture
async def client(app: Orchestrator, redis_url: str) -> AsyncIterator[Client]:
    async with await Client.connect(redis_url) as c:
        yield c


async def test_a_three_step_chain_passes_each_result_to_the_next(client: Client) -> None:
    wid = await client.workflow(chain(job("step", {"name": "a"}), job("step", {"name": "b"}), job("step", {"name": "c"})))
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
    wid = await client.workflow(chain(job("step", {"name": "a"}), group(inner, job("step", {"name": "z"})), job("step", {"name": "end"})))
    done = await client.wait(wid, timeout_s=30)
    assert done["state"] == "succeeded", done
    previous = done["result"]["previous"]
    assert [p["name"] for p in previous] == ["y", "z"]
    assert previous[0]["previous"]["name"] == "x" and previous[0]["previous"]["previous"]["name"] == "a"
    assert previous[1]["previous"]["name"] == "a"
