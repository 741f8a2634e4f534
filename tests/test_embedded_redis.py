"""orchestrator/redis/embedded.py: a private redis-server on a unix socket that outlives a kill -9 of its starter."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from orchestrator.redis.embedded import EmbeddedRedis


@pytest.fixture
async def state_dir(tmp_path: Path) -> AsyncIterator[Path]:
    """A state dir whose embedded Redis is shut down at the end, whoever started it."""
    state = tmp_path / "state"
    yield state
    server = EmbeddedRedis(state)
    if not await server.ping():
        return
    client = client_for(server)
    try:
        pid = int((await client.info("server"))["process_id"])
    finally:
        await client.aclose()
    await server.shutdown()
    # shutdown() returns once the socket is gone, maybe before the process has exited. If this test's
    # loop closes before asyncio has seen the exit of a server it started, the subprocess transport is
    # never closed (ResourceWarning later, in some other test). Wait for the exit, then let the loop run.
    for _ in range(250):
        if not is_alive(pid):
            break
        await asyncio.sleep(0.02)
    else:
        os.kill(pid, signal.SIGKILL)  # the server runs in a session of its own: none may outlive the test
    for _ in range(5):
        await asyncio.sleep(0.01)


def is_alive(pid: int) -> bool:
    """False once the process has exited (a zombie nobody reaps counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


def _on_a_command_line(text: str) -> bool:
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in path.read_bytes():
                return True
        except OSError:  # a process that exited meanwhile
            pass
    return False


def client_for(server: EmbeddedRedis) -> aioredis.Redis:
    return aioredis.Redis.from_url(server.url, decode_responses=True)


async def test_starts_on_a_unix_socket_with_aof_and_no_tcp(state_dir: Path) -> None:
    server = EmbeddedRedis(state_dir)
    assert await server.ensure() is True
    assert server.started_here is True
    password = (server.data_dir / "password").read_text().strip()
    assert server.url == f"unix://{server.socket_path}?password={password}"
    assert server.socket_path.is_socket()
    assert await server.ping() is True
    # only this user: a 0700 directory around the socket, a 0600 password, and NOAUTH without it
    assert stat.S_IMODE(server.socket_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((server.data_dir / "password").stat().st_mode) == 0o600
    anonymous = aioredis.Redis.from_url(f"unix://{server.socket_path}")
    try:
        with pytest.raises(RedisError, match="Authentication required"):
            await anonymous.dbsize()
    finally:
        await anonymous.aclose()
    assert not await asyncio.to_thread(_on_a_command_line, password)  # `ps` shows it nobody
    client = client_for(server)
    try:
        assert await client.config_get("appendonly") == {"appendonly": "yes"}
        assert await client.config_get("port") == {"port": "0"}
        assert Path((await client.config_get("dir"))["dir"]) == server.data_dir
    finally:
        await client.aclose()


async def test_ensure_without_start_does_not_start(state_dir: Path) -> None:
    server = EmbeddedRedis(state_dir)
    assert await server.ensure(start=False) is False
    assert await server.ping() is False
    assert server.started_here is False


async def test_second_instance_reuses_the_running_server(state_dir: Path) -> None:
    first = EmbeddedRedis(state_dir)
    await first.ensure()
    second = EmbeddedRedis(state_dir)
    assert await second.ensure() is True
    assert second.started_here is False
    assert second.url == first.url
    c1, c2 = client_for(first), client_for(second)
    try:
        await c1.set("shared", "yes")
        assert await c2.get("shared") == "yes"
    finally:
        await c1.aclose()
        await c2.aclose()


CHILD = """
import asyncio, os, signal, sys
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from orchestrator.redis.embedded import EmbeddedRedis


async def main():
    server = EmbeddedRedis(Path(sys.argv[1]))
    await server.ensure()
    assert server.started_here
    client = aioredis.Redis.from_url(server.url)
    assert await client.set("acked", "before-kill")  # acknowledged by the server
    print("written", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


asyncio.run(main())
"""


async def test_acknowledged_write_survives_kill_9_of_the_starter(state_dir: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(state_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    assert out == b"written\n"

    server = EmbeddedRedis(state_dir)
    assert await server.ensure() is True
    assert server.started_here is False  # the child's server outlived it and is adopted
    client = client_for(server)
    try:
        assert await client.get("acked") == "before-kill"
    finally:
        await client.aclose()


async def test_shutdown_then_ensure_keeps_the_data(state_dir: Path) -> None:
    server = EmbeddedRedis(state_dir)
    await server.ensure()
    client = client_for(server)
    try:
        await client.set("job:1", "queued")
        await client.hset("job:2", mapping={"state": "running", "attempt": "2"})
        await client.zadd("queue:default", {"job:1": 1.5})
    finally:
        await client.aclose()

    await server.shutdown()
    assert await server.ping() is False

    again = EmbeddedRedis(state_dir)
    assert await again.ensure() is True
    assert again.started_here is True  # a new server, reading the append-only file
    client = client_for(again)
    try:
        assert await client.get("job:1") == "queued"
        assert await client.hgetall("job:2") == {"state": "running", "attempt": "2"}
        assert await client.zrange("queue:default", 0, -1, withscores=True) == [("job:1", 1.5)]
    finally:
        await client.aclose()
