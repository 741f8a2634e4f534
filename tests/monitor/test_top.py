"""`orchestrator top` in a real pseudo-terminal, against a real app and Redis."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import struct
import sys
import termios
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from orchestrator.client import Client
from orchestrator.config import Settings
from tests.jobs.helpers import cli, make_plugin, make_settings, run_app, wait_for

_ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|[()][A-Za-z0-9]|[=>78])")

# Runs the command with the pty as its controlling terminal, so that Ctrl-C typed into the
# terminal reaches it as SIGINT, as in a real shell.
_CONTROLLING_TTY = (
    "import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


class Terminal:
    """A child process on the slave side of a pty; what it draws accumulates in `screen`."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int, slave: int) -> None:
        self.proc = proc
        self.master = master
        self.slave = slave  # kept open here too, to read the terminal's modes after the child left
        self.modes_before = termios.tcgetattr(slave)
        self.raw = b""
        self._changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(master, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed its side
            chunk = b""
        if not chunk:
            asyncio.get_running_loop().remove_reader(self.master)
        self.raw += chunk
        self._changed.set()

    @property
    def text(self) -> str:
        return _ANSI.sub("", self.raw.decode(errors="replace"))

    async def wait_for_text(self, *needles: str, timeout_s: float = 20) -> None:
        async with asyncio.timeout(timeout_s):
            while not all(n in self.text for n in needles):
                self._changed.clear()
                await self._changed.wait()

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    async def exit_code(self, timeout_s: float = 10) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout_s)


StartTerminal = Callable[..., Awaitable[Terminal]]


@pytest.fixture
async def terminal_of(settings: Settings) -> AsyncIterator[StartTerminal]:
    started: list[Terminal] = []

    async def start(*args: str, columns: int = 220, rows: int = 60) -> Terminal:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        env.update(REDIS_URL=settings.redis_url or "", TERM="xterm-256color", COLUMNS=str(columns), LINES=str(rows))
        env.pop("PLUGINS_DIR", None)  # top needs nothing but Redis
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CONTROLLING_TTY, "-m", "orchestrator", *args,
            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=settings.state_dir.parent,
        )  # fmt: skip
        term = Terminal(proc, master, slave)
        started.append(term)
        return term

    yield start
    for term in started:
        if term.proc.returncode is None:
            term.proc.kill()
            await term.proc.wait()
        asyncio.get_running_loop().remove_reader(term.master)
        os.close(term.master)
        os.close(term.slave)


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    make_plugin(tmp_path / "plugins", "probe")
    return make_settings(tmp_path, redis_url, queues={"default": {"concurrency": 2}, "warehouse": {"concurrency": 1}})


async def _running_job(client: Client, tmp_path: Path) -> str:
    job = await client.trigger("probe", {"name": "top-job", "sleep": 60})
    await wait_for(lambda: client.status(job.job_id), timeout_s=20)

    async def running() -> bool:
        status = await client.status(job.job_id)
        return status is not None and status["state"] == "running"

    await wait_for(running)
    return job.job_id


async def test_top_shows_queues_and_a_running_job_and_quits_on_q(
    settings: Settings, tmp_path: Path, terminal_of: StartTerminal
) -> None:
    async with run_app(settings), await Client.connect(settings.redis_url or "") as client:
        job_id = await _running_job(client, tmp_path)
        term = await terminal_of("top")
        leader = await wait_for(client.leader)  # the app takes the lease at start
        await term.wait_for_text("queues", "warehouse", "running (1)", job_id, "probe", "elapsed")
        await term.wait_for_text(f"leader {leader['instance_id']} (token {leader['token']})", "★ leader")
        assert "instances 1/1 alive" in term.text
        # While it runs, keys arrive one at a time without echo (cbreak mode).
        assert termios.tcgetattr(term.slave)[3] & termios.ICANON == 0
        term.type(b"q")
        assert await term.exit_code() == 0
        # It left the alternate screen, showed the cursor and put the modes back: the shell is usable.
        assert b"\x1b[?1049l" in term.raw
        assert b"\x1b[?25h" in term.raw
        assert termios.tcgetattr(term.slave) == term.modes_before
        await client.cancel(job_id)


async def test_top_leaves_on_ctrl_c(settings: Settings, tmp_path: Path, terminal_of: StartTerminal) -> None:
    async with run_app(settings):
        term = await terminal_of("top")
        await term.wait_for_text("queues", "default")
        term.type(b"\x03")  # the terminal turns it into SIGINT for the foreground process group
        assert await term.exit_code() == 0
        assert b"\x1b[?1049l" in term.raw
        assert termios.tcgetattr(term.slave) == term.modes_before
        assert "Traceback" not in term.text


async def test_top_once_prints_a_frame_without_a_terminal(settings: Settings, tmp_path: Path) -> None:
    async with run_app(settings), await Client.connect(settings.redis_url or "") as client:
        job_id = await _running_job(client, tmp_path)
        # No plugins folder and other local queues: top shows the queues the running instance published.
        local = '{"unrelated": {"concurrency": 1}}'
        result = await cli(settings, "top", "--once", PLUGINS_DIR=str(tmp_path / "nowhere"), ORCH_QUEUES=local)
        assert result.rc == 0, result.err
        assert "warehouse" in result.out
        assert job_id in result.out
        await client.cancel(job_id)


async def test_top_once_says_when_redis_is_unreachable(settings: Settings, tmp_path: Path) -> None:
    from tests.services import free_port

    result = await cli(settings, "top", "--once", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert result.rc == 1
    assert "redis unavailable" in result.err
    assert "Traceback" not in result.err
