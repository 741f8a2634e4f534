"""The trust boundary (README "Trust boundary"): what a plugin can reach of the orchestrator.

- A real `orchestrator run` on its embedded Redis, and a plugin of the same user, both without
  capabilities (what a non-root user has; CI runs as root, so the run starts under setpriv): the
  plugin cannot read the orchestrator's /proc/<pid>/environ (the process is non-dumpable) and the
  Redis socket answers it NOAUTH.
- With `plugin_user` (a user this test creates and removes): the plugin runs as that user with
  its HOME, and cannot list the state directory, read the Redis password or reach the socket.
- A dependency's build backend, run by uv, sees none of the orchestrator's secrets.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.client import Client, connect_redis
from orchestrator.errors import ConfigError
from orchestrator.plugins import Manifest, VenvManager
from orchestrator.plugins.user import resolve_plugin_user
from orchestrator.redis.embedded import EmbeddedRedis
from tests.jobs.helpers import RunProcess, make_settings, wait_for

PLANTED = {
    "DATABASE_URL": "mysql://app:db-s3cret@127.0.0.1:1/shop",
    "ES_PASSWORD": "es-s3cret",
    "ORCH_API_TOKEN": "token-s3cret",
    "REDIS_URL": "redis://:redis-s3cret@127.0.0.1:1/0",
}

# Tries what a hostile plugin would, and reports what happened (never raises).
SPY = """
import os, socket

def _try(fn):
    try:
        return "ok: " + str(fn())[:80]
    except OSError as e:
        return type(e).__name__

