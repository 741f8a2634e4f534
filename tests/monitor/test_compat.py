"""The old scheduler's commands and Python calls, against a real `orchestrator run` on a real Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from orchestrator import compat
from orchestrator.errors import ParamsError
from tests.monitor.conftest import Server
from tests.services import free_port


@pytest.fixture
def old_env(server: Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment the old system's users have: REDIS_URL and PLUGINS_DIR."""
    redis_url = _server_env(server)["REDIS_URL"]
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("PLUGINS_DIR", str(server.tmp / "plugins"))
    return {**os.environ, "REDIS_URL": redis_url, "PLUGINS_DIR": str(server.tmp / "plugins")}


def _server_env(server: Server) -> dict[str, str]:
    pid = server.proc.pid
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_old_verbs_do_what_the_new_commands_do(server: Server, old_env: dict[str, str]) -> None:
    old, new = _cli(old_env, "list-plugins", "--json"), _cli(old_env, "plugins", "list", "--json")
    assert old.returncode == new.returncode == 0
    assert json.loads(old.stdout) == json.loads(new.stdout)

    old = _cli(old_env, "test-plugin", "probe", "--name", "via-old-verb", "--json")
    assert old.returncode == 0, old.stderr
    assert json.loads(old.stdout)["result"]["name"] == "via-old-verb"
    assert _cli(old_env, "test-plugin", "nope").returncode == _cli(old_env, "plugins", "test", "nope").returncode == 1

    job_id = server.trigger(name="status-me")
    server.wait_state(job_id, "succeeded")
    old, new = _cli(old_env, "status", job_id, "--json"), _cli(old_env, "jobs", "list", "--json")
    assert old.returncode == 0 and json.loads(old.stdout)["job_id"] == job_id

    monitor = _cli(old_env, "monitor", "--once")
    top = _cli(old_env, "top", "--once")
    assert monitor.returncode == top.returncode == 0
    assert "default" in monitor.stdout and "default" in top.stdout

    health = _cli(old_env, "health", "--url", server.url)
    assert health.returncode == 0 and health.stdout.strip() == "healthy"
    assert "compatibility" in _cli(old_env, "--help").stdout


def test_trigger_takes_plugin_parameters_as_options(server: Server, old_env: dict[str, str]) -> None:
    r = _cli(old_env, "trigger", "probe", "--name", "from-options", "--sleep", "0", "--wait", "--json")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert job["params"]["name"] == "from-options" and job["params"]["sleep"] == 0  # typed by the manifest
    r = _cli(old_env, "trigger", "probe", "--nmae", "typo")
    assert r.returncode == 2
    assert "unknown parameter 'nmae'" in r.stderr and "name, sleep" in r.stderr  # it names the parameters
    assert _cli(old_env, "jobs", "list", "--bogus").returncode == 2  # other commands: a usage error as before


@pytest.mark.parametrize(("verb", "role"), [("worker", "worker"), ("beat", "leader")])
def test_worker_and_beat_are_run_with_a_role(
    server: Server, old_env: dict[str, str], verb: str, role: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {**old_env, "ORCH_HTTP_PORT": str(port), "ORCH_LOG_FORMAT": "json", "ORCH_STATE_DIR": str(tmp_path)}
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator", verb], env=env, stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        status = _wait_status(f"http://127.0.0.1:{port}/status", proc, log)
        assert status["role"] == role
        assert ("workers" in status) is (role == "worker")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def _wait_status(url: str, proc: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return dict(json.loads(resp.read()))
        except OSError:
            time.sleep(0.1)
    raise AssertionError("no /status")


def test_the_old_python_calls(server: Server, old_env: dict[str, str]) -> None:
    task_id = compat.trigger_plugin("probe", {"name": "compat"}, priority="high")
    server.wait_state(task_id, "succeeded")
    status = compat.get_task_status(task_id)
    assert status is not None
    assert (status["task_id"], status["plugin_name"], status["status"]) == (task_id, "probe", "success")
    assert status["result"] == {"name": "compat", "attempt": 1} and status["job"]["priority"] == 1
    assert compat.get_task_status("no-such-task") is None

    ids = compat.batch_trigger_plugins([{"plugin_name": "probe", "params": {"name": f"b{i}"}} for i in range(3)])
    assert len(ids) == 3
    for job_id in ids:
        server.wait_state(job_id, "succeeded")
    with pytest.raises(ParamsError):
        compat.trigger_plugin("probe", {"nope": 1})

    done = compat.execute_plugin("probe", {"name": "now"}, timeout=30)
    assert done["status"] == "success" and done["result"]["name"] == "now"

    assert compat.disable_plugin("probe") is True
    with pytest.raises(Exception, match="disabled"):
        compat.trigger_plugin("probe")
    assert compat.enable_plugin("probe") is True
    assert compat.reload_plugin("probe") is True

    schedule_id = compat.add_scheduled_task({"plugin": "probe", "params": {"name": "nightly"}, "cron": "0 2 * * *"})
    listed = _cli(old_env, "schedules", "list", "--json")
    assert listed.returncode == 0 and schedule_id in {s["id"] for s in json.loads(listed.stdout)}

    health = compat.health_check()
    assert health["status"] == "healthy" and health["instances"] == 1 and health["leader"] is not None
