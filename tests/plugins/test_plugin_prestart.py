"""Prestart in process mode: a busy plugin's next run finds a child already past interpreter start-up.

The child still runs one job and exits; the job's own environment reaches it in the request.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.plugins import Launcher, PluginInfo, RunResult
from tests.plugins.helpers import children_of, gone

LoadPlugin = Callable[..., Any]

ENV_AT_IMPORT = """
    import os
    AT_IMPORT = os.environ.get("ORCH_JOB_ID")

    def run(**kwargs):
        return {
            "pid": os.getpid(),
            "job": os.environ.get("ORCH_JOB_ID"),
            "at_import": AT_IMPORT,
            "hosts": os.environ.get("ES_HOSTS"),
            "secrets": sorted({"REDIS_URL", "DATABASE_URL", "ORCH_API_TOKEN"} & set(os.environ)),
        }
"""


async def run(launcher: Launcher, info: PluginInfo, context: dict[str, Any]) -> RunResult:
    assert info.python is not None, info.reason
    return await launcher.run(info, {}, context, python=info.python, timeout_s=20)


async def new_child(known: set[int], timeout_s: float = 5.0) -> int:
    """The pid of a child of this process started since `known` was taken (the spare)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fresh = children_of(os.getpid()) - known
        if fresh:
            return fresh.pop()
        await asyncio.sleep(0.02)
    raise AssertionError("no prestarted child appeared")


async def test_prestarted_child_runs_the_next_job_with_that_jobs_env(
    load_plugin: LoadPlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ES_HOSTS", "http://one")
    info = await load_plugin("pre", ENV_AT_IMPORT, env=["ES_HOSTS"])
    async with Launcher(kill_grace_s=0.5, prestart=True) as launcher:
        before = children_of(os.getpid())
        first = await run(launcher, info, {"job_id": "j1"})
        assert children_of(os.getpid()) == before  # one run is not busy: no spare
        second = await run(launcher, info, {"job_id": "j2"})  # busy now: a spare starts
        spare = await new_child(before)
        assert spare not in {first.pid, second.pid}
        await _wait(lambda: launcher.spares_ready() == 1)  # past start-up, waiting for its request
        monkeypatch.setenv("ES_HOSTS", "http://two")
        for name in ("REDIS_URL", "DATABASE_URL", "ORCH_API_TOKEN"):
            monkeypatch.setenv(name, "secret")
        third = await run(launcher, info, {"job_id": "j3"})
        assert third.ok, third
        assert third.result == {"pid": spare, "job": "j3", "at_import": "j3", "hosts": "http://two", "secrets": []}
        # the spare ran one job only: the next run is in a newer spare, without a job id of its own
        fourth = await run(launcher, info, {})
        assert fourth.ok and fourth.pid not in {first.pid, second.pid, third.pid}
        assert fourth.result["job"] is None and fourth.result["at_import"] is None
        assert all(r.ok for r in (first, second)) and [first.result["job"], second.result["job"]] == ["j1", "j2"]
        spares = children_of(os.getpid()) - before
        assert len(spares) == 1  # one spare per busy plugin, waiting for the fifth run
    assert children_of(os.getpid()) - before == set()  # aclose stopped and reaped it
    assert await gone(list(spares), 1.0) == []


async def test_prestarted_run_saves_the_start_up(load_plugin: LoadPlugin) -> None:
    """Each run of a busy plugin goes to the child started (and past interpreter start-up) before
    its request arrived. How much time that saves is measured by bench/bench_launcher.py, not here:
    a timing comparison in a test fails on a loaded machine."""
    info = await load_plugin("quick", "def run(**kw):\n    return 1\n")
    baseline = children_of(os.getpid())
    async with Launcher(prestart=True) as launcher:
        await run(launcher, info, {})
        await run(launcher, info, {})  # busy now: a spare starts
        used: set[int] = set()
        for _ in range(7):
            spare = await new_child(baseline | used)  # started, waiting for its request
            await _wait(lambda: launcher.spares_ready() == 1)  # connected: the next run takes it
            result = await run(launcher, info, {})
            assert result.ok and result.pid == spare
            used.add(spare)


async def _wait(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_spare_stops_when_the_plugin_goes_quiet(load_plugin: LoadPlugin) -> None:
    info = await load_plugin("quiet", "def run(**kw):\n    return 1\n")
    async with Launcher(prestart=True, spare_idle_s=0.3) as launcher:
        before = children_of(os.getpid())
        await run(launcher, info, {})
        await run(launcher, info, {})
        spare = await new_child(before)
        assert await gone([spare], 3.0) == []
        assert children_of(os.getpid()) == before


async def test_no_prestart_unless_asked(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    info = await load_plugin("plainproc", "def run(**kw):\n    return 1\n")
    before = children_of(os.getpid())
    for _ in range(3):
        assert (await run(launcher, info, {})).ok
    await asyncio.sleep(0.2)
    assert children_of(os.getpid()) == before


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_aclose_while_a_spare_is_starting_leaves_no_child(
    load_plugin_sync: Callable[..., PluginInfo], loop: str
) -> None:
    """aclose cancels the task starting a spare at any point of its start; the half-started child is reaped."""
    info = load_plugin_sync("spawny", "def run(**kw):\n    return 1\n")

    async def scenario() -> list[set[int]]:
        leftovers = []
        for steps in range(14):  # close after 0, 1, ... loop iterations of the spare's start
            before = children_of(os.getpid())
            launcher = Launcher(prestart=True)
            await run(launcher, info, {})
            second = asyncio.create_task(run(launcher, info, {}))  # busy: it starts a spare
            for _ in range(steps + 1):
                await asyncio.sleep(0)
            await launcher.aclose()
            assert (await second).ok
            leftovers.append(children_of(os.getpid()) - before)
        return leftovers

    if loop == "uvloop":
        import uvloop

        leftovers = uvloop.run(scenario())
    else:
        leftovers = asyncio.run(scenario())
    assert leftovers == [set()] * 14