def _redis(path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(path)
    s.sendall(b"*1\\r\\n$6\\r\\nDBSIZE\\r\\n")
    return s.recv(200).decode().strip()

def run(orchestrator_pid, socket_path, state_dir, **ctx):
    return {
        "uid": os.getuid(),
        "home": os.environ.get("HOME"),
        "environ": _try(lambda: open(f"/proc/{orchestrator_pid}/environ", "rb").read()),
        "redis": _try(lambda: _redis(socket_path)),
        "state_dir": _try(lambda: os.listdir(state_dir)),
        "password": _try(lambda: open(os.path.join(state_dir, "redis", "password")).read()),
    }
"""
SPY_PARAMS = {
    "orchestrator_pid": {"type": "integer", "required": True},
    "socket_path": {"type": "string", "required": True},
    "state_dir": {"type": "string", "required": True},
}


def _write_spy(plugins_dir: Path) -> None:
    folder = plugins_dir / "spy"
    folder.mkdir(parents=True)
    manifest = {
        "name": "spy",
        "version": "1.0.0",
        "description": "probes",
        "author": "tests",
        "entry_point": "main.run",
    }
    (folder / "plugin.json").write_text(json.dumps({**manifest, "parameters": SPY_PARAMS}))
    (folder / "main.py").write_text(SPY)


class _RunWithPrefix(RunProcess):
    """`orchestrator run` started through `prefix` (setpriv)."""

    def __init__(self, prefix: list[str], *args: Any, **env: str) -> None:
        super().__init__(*args, **env)
        self.prefix = prefix

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.prefix, sys.executable, "-m", "orchestrator", "run", env=self.env, stdout=log, stderr=log,
                stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip


async def _spy_in_a_run(base: Path, prefix: list[str], **env: str) -> tuple[dict[str, Any], str]:
    """Start `orchestrator run` on the embedded Redis of `base/state`, run the spy once, stop it."""
    settings = make_settings(base, None)  # type: ignore[arg-type]  # no REDIS_URL: the embedded Redis
    planted = {k: v for k, v in PLANTED.items() if k != "REDIS_URL"}
    run = _RunWithPrefix(prefix, settings, base / "run.log", **planted, **env)
    await run.start()
    assert run.proc is not None
    try:
        embedded = EmbeddedRedis(settings.state_dir)
        await wait_for(lambda: embedded.ensure(start=False), timeout_s=30)
        async with Client(connect_redis(embedded.url), owns_redis=True) as client:
            await wait_for(client.queues, timeout_s=30)
            params = {"orchestrator_pid": run.proc.pid, "socket_path": str(embedded.socket_path)}
            job = await client.trigger("spy", {**params, "state_dir": str(settings.state_dir.resolve())})
            done = await client.result(job.job_id, timeout_s=30)
        assert await run.signal_and_wait(signal.SIGTERM) == 0, run.log()
    finally:
        if run.proc.returncode is None:
            await run.kill9()
    assert done["state"] == "succeeded", (done, run.log())
    return done["result"], run.log()


async def test_a_same_user_plugin_cannot_read_our_environment_nor_use_our_redis(tmp_path: Path) -> None:
    prefix: list[str] = []
    if os.geteuid() == 0:
        # Root's capabilities would let the plugin read anything: run both as root *without* any
        # (what a non-root user has), so only the orchestrator's own non-dumpable flag decides.
        if shutil.which("setpriv") is None:
            pytest.skip("as root this test needs setpriv (util-linux) to run without capabilities")
        prefix = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]
    _write_spy(tmp_path / "plugins")
    seen, _ = await _spy_in_a_run(tmp_path, prefix)
    assert seen["uid"] == os.getuid()
    assert seen["environ"] == "PermissionError", seen  # PR_SET_DUMPABLE 0
    assert seen["redis"].startswith("ok: -NOAUTH"), seen  # the socket wants the generated password


@pytest.fixture
def plugin_user() -> Iterator[pwd.struct_passwd]:
    """A user created for this test (root only), with its own home; removed afterwards."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("plugin_user needs root and useradd to create the test user (CI runs as root)")
    name = f"orchtest{secrets.token_hex(3)}"
    home = Path(tempfile.mkdtemp(prefix="orch-home-"))
    subprocess.run(["useradd", "--home-dir", str(home), "--no-create-home", "--shell", "/bin/false", name], check=True)
    try:
        entry = pwd.getpwnam(name)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        yield entry
    finally:
        subprocess.run(["userdel", name], check=False)
        shutil.rmtree(home, ignore_errors=True)


async def test_with_plugin_user_a_plugin_cannot_read_the_state_dir(plugin_user: pwd.struct_passwd) -> None:
    base = await asyncio.to_thread(_world_readable_base, plugin_user)
    try:
        seen, log = await _spy_in_a_run(base, [], ORCH_PLUGIN_USER=plugin_user.pw_name)
    finally:
        await asyncio.to_thread(shutil.rmtree, base, ignore_errors=True)
    assert seen["uid"] == plugin_user.pw_uid and seen["home"] == plugin_user.pw_dir, seen
    assert seen["state_dir"] == "PermissionError", seen
    assert seen["password"] == "PermissionError", seen
    assert seen["redis"] == "PermissionError", seen  # the socket's directory is 0700
    assert seen["environ"] == "PermissionError", seen
    assert "Traceback" not in log


def _world_readable_base(user: pwd.struct_passwd) -> Path:
    """A folder the plugin user can pass through (pytest's tmp dirs are 0700), with the spy in it."""
    python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    try:
        runs = subprocess.run([python, "-I", "-S", "-c", "import json"], user=user.pw_uid, check=False).returncode == 0
    except PermissionError:
        runs = False
    if not runs:
        pytest.skip(f"{python} cannot be run by another user (a Python under /root): plugin_user needs one")
    base = Path(tempfile.mkdtemp(prefix="orch-trust-"))
    base.chmod(0o755)
    _write_spy(base / "plugins")
    for path in [base / "plugins", *(base / "plugins").rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return base


@pytest.mark.parametrize(
    ("spec", "error"),
    [("no-such-user-x", "plugin_user: no such user 'no-such-user-x'"), ("root", "plugin_user: must not be root")],
)
def test_a_plugin_user_that_cannot_be_used_is_one_line(spec: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        resolve_plugin_user(spec)


@pytest.mark.venv
async def test_a_build_backend_sees_none_of_our_secrets(
    tmp_path: Path, venv_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "seen-env.json"
    package = tmp_path / "envprobe"
    package.mkdir()
    (package / "pyproject.toml").write_text(BACKEND_PYPROJECT)
    (package / "backend.py").write_text(BACKEND.replace("SEEN", str(seen)))
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("UV_NO_PROGRESS", "1")  # uv's own settings do reach it
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    manifest = Manifest(name="p", version="1", entry_point="main.run", dependencies=[f"envprobe @ {package.as_uri()}"])
    await VenvManager(venv_dir).ensure(plugin_dir, manifest)
    environ = json.loads(seen.read_text())
    assert environ.get("UV_NO_PROGRESS") == "1" and "PATH" in environ
    leaked = [name for name, value in PLANTED.items() if name in environ or value in json.dumps(environ)]
    assert leaked == []


BACKEND_PYPROJECT = """
[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]

[project]
name = "envprobe"
version = "0.1"
"""

# An in-tree PEP 517 backend (no build requirements, so no index is asked): records its environment.
BACKEND = r"""
import base64, hashlib, json, os, zipfile

with open("SEEN", "w") as fh:
    json.dump(dict(os.environ), fh)

_FILES = {
    "envprobe/__init__.py": b"",
    "envprobe-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: envprobe\nVersion: 0.1\n",
    "envprobe-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = "envprobe-0.1-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as whl:
        for path, data in _FILES.items():
            whl.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
        record.append("envprobe-0.1.dist-info/RECORD,,")
        whl.writestr("envprobe-0.1.dist-info/RECORD", "\n".join(record) + "\n")
    return name
"""
