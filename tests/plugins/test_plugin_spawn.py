"""posix_spawn start (plugins/spawn.py): what fork gave for free still holds, and the fallback still runs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.plugins import Launcher, spawn
from orchestrator.plugins.output import LogCapture
from orchestrator.plugins.process import ChildProtocol

LoadPlugin = Callable[..., Any]

# Reports what the child was started with: session, group, cwd, and every descriptor it holds.
INSPECT = """
    import os

    def links():
        out = {}
        for f in os.listdir("/proc/self/fd"):
            try:
                out[f] = os.readlink("/proc/self/fd/" + f)
            except OSError:
                pass  # listdir's own descriptor, closed by now
        return out

    def run(**kwargs):
        return {
            "sid": os.getsid(0), "pgid": os.getpgid(0), "pid": os.getpid(),
            "cwd": os.getcwd(), "fds": links(),
        }
"""


def _open_fds() -> set[int]:
    return {int(f) for f in os.listdir("/proc/self/fd")}


@pytest.mark.skipif(not spawn.AVAILABLE, reason="posix_spawn or pidfd_open missing here")
async def test_spawned_child_leads_its_own_session_in_the_plugin_folder(
    launcher: Launcher, load_plugin: LoadPlugin
) -> None:
    info = await load_plugin("inspect", INSPECT)
    assert info.python is not None
    result = await launcher.run(info, {}, {"job_id": "j"}, python=info.python, timeout_s=20)
    assert result.ok, result
    got = result.result
    assert got["sid"] == got["pid"] == got["pgid"]  # setsid: one killpg reaches every descendant
    assert got["cwd"] == str(info.path)  # the shim's own chdir
    # 0-2, the result pipe, the lifeline dup, and listdir's own: none of this process's other descriptors
    # 0 (/dev/null), 1, 2, the lifeline's private copy, the result pipe, and nothing else of this
    # process: posix_spawn closes nothing itself, so the shim does
    pipes = sorted(int(fd) for fd, target in got["fds"].items() if int(fd) > 2)
    assert len(pipes) == 2, sorted(got["fds"].items())


async def test_fallback_start_through_the_loop_runs_the_plugin(
    launcher: Launcher, load_plugin: LoadPlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spawn, "AVAILABLE", False)  # where pidfd_open is missing
    info = await load_plugin("inspect_fallback", INSPECT)
    assert info.python is not None
    result = await launcher.run(info, {}, {"job_id": "j"}, python=info.python, timeout_s=20)
    assert result.ok, result
    assert result.result["sid"] == result.result["pid"]
    assert result.result["cwd"] == str(info.path)


@pytest.mark.skipif(not spawn.AVAILABLE, reason="posix_spawn or pidfd_open missing here")
async def test_a_program_that_cannot_start_leaks_no_descriptor() -> None:
    before = _open_fds()
    proto = ChildProtocol(LogCapture(4096, 1024, None))
    with pytest.raises(OSError):
        await spawn.posix_spawn_exec(proto, ["/nonexistent/python"], env={}, pass_fds=())
    assert _open_fds() == before


@pytest.mark.skipif(not spawn.AVAILABLE, reason="posix_spawn or pidfd_open missing here")
async def test_exit_is_reaped_and_reported_through_the_pidfd() -> None:
    proto = ChildProtocol(LogCapture(4096, 1024, None))
    proc = await spawn.posix_spawn_exec(proto, ["/bin/sh", "-c", "echo hi; exit 3"], env={}, pass_fds=())
    async with asyncio.timeout(10):
        await proto.closed  # exited and every pipe closed
    assert proc.get_returncode() == 3
    with pytest.raises(ChildProcessError):
        os.waitpid(proc.get_pid(), os.WNOHANG)  # noqa: ASYNC222 - WNOHANG does not block; already reaped: no zombie left
    proc.close()
