"""Pooled isolation, what crosses the boundary: output per job, results, environment, the lifeline."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.plugins import Launcher, Manifest, PluginInfo, RunResult
from orchestrator.plugins.output import LogCapture
from orchestrator.plugins.pool import ChildPool
from orchestrator.plugins.warm import Job, PooledChild
from tests.plugins.helpers import alive, gone, wait_dead, wait_for_file
from tests.plugins.test_plugin_pool import HANGER

LoadPlugin = Callable[..., Any]

TALKER = """
    import sys, time

    def run(tag, n=200, pause=0.0, **kwargs):
        for i in range(n):
            print(f"{tag} out {i}")
            if i % 10 == 0:
                print(f"{tag} err {i}", file=sys.stderr)
                time.sleep(pause)
        sys.stdout.write(f"{tag} partial")  # no newline: still this job's last line
        return tag
"""


async def run(launcher: Launcher, info: PluginInfo, params: dict[str, Any] | None = None, **kw: Any) -> RunResult:
    assert info.python is not None, info.reason
    context = kw.pop("context", {"job_id": "job-1", "attempt": 1})
    return await launcher.run(info, params or {}, context, python=info.python, timeout_s=kw.pop("timeout_s", 20), **kw)


def expected_lines(tag: str, n: int) -> list[tuple[str, str]]:
    out = [("stdout", f"{tag} out {i}") for i in range(n)] + [("stdout", f"{tag} partial")]
    return out + [("stderr", f"{tag} err {i}") for i in range(0, n, 10)]


def by_stream(lines: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [x for x in lines if x[0] == "stdout"] + [x for x in lines if x[0] == "stderr"]


async def test_output_of_two_concurrent_jobs_goes_to_each_job(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    info = await load_plugin("talker", TALKER, isolation="pooled")
    for round_ in range(3):  # the same two warm children, job after job
        lines: dict[str, list[tuple[str, str]]] = {"a": [], "b": []}
        results = await asyncio.gather(
            *(
                run(
                    launcher,
                    info,
                    {"tag": f"{t}{round_}", "pause": 0.001},
                    on_output=lambda s, x, t=t, lines=lines: lines[t].append((s, x)),
                )
                for t in "ab"
            )
        )
        assert [r.result for r in results] == [f"a{round_}", f"b{round_}"]
        assert results[0].pid != results[1].pid
        for t in "ab":
            assert by_stream(lines[t]) == expected_lines(f"{t}{round_}", 200)
    assert launcher.pool_sizes() == {"talker": 2}


async def test_a_flood_of_output_right_before_the_result_stays_with_its_job(
    launcher: Launcher, load_plugin: LoadPlugin
) -> None:
    """Most of the output is still in the pipes when the result is sent: the end-of-job markers keep it apart."""
    info = await load_plugin("flood", TALKER, isolation="pooled")
    pids = set()
    for i in range(6):
        lines: list[tuple[str, str]] = []
        result = await run(
            launcher, info, {"tag": f"j{i}", "n": 5000}, on_output=lambda s, x, lines=lines: lines.append((s, x))
        )
        assert result.ok and result.result == f"j{i}"
        assert by_stream(lines) == expected_lines(f"j{i}", 5000)
        assert result.log_tail.endswith(f"j{i} partial") or result.log_tail.endswith(f"j{i} err 4990")
        pids.add(result.pid)
    assert len(pids) == 1


async def test_marker_cut_across_reads_is_recognised() -> None:
    pool = ChildPool(
        name="unit",
        manifest=Manifest(name="unit", version="1", entry_point="main.run"),
        cmd=["python"],
        cwd=Path("."),
        env={},
        grace_s=1.0,
        result_cap_bytes=1000,
    )
    read_end, write_end = os.pipe()
    os.close(read_end)
    marker = b"\0orch-sync:0123456789abcdef"
    child = PooledChild(pool, marker, write_end)
    seen: list[str] = []
    capture = LogCapture(1 << 20, 1000, lambda _s, line: seen.append(line))
    child.job = job = Job(capture, asyncio.get_running_loop().create_future())
    for byte in b"one\n\0not a marker\ntwo" + marker:
        child.pipe_data_received(1, bytes([byte]))
    assert seen == ["one", "\0not a marker", "two"] and job.seen == 1
    child.result_line(b"1 0 " + b'{"ok": true, "result": 1}', b"", False)
    assert job.done.done() and job.line == b'{"ok": true, "result": 1}'
    child.close()


async def test_big_result_and_result_too_large(load_plugin: LoadPlugin) -> None:
    code = "import os\ndef run(n=0, **kw):\n    return {'blob': 'x' * n, 'pid': os.getpid()}\n"
    info = await load_plugin("bigpool", code, isolation="pooled")
    async with Launcher(result_cap_bytes=4 << 20) as launcher:
        big = await run(launcher, info, {"n": 3_000_000})
        assert big.ok and len(big.result["blob"]) == 3_000_000
        too_big = await run(launcher, info, {"n": 5_000_000})
        assert not too_big.ok and too_big.error_type == "ResultTooLarge"
        after = await run(launcher, info, {"n": 10})
        assert after.ok and after.result == {"blob": "x" * 10, "pid": big.result["pid"]}


async def test_plugin_closing_its_stdout_gets_its_result_and_a_new_child_next(
    launcher: Launcher, load_plugin: LoadPlugin
) -> None:
    code = """
        import os, sys

        def run(close=False, **kwargs):
            print("bye")
            if close:
                sys.stdout.close()
            return os.getpid()
    """
    info = await load_plugin("closerpool", code, isolation="pooled")
    first = await run(launcher, info, {"close": True})
    assert first.ok and first.log_tail == "bye", first
    assert await gone([first.result], 3.0) == []  # it exits after its result
    second = await run(launcher, info)
    assert second.ok and second.result != first.result and second.log_tail == "bye"


async def test_secrets_stay_out_and_each_job_sees_its_own_env(
    launcher: Launcher, load_plugin: LoadPlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "REDIS_URL": "redis://:pw@h/0",
        "DATABASE_URL": "mysql://u:pw@h/db",
        "ORCH_API_TOKEN": "t",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ES_PASSWORD", "first")
    code = """
        import os

        def run(**kwargs):
            env = dict(os.environ)
            os.environ["LEFT_BY_THE_PLUGIN"] = "x"  # must not reach the next job's environment
            return {"env": env, "pid": os.getpid()}
    """
    info = await load_plugin("envpool", code, isolation="pooled", env=["ES_PASSWORD"])
    first = await run(launcher, info, context={"job_id": "j-1"})
    monkeypatch.setenv("ES_PASSWORD", "second")
    second = await run(launcher, info, context={"job_id": "j-2"})
    third = await run(launcher, info, context={})
    assert first.result["pid"] == second.result["pid"] == third.result["pid"]
    for result in (first, second, third):
        env = result.result["env"]
        assert not {"REDIS_URL", "DATABASE_URL", "ORCH_API_TOKEN", "LEFT_BY_THE_PLUGIN"} & set(env)
        assert env["ORCH_PLUGIN"] == "envpool" and env["PATH"] == os.environ["PATH"]
    assert first.result["env"]["ORCH_JOB_ID"] == "j-1" and first.result["env"]["ES_PASSWORD"] == "first"
    assert second.result["env"]["ORCH_JOB_ID"] == "j-2" and second.result["env"]["ES_PASSWORD"] == "second"
    assert "ORCH_JOB_ID" not in third.result["env"]


async def test_parent_death_kills_warm_children_idle_or_busy(
    load_plugin: LoadPlugin, tmp_path: Path, plugins_dir: Path, venv_dir: Path, repo_root: Path
) -> None:
    await load_plugin("orphaned", HANGER, isolation="pooled")
    marker, idle_file = tmp_path / "pids.json", tmp_path / "idle.json"
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import asyncio, json, sys\n"
        "from pathlib import Path\n"
        "from orchestrator.plugins import Launcher, PluginRegistry, VenvManager\n"
        "async def main():\n"
        "    registry = PluginRegistry(Path(sys.argv[1]), VenvManager(Path(sys.argv[2])))\n"
        "    await registry.load()\n"
        "    info = registry.get('orphaned')\n"
        "    launcher = Launcher()\n"
        "    def go(params):\n"
        "        return launcher.run(info, params, {}, python=info.python, timeout_s=None)\n"
        "    results = await asyncio.gather(go({}), go({}))\n"
        "    Path(sys.argv[4]).write_text(json.dumps({'pids': [r.result for r in results]}))\n"
        "    await go({'marker': sys.argv[3]})\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(driver),
        str(plugins_dir),
        str(venv_dir),
        str(marker),
        str(idle_file),
        env={**os.environ, "PYTHONPATH": str(repo_root)},
    )
    try:
        pids = await wait_for_file(marker)
        idle = [p for p in (await wait_for_file(idle_file))["pids"] if p != pids["pid"]]
        assert len(idle) == 1 and alive(idle[0]) and alive(pids["pid"]) and alive(pids["child"])
        proc.kill()
        await proc.wait()
        assert wait_dead([*idle, pids["pid"], pids["child"]], 3.0) == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_same_behaviour_under_uvloop(tmp_path: Path, make_plugin: Callable[..., Path], envs: Any) -> None:
    """The app runs on uvloop: its pipe and subprocess transports must give the same results."""
    import uvloop

    from orchestrator.plugins import PluginRegistry

    make_plugin("talk", TALKER, isolation="pooled")
    make_plugin("hang", HANGER, isolation="pooled")
    make_plugin("crash", "import os\ndef run(**kw):\n    os.kill(os.getpid(), 11)\n", isolation="pooled")
    marker = tmp_path / "pids.json"

    async def scenario() -> tuple[list[RunResult], list[list[tuple[str, str]]], RunResult, RunResult, dict[str, Any]]:
        registry = PluginRegistry(tmp_path / "plugins", envs)
        await registry.load()
        talk, hang, crash = (registry.get(n) for n in ("talk", "hang", "crash"))
        assert talk is not None and hang is not None and crash is not None
        async with Launcher(kill_grace_s=0.5) as launcher:
            lines: list[list[tuple[str, str]]] = [[], [], []]
            talks = [
                await run(
                    launcher, talk, {"tag": f"t{i}", "n": 2000}, on_output=lambda s, x, i=i: lines[i].append((s, x))
                )
                for i in range(3)
            ]
            timed_out = await run(launcher, hang, {"marker": str(marker)}, timeout_s=0.5)
            crashed = await run(launcher, crash)
        return talks, lines, timed_out, crashed, await wait_for_file(marker)

    talks, lines, timed_out, crashed, pids = uvloop.run(scenario())
    assert [t.result for t in talks] == ["t0", "t1", "t2"] and len({t.pid for t in talks}) == 1
    for i in range(3):
        assert by_stream(lines[i]) == expected_lines(f"t{i}", 2000)
    assert timed_out.timed_out and timed_out.error == "timed out after 0.5s"
    assert crashed.error == "killed by signal SIGSEGV"
    assert wait_dead([pids["pid"], pids["child"], *(t.pid or 0 for t in talks)], 2.0) == []


async def test_first_job_of_every_new_child_gets_its_env(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    """A warm child's start-up (arming the parent-death signal imports os) must not race the first job's env."""
    code = "def run(**kw):\n    import os\n    return [os.getpid(), os.environ.get('ORCH_JOB_ID')]\n"
    info = await load_plugin("fresh", code, isolation="pooled", pool={"max_runs_per_process": 1})
    results = await asyncio.gather(*(run(launcher, info, context={"job_id": f"j{i}"}) for i in range(40)))
    assert [r.result[1] if r.ok else r.error for r in results] == [f"j{i}" for i in range(40)]
    assert len({r.pid for r in results}) == 40


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_warm_child_killed_while_idle_fails_at_most_the_next_job(
    load_plugin_sync: Callable[..., PluginInfo], loop: str
) -> None:
    """The loop may not have seen the exit yet when the next job picks the child: no exception escapes."""
    import signal

    info = load_plugin_sync("victimpool", "import os\ndef run(**kw):\n    return os.getpid()\n", isolation="pooled")

    async def scenario() -> list[RunResult]:
        results = []
        async with Launcher(kill_grace_s=0.5) as launcher:
            for _ in range(5):
                warm = await run(launcher, info)
                os.kill(warm.result, signal.SIGKILL)
                results.append(await run(launcher, info))  # no await in between: the exit is not seen yet
                results.append(await run(launcher, info))
        return results

    if loop == "uvloop":
        import uvloop

        results = uvloop.run(scenario())
    else:
        results = asyncio.run(scenario())
    for right_after, next_one in zip(results[::2], results[1::2], strict=True):
        assert right_after.ok or right_after.error == "killed by signal SIGKILL", right_after
        assert next_one.ok, next_one
