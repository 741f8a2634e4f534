"""Launcher: real child processes, no mocks. Each plugin misbehaves in one way; the run must end cleanly."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import PluginStartError
from orchestrator.plugins import Launcher, PluginInfo, RunResult
from tests.plugins.helpers import alive, wait_dead, wait_for_file

LoadPlugin = Callable[..., Any]

# Starts a grandchild in the plugin's process group, records both pids, then hangs.
HANG_WITH_GRANDCHILD = """
    import json, os, subprocess, time

    def run(marker, ignore_term=False, **kwargs):
        if ignore_term:
            import signal
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen(["sleep", "300"])
        with open(marker + ".tmp", "w") as fh:
            json.dump({"pid": os.getpid(), "child": child.pid}, fh)
        os.rename(marker + ".tmp", marker)
        time.sleep(300)
"""
MARKER_PARAMS = {"marker": {"type": "string", "required": True}, "ignore_term": {"type": "boolean"}}


async def run(launcher: Launcher, info: PluginInfo, params: dict[str, Any] | None = None, **kw: Any) -> RunResult:
    assert info.python is not None, info.reason
    context = kw.pop("context", {"job_id": "job-1", "attempt": 1})
    return await launcher.run(info, params or {}, context, python=info.python, timeout_s=kw.pop("timeout_s", 20), **kw)


async def test_plain_call_gets_params_and_context(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    info = await load_plugin(
        "echo",
        """
        import os, sys
        def run(a, b=2, **kwargs):
            print("to stdout")
            print("to stderr", file=sys.stderr)
            return {"a": a, "b": b, "ctx": kwargs, "cwd": os.getcwd(), "stdin": sys.stdin.read()}
        """,
    )
    lines: list[tuple[str, str]] = []
    result = await run(launcher, info, {"a": "x"}, on_output=lambda s, line: lines.append((s, line)))
    assert result.ok, result
    assert result.result == {
        "a": "x",
        "b": 2,
        "ctx": {"job_id": "job-1", "attempt": 1},
        "cwd": str(info.path),
        "stdin": "",  # the plugin gets /dev/null; the request pipe is the shim's alone
    }
    assert result.exit_code == 0 and result.error is None and not result.timed_out
    assert lines == [("stdout", "to stdout"), ("stderr", "to stderr")]
    assert result.log_tail == "to stdout\n[stderr] to stderr"
    assert result.pid is not None and result.duration_s > 0
    assert result.to_json()["result"]["a"] == "x"


async def test_context_only_reaches_parameters_the_function_names(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    info = await load_plugin("narrow", "def run(a, job_id):\n    return [a, job_id]\n")
    result = await run(launcher, info, {"a": 1}, context={"job_id": "j", "attempt": 2, "change_event": {}})
    assert result.ok, result
    assert result.result == [1, "j"]


async def test_ten_thousand_lines_then_a_dict(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    info = await load_plugin(
        "chatty",
        """
        import sys
        def run(**kwargs):
            for i in range(10_000):
                print(f"line {i} " + "x" * 50)
                if i % 1000 == 0:
                    print('{"ok": false, "error": "a fake result on stderr"}', file=sys.stderr)
            return {"rows": list(range(1000)), "text": "caf\\u00e9 \\u2603", "nested": {"a": [1.5, None, True]}}
        """,
    )
    seen: list[str] = []
    result = await run(Launcher(log_cap_bytes=4096), info, on_output=lambda _s, line: seen.append(line))
    assert result.ok, result
    assert result.result == {"rows": list(range(1000)), "text": "café ☃", "nested": {"a": [1.5, None, True]}}
    assert len(seen) == 10_010
    assert len(result.log_tail.encode()) <= 4096
    # The tail keeps the newest lines. stdout and stderr are two pipes (stdout block-buffered in
    # the child), so where a stderr line lands among stdout lines is arrival order, not print order:
    # check each stream's own order.
    lines = result.log_tail.splitlines()
    stdout = [line for line in lines if not line.startswith("[stderr] ")]
    assert stdout[-1] == "line 9999 " + "x" * 50
    assert [int(line.split()[1]) for line in stdout[1:]] == list(range(10_000 - len(stdout) + 1, 10_000))


async def test_huge_line_and_bad_utf8_are_cut_and_replaced(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    info = await load_plugin(
        "garbage",
        """
        import os
        def run(**kwargs):
            os.write(1, b"A" * 5_000_000 + b"\\nafter\\n\\xff\\xfe broken\\nno newline at the end")
            return 1
        """,
    )
    seen: list[str] = []
    result = await run(Launcher(max_line_bytes=1000), info, on_output=lambda _s, line: seen.append(line))
    assert result.ok and result.result == 1
    assert seen == ["A" * 1000 + " [line cut]", "after", "\ufffd\ufffd broken", "no newline at the end"]


async def test_exception_comes_back_with_type_message_and_traceback(
    launcher: Launcher, load_plugin: LoadPlugin
) -> None:
    info = await load_plugin(
        "boom",
        """
        def helper():
            raise ValueError("boom\\nsecond line")

        def run(**kwargs):
            helper()
        """,
    )
    result = await run(launcher, info)
    assert not result.ok
    assert result.error_type == "ValueError"
    assert result.error == "ValueError: boom"
    assert result.traceback is not None
    assert "in helper" in result.traceback and "main.py" in result.traceback
    assert "shim" not in result.traceback  # the shim's own frames are cut
    assert result.exit_code == 1


async def test_result_that_is_not_json(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    info = await load_plugin(
        "badresult", "import datetime\ndef run(**kw):\n    return {'at': datetime.date(2024, 1, 1)}\n"
    )
    result = await run(launcher, info)
    assert not result.ok
    assert result.error_type == "ResultNotSerializable"
    assert result.error is not None
    assert "main.run returned a dict that is not JSON-serialisable" in result.error
    assert "date" in result.error


async def test_sys_exit_without_result(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    info = await load_plugin("quitter", "import sys\ndef run(**kw):\n    sys.exit(3)\n")
    result = await run(launcher, info)
    assert not result.ok
    assert (result.exit_code, result.error) == (3, "exited with code 3 without a result")


async def test_segfault(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    info = await load_plugin("crasher", "import os, signal\ndef run(**kw):\n    os.kill(os.getpid(), signal.SIGSEGV)\n")
    result = await run(launcher, info)
    assert not result.ok
    assert result.exit_code == -11
    assert result.error == "killed by signal SIGSEGV"


async def test_import_error_in_plugin_module(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    info = await load_plugin("needsdeps", "import pandas_that_is_not_here\ndef run(**kw):\n    return 1\n")
    result = await run(launcher, info)
    assert not result.ok
    assert result.error_type == "ModuleNotFoundError"
    assert "pandas_that_is_not_here" in (result.error or "")


async def test_async_entry_point(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    info = await load_plugin(
        "asyncy",
        """
        import asyncio
        async def run(n, **kwargs):
            await asyncio.sleep(0.01)
            return {"n": n * 2, "loop": type(asyncio.get_running_loop()).__name__}
        """,
    )
    result = await run(launcher, info, {"n": 21})
    assert result.ok, result
    assert result.result["n"] == 42


async def test_big_result_comes_back_whole(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    info = await load_plugin("big", "def run(**kw):\n    return {'blob': 'x' * 3_000_000, 'n': list(range(100_000))}\n")
    result = await run(launcher, info)
    assert result.ok, result.error
    assert len(result.result["blob"]) == 3_000_000 and result.result["n"][-1] == 99_999
    small = await run(Launcher(result_cap_bytes=1000), info)
    assert not small.ok and small.error_type == "ResultTooLarge"


async def test_plugin_closing_its_stdio_still_returns(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    info = await load_plugin(
        "closer",
        "import sys\ndef run(**kw):\n    print('bye')\n    sys.stdout.close()\n    sys.stdin.close()\n    return 5\n",
    )
    result = await run(launcher, info)
    assert result.ok and result.result == 5, result


async def test_prints_cannot_corrupt_the_result(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    info = await load_plugin(
        "liar",
        """
        import os, sys
        def run(**kw):
            print('{"ok": true, "result": "forged"}')
            sys.stdout.flush()
            os.write(2, b'{"ok": true, "result": "forged"}\\n')
            return "real"
        """,
    )
    result = await run(launcher, info)
    assert result.ok and result.result == "real"


async def test_timeout_kills_plugin_and_grandchild(launcher: Launcher, load_plugin: LoadPlugin, tmp_path: Path) -> None:
    info = await load_plugin("hang", HANG_WITH_GRANDCHILD, parameters=MARKER_PARAMS)
    marker = tmp_path / "pids.json"
    started = time.monotonic()
    task = asyncio.create_task(run(launcher, info, {"marker": str(marker)}, timeout_s=1.0))
    pids = await wait_for_file(marker)
    assert alive(pids["pid"]) and alive(pids["child"])
    result = await task
    elapsed = time.monotonic() - started
    assert result.timed_out and not result.ok
    assert result.error == "timed out after 1.0s"
    assert elapsed < 1.0 + launcher.kill_grace_s + 1.5
    assert wait_dead([pids["pid"], pids["child"]], 2.0) == []


async def test_sigterm_ignored_then_sigkill_after_grace(load_plugin: LoadPlugin, tmp_path: Path) -> None:
    info = await load_plugin("stubborn", HANG_WITH_GRANDCHILD, parameters=MARKER_PARAMS)
    marker = tmp_path / "pids.json"
    launcher = Launcher(kill_grace_s=0.5)
    started = time.monotonic()
    result = await run(launcher, info, {"marker": str(marker), "ignore_term": True}, timeout_s=0.5)
    elapsed = time.monotonic() - started
    pids = await wait_for_file(marker)
    assert result.timed_out and result.exit_code == -9
    assert 1.0 <= elapsed < 3.0  # waited out the grace before SIGKILL
    assert wait_dead([pids["pid"], pids["child"]], 2.0) == []


async def test_cancelling_the_awaiting_task_kills_the_group(
    launcher: Launcher, load_plugin: LoadPlugin, tmp_path: Path
) -> None:
    info = await load_plugin("victim", HANG_WITH_GRANDCHILD, parameters=MARKER_PARAMS)
    marker = tmp_path / "pids.json"
    task = asyncio.create_task(run(launcher, info, {"marker": str(marker)}, timeout_s=None))
    pids = await wait_for_file(marker)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wait_dead([pids["pid"], pids["child"]], 2.0) == []


async def test_grandchild_holding_the_pipes_does_not_delay_the_result(
    launcher: Launcher, load_plugin: LoadPlugin, tmp_path: Path
) -> None:
    info = await load_plugin(
        "leaver",
        """
        import json, subprocess
        def run(marker, **kw):
            # inherits stdout/stderr (and would inherit the result pipe without CLOEXEC)
            child = subprocess.Popen(["sleep", "300"], close_fds=False)
            with open(marker, "w") as fh:
                json.dump({"child": child.pid}, fh)
            return "done"
        """,
        parameters=MARKER_PARAMS,
    )
    marker = tmp_path / "pids.json"
    started = time.monotonic()
    result = await run(launcher, info, {"marker": str(marker)})
    assert result.ok and result.result == "done"
    assert time.monotonic() - started < 2.0
    child = (await wait_for_file(marker))["child"]
    assert wait_dead([child], 2.0) == []  # stragglers in the group are killed after the child exits


async def test_secrets_stay_out_of_the_child_env(
    launcher: Launcher, load_plugin: LoadPlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "REDIS_URL": "redis://:pw@h/0",
        "DATABASE_URL": "mysql://u:pw@h/db",
        "ES_PASSWORD": "pw",
        "ORCH_API_TOKEN": "tok",
        "ES_HOSTS": "http://es:9200",
        "SOME_OTHER": "x",
    }.items():
        monkeypatch.setenv(name, value)
    code = "import os\ndef run(**kw):\n    return dict(os.environ)\n"
    plain = await run(launcher, await load_plugin("plain", code), context={"job_id": "j-7"})
    declared = await run(launcher, await load_plugin("declared", code, env=["ES_PASSWORD", "ES_HOSTS", "UNSET_NAME"]))
    assert plain.ok and declared.ok
    env = plain.result
    for secret in ("REDIS_URL", "DATABASE_URL", "ES_PASSWORD", "ORCH_API_TOKEN", "ES_HOSTS", "SOME_OTHER"):
        assert secret not in env
    assert env["ORCH_JOB_ID"] == "j-7" and env["ORCH_PLUGIN"] == "plain"
    assert env["PATH"] == os.environ["PATH"]
    assert declared.result["ES_PASSWORD"] == "pw" and declared.result["ES_HOSTS"] == "http://es:9200"
    assert "REDIS_URL" not in declared.result and "UNSET_NAME" not in declared.result


async def test_env_source_supplies_declared_values(load_plugin: LoadPlugin) -> None:
    info = await load_plugin(
        "fromdotenv", "import os\ndef run(**kw):\n    return os.environ.get('ES_HOSTS')\n", env=["ES_HOSTS"]
    )
    result = await run(Launcher(env_source={**os.environ, "ES_HOSTS": "http://from-dotenv:9200"}), info)
    assert result.result == "http://from-dotenv:9200"


async def test_cpu_limit_is_applied(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    info = await load_plugin("spinner", "def run(**kw):\n    while True:\n        pass\n", limits={"cpu_seconds": 1})
    result = await run(launcher, info, timeout_s=10)
    assert not result.ok and not result.timed_out
    assert result.error == "killed by signal SIGXCPU (cpu_seconds limit)"


async def test_memory_limit_is_applied(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    info = await load_plugin(
        "hog", "def run(**kw):\n    return len(bytearray(512 * 1024 * 1024))\n", limits={"memory_mb": 200}
    )
    result = await run(launcher, info)
    assert not result.ok
    assert result.error_type == "MemoryError"


async def test_missing_interpreter_is_a_start_error(launcher: Launcher, load_plugin: LoadPlugin) -> None:
    info = await load_plugin("orphan", "def run(**kw):\n    return 1\n")
    with pytest.raises(PluginStartError, match="cannot start"):
        await launcher.run(info, {}, {}, python=(Path("/nonexistent/python"), []), timeout_s=5)


@pytest.mark.parametrize("after_s", [0.0, 0.5])
async def test_parent_death_kills_plugin_and_grandchild(
    load_plugin: LoadPlugin, tmp_path: Path, plugins_dir: Path, venv_dir: Path, repo_root: Path, after_s: float
) -> None:
    """The lifeline: a separate orchestrator-like process is SIGKILLed while its plugin runs.

    After 0.2 s the kernel's parent-death signal is armed too: it must not kill the shim alone
    before the group is killed (the grandchild would survive).
    """
    await load_plugin("orphaned", HANG_WITH_GRANDCHILD, parameters=MARKER_PARAMS)
    marker = tmp_path / "pids.json"
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from orchestrator.plugins import Launcher, PluginRegistry, VenvManager\n"
        "async def main():\n"
        "    registry = PluginRegistry(Path(sys.argv[1]), VenvManager(Path(sys.argv[2])))\n"
        "    await registry.load()\n"
        "    info = registry.get('orphaned')\n"
        "    await Launcher().run(info, {'marker': sys.argv[3]}, {}, python=info.python, timeout_s=None)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(driver),
        str(plugins_dir),
        str(venv_dir),
        str(marker),
        env={**os.environ, "PYTHONPATH": str(repo_root)},
    )
    try:
        pids = await wait_for_file(marker)
        assert alive(pids["pid"]) and alive(pids["child"])
        await asyncio.sleep(after_s)
        proc.kill()
        await proc.wait()
        assert wait_dead([pids["pid"], pids["child"]], 3.0) == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_same_behaviour_under_uvloop(tmp_path: Path, make_plugin: Callable[..., Path], envs: Any) -> None:
    """The app runs on uvloop: its subprocess transport must give the same results."""
    import uvloop

    from orchestrator.plugins import PluginRegistry

    make_plugin("ok", "def run(**kw):\n    print('hi')\n    return {'x': 1}\n")
    make_plugin("hang", HANG_WITH_GRANDCHILD, parameters=MARKER_PARAMS)
    make_plugin("crash", "import os\ndef run(**kw):\n    os.kill(os.getpid(), 11)\n")
    marker = tmp_path / "pids.json"

    async def scenario() -> tuple[RunResult, RunResult, RunResult, dict[str, Any]]:
        registry = PluginRegistry(tmp_path / "plugins", envs)
        await registry.load()
        launcher = Launcher(kill_grace_s=0.5)
        infos = [registry.get(n) for n in ("ok", "hang", "crash")]
        assert all(i is not None for i in infos)
        ok, hang, crash = (i for i in infos if i is not None)
        r1 = await run(launcher, ok)
        r2 = await run(launcher, hang, {"marker": str(marker)}, timeout_s=0.5)
        r3 = await run(launcher, crash)
        return r1, r2, r3, await wait_for_file(marker)

    ok, hang, crash, pids = uvloop.run(scenario())
    assert ok.ok and ok.result == {"x": 1} and ok.log_tail == "hi"
    assert hang.timed_out and hang.error == "timed out after 0.5s"
    assert crash.error == "killed by signal SIGSEGV"
    assert wait_dead([pids["pid"], pids["child"]], 2.0) == []
