"""Private redis-server children for the production-Redis tests: TLS, durable (AOF), replicas, sentinels.

Each runs from Debian's redis-server binary (built with TLS; `--sentinel` makes it a sentinel) on
a free port of 127.0.0.1 with its files in a temp dir, and dies with pytest (PR_SET_PDEATHSIG).
Fixtures may block (subprocess, sleep); only the product code must not.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.services import find_redis_server, free_port, spawn, tail, terminate


def redis_binary() -> str:
    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server binary")
    return binary


def cli(port: int, *args: str, tls: list[str] | None = None) -> str:
    """redis-cli against 127.0.0.1:port (a blocking helper for fixtures)."""
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *(tls or []), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return out.stdout.strip()


class RedisProc:
    """One redis-server (or sentinel) child; restartable on the same port with the same data.

    Args:
        dir: its working dir (AOF, RDB, logs, sentinel.conf).
        args: extra arguments after the defaults (port, bind, dir).
        port: a fixed port (default: a free one).
        sentinel_conf: write this as sentinel.conf and start in sentinel mode.
    """

    def __init__(
        self, dir: Path, args: list[str] | None = None, *, port: int | None = None, sentinel_conf: str | None = None
    ) -> None:
        self.dir = dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = args or []
        self.port = port or free_port()
        self.sentinel_conf = sentinel_conf
        self.proc: subprocess.Popen[bytes] | None = None
        self.ping_args: list[str] = []  # e.g. TLS options for redis-cli

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 20.0) -> RedisProc:
        binary = redis_binary()
        if self.sentinel_conf is not None:
            conf = self.dir / "sentinel.conf"
            if not conf.exists():  # sentinel rewrites its conf: keep it across restarts
                conf.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n" + self.sentinel_conf)
            argv = [binary, str(conf), "--sentinel"]
        else:
            # fmt: off
            argv = [
                binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--daemonize", "no", "--logfile", "", "--save", "", *self.args,
            ]
            # fmt: on
        self.proc = spawn(argv, self.dir / "server.log")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if cli(self.port, "PING", tls=self.ping_args) == "PONG":
                return self
            time.sleep(0.02)
        pytest.fail(f"redis-server on {self.port} did not start:\n{tail(self.dir / 'server.log')}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL: what the append-only file had not fsynced is gone."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def shutdown(self) -> None:
        """SHUTDOWN (the server saves and fsyncs before it exits)."""
        assert self.proc is not None
        cli(self.port, "SHUTDOWN", tls=self.ping_args)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, 10)


def make_certs(dir: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 signed by it, a client certificate, and an unrelated CA."""
    dir.mkdir(parents=True, exist_ok=True)

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=dir, check=True, capture_output=True, timeout=60)

    for ca in ("ca", "wrong-ca"):
        # fmt: off
        ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", f"{ca}.key",
            "-out", f"{ca}.crt", "-subj", f"/CN=orchestrator test {ca}")
        # fmt: on
    (dir / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        ssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
        )
        # fmt: off
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-out", f"{name}.crt", "-extfile", "san.ext")
        # fmt: on
    return {
        n: dir / f
        for n, f in {
            "ca": "ca.crt",
            "wrong_ca": "wrong-ca.crt",
            "server_crt": "server.crt",
            "server_key": "server.key",
            "client_crt": "client.crt",
            "client_key": "client.key",
        }.items()
    }
