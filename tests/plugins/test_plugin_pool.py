"""Pooled isolation, lifecycle: warm children reused, recycled, replaced after a crash, timeout or cancel.

Real child processes, no mocks: every test watches pids from the outside.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.plugins import Launcher, PluginInfo, PluginRegistry, RunResult
from tests.plugins.helpers import alive, children_of, gone, group_members, wait_for_file

LoadPlugin = Callable[..., Any]

COUNTER = """
    import os
    RUNS = 0

    def run(fail=False, **kwargs):
        global RUNS
        RUNS += 1
        if fail:
            raise ValueError(f"failing run {RUNS}")
        return {"pid": os.getpid(), "runs": RUNS}
"""

# Returns its pid; with a marker, starts a grandchild, records both pids and hangs.
HANGER = """
    import json, os, signal, subprocess, time

    def run(marker="", ignore_term=False, **kwargs):
        if not marker:
            return os.getpid()
        if ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen(["sleep", "300"])
        with open(marker + ".tmp", "w") as fh:
            json.dump({"pid": os.getpid(), "child": child.pid}, fh)
        os.rename(marker + ".tmp", marker)
        time.sleep(300)
"""


async def run(launcher: Launcher, info: PluginInfo, params: dict[str, Any] | None = None, **kw: Any) -> RunResult:
    assert info.python is not None, info.reason
    context = kw.pop("context", {"job_id": "job-1", "attempt": 1})
    return await launcher.run(info, params or {}, context, python=info.python, timeout_s=kw.pop("timeout_s", 20), **kw)


async def test_warm_child_is_reused_keeps_module_state_and_survives_exceptions(
    launcher: Launcher, load_plugin: LoadPlugin
) -> None:
    info = await load_plugin("counter", COUNTER, isolation="pooled")
    first = await run(launcher, info)
    second = await run(launcher, info)
    boom = await run(launcher, info, {"fail": True})
    third = await run(launcher, info)
    assert first.ok and second.ok and third.ok, (first, second, third)
    pid = first.result["pid"]
    assert first.pid == pid and first.result["runs"] == 1 and first.exit_code == 0
    assert second.result == {"pid": pid, "runs": 2}
    assert not boom.ok and boom.error == "ValueError: failing run 3" and boom.pid == pid
    assert boom.exit_code == 1 and boom.traceback is not None and "main.py" in boom.traceback
    assert third.result == {"pid": pid, "runs": 4}  # the exception did not cost the child
    assert launcher.pool_sizes() == {"counter": 1}


async def test_recycled_after_max_runs(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    info = await load_plugin("recycled", COUNTER, isolation="pooled", pool={"max_runs_per_process": 2})
    results = [await run(launcher, info) for _ in range(5)]
    assert all(r.ok for r in results), results
    pids = [r.result["pid"] for r in results]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    assert [r.result["runs"] for r in results] == [1, 2, 1, 2, 1]
    assert await gone([pids[0], pids[2]], 3.0) == []


async def test_recycled_when_memory_passes_the_limit(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    code = """
        import os
        KEEP = []

        def run(mb=0, **kwargs):
            KEEP.append(b"\\x01" * (mb << 20))  # written, so resident
            return {"pid": os.getpid(), "held": len(KEEP)}
    """
    info = await load_plugin("hog", code, isolation="pooled", pool={"max_memory_mb": 80})
    small = [await run(launcher, info, {"mb": 1}) for _ in range(3)]
    assert {r.result["pid"] for r in small} == {small[0].pid}
    big = await run(launcher, info, {"mb": 120})
    assert big.ok and big.result == {"pid": small[0].pid, "held": 4}  # the run itself completes
    after = await run(launcher, info)
    assert after.ok and after.result["held"] == 1 and after.result["pid"] != big.pid
    assert await gone([big.pid or 0], 3.0) == []


@pytest.mark.parametrize(
    ("how", "error"), [("exit", "exited with code 7 without a result"), ("segv", "killed by signal SIGSEGV")]
)
async def test_crash_fails_only_its_job_and_the_next_runs_in_a_new_child(
    launcher: Launcher, load_plugin: LoadPlugin, how: str, error: str
) -> None:
    code = """
        import os, signal, time

        def run(how="", sleep=0.0, **kwargs):
            time.sleep(sleep)
            if how == "exit":
                os._exit(7)
            if how == "segv":
                os.kill(os.getpid(), signal.SIGSEGV)
            return os.getpid()
    """
    info = await load_plugin("crasher", code, isolation="pooled")
    warm = await run(launcher, info)
    # a slow job in a second child runs through the crash untouched
    slow, crash = await asyncio.gather(run(launcher, info, {"sleep": 0.5}), run(launcher, info, {"how": how}))
    assert not crash.ok and crash.error == error, crash
    assert slow.ok and slow.result != crash.pid and warm.ok
    assert await gone([crash.pid or 0], 2.0) == []
    after = [await run(launcher, info) for _ in range(2)]
    assert all(r.ok for r in after)
    assert crash.pid not in {r.result for r in after}


async def test_timeout_kills_the_childs_group_and_replaces_it(
    launcher: Launcher, load_plugin: LoadPlugin, tmp_path: Path
) -> None:
    info = await load_plugin("hang", HANGER, isolation="pooled")
    warm = await run(launcher, info)
    marker = tmp_path / "pids.json"
    started = time.monotonic()
    task = asyncio.create_task(run(launcher, info, {"marker": str(marker)}, timeout_s=1.0))
    pids = await wait_for_file(marker)
    assert pids["pid"] == warm.result  # it ran in the warm child
    assert alive(pids["pid"]) and alive(pids["child"])
    result = await task
    assert result.timed_out and result.error == "timed out after 1.0s" and result.pid == warm.result
    assert time.monotonic() - started < 1.0 + launcher.kill_grace_s + 1.5
    assert await gone([pids["pid"], pids["child"]], 2.0) == []
    after = await run(launcher, info)
    assert after.ok and after.result != warm.result


async def test_sigterm_ignored_then_sigkill_after_grace(load_plugin: LoadPlugin, tmp_path: Path) -> None:
    info = await load_plugin("stubborn", HANGER, isolation="pooled")
    marker = tmp_path / "pids.json"
    async with Launcher(kill_grace_s=0.5) as launcher:
        started = time.monotonic()
        result = await run(launcher, info, {"marker": str(marker), "ignore_term": True}, timeout_s=0.5)
        elapsed = time.monotonic() - started
    pids = await wait_for_file(marker)
    assert result.timed_out and result.exit_code == -9
    assert 1.0 <= elapsed < 3.5  # child start-up, the timeout, then the grace before SIGKILL
    assert await gone([pids["pid"], pids["child"]], 2.0) == []


async def test_cancel_kills_the_childs_group(launcher: Launcher, load_plugin: LoadPlugin, tmp_path: Path) -> None:
    info = await load_plugin("victim", HANGER, isolation="pooled")
    marker = tmp_path / "pids.json"
    task = asyncio.create_task(run(launcher, info, {"marker": str(marker)}, timeout_s=None))
    pids = await wait_for_file(marker)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone([pids["pid"], pids["child"]], 2.0) == []
    after = await run(launcher, info)
    assert after.ok and after.result != pids["pid"]


async def test_grows_with_concurrent_jobs_and_shrinks_when_idle(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    code = "import os, time\ndef run(sleep=0.3, **kw):\n    time.sleep(sleep)\n    return os.getpid()\n"
    info = await load_plugin("elastic", code, isolation="pooled", pool={"idle_s": 0.5})
    results = await asyncio.gather(*(run(launcher, info) for _ in range(3)))
    pids = {r.result for r in results}
    assert len(pids) == 3 and launcher.pool_sizes() == {"elastic": 3}
    quick = await run(launcher, info, {"sleep": 0})
    assert quick.result in pids  # an idle warm child, no new one
    assert await gone(list(pids), 3.0) == []  # all idle longer than idle_s
    assert launcher.pool_sizes() == {"elastic": 0}
    again = await run(launcher, info, {"sleep": 0})
    assert again.ok and again.result not in pids


async def test_size_caps_the_children_and_jobs_wait(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    code = "import os, time\ndef run(**kw):\n    time.sleep(0.2)\n    return os.getpid()\n"
    info = await load_plugin("single", code, isolation="pooled", pool={"size": 1})
    started = time.monotonic()
    results = await asyncio.gather(*(run(launcher, info) for _ in range(3)))
    assert len({r.result for r in results}) == 1
    assert time.monotonic() - started >= 0.6


async def test_reload_replaces_the_warm_children(
    launcher: Launcher, make_plugin: Any, registry: PluginRegistry
) -> None:
    make_plugin("reloaded", "import os\ndef run(**kw):\n    return ['v1', os.getpid()]\n", isolation="pooled")
    await registry.load()
    info = registry.get("reloaded")
    assert info is not None
    first = await run(launcher, info)
    make_plugin("reloaded", "import os\ndef run(**kw):\n    return ['v2.0', os.getpid()]\n", isolation="pooled")
    await registry.reload("reloaded")
    info = registry.get("reloaded")
    assert info is not None
    second = await run(launcher, info)
    assert first.result[0] == "v1" and second.result[0] == "v2.0" and first.pid != second.pid
    assert await gone([first.pid or 0], 3.0) == []


async def test_async_entry_point_keeps_its_event_loop(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    code = """
        import asyncio
        LOOP = None

        async def run(**kwargs):
            global LOOP
            same, LOOP = LOOP is asyncio.get_running_loop(), asyncio.get_running_loop()
            await asyncio.sleep(0.01)
            return same
    """
    info = await load_plugin("asyncpool", code, isolation="pooled")
    results = [await run(launcher, info) for _ in range(3)]
    assert [r.result for r in results] == [False, True, True], results


async def test_cpu_limit_is_per_run_in_a_warm_child(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    code = """
        import os, time

        def run(spin=0.0, **kwargs):
            end = time.process_time() + spin
            while spin < 0 or time.process_time() < end:
                pass
            return os.getpid()
    """
    info = await load_plugin("spinpool", code, isolation="pooled", limits={"cpu_seconds": 1})
    runs = [await run(launcher, info, {"spin": 0.7}) for _ in range(2)]  # 1.4 s in all: each run gets its own second
    assert all(r.ok for r in runs) and runs[0].result == runs[1].result, runs
    forever = await run(launcher, info, {"spin": -1}, timeout_s=10)
    assert not forever.ok and not forever.timed_out
    assert forever.error == "killed by signal SIGXCPU (cpu_seconds limit)"


async def test_aclose_leaves_no_child_behind(load_plugin: LoadPlugin, tmp_path: Path) -> None:
    code = """
        import os, subprocess, time

        def run(sleep=0.0, **kwargs):
            time.sleep(sleep)
            child = subprocess.Popen(["sleep", "300"])  # left running in the group
            return [os.getpid(), child.pid]
    """
    info = await load_plugin("leaver", code, isolation="pooled")
    marker = tmp_path / "pids.json"
    hang = await load_plugin("busy", HANGER, isolation="pooled")
    launcher = Launcher(kill_grace_s=0.5)
    results = await asyncio.gather(*(run(launcher, info, {"sleep": 0.2}) for _ in range(2)))
    busy = asyncio.create_task(run(launcher, hang, {"marker": str(marker)}, timeout_s=None))
    hung = await wait_for_file(marker)
    pids = {p for r in results for p in r.result} | {hung["pid"], hung["child"]}
    children = {r.result[0] for r in results} | {hung["pid"]}
    assert len(children) == 3 and children <= children_of(os.getpid())
    await launcher.aclose()
    assert not children & children_of(os.getpid())  # reaped, not only signalled
    stopped = await busy  # a job still running when the launcher closes fails, it does not hang
    assert not stopped.ok and stopped.error == "killed by signal SIGTERM"
    assert await gone(list(pids), 2.0) == []
    assert group_members(children) == set()
    with pytest.raises(Exception, match="the launcher is closed"):
        await run(launcher, info)
