"""The plugin and config commands of the real CLI, and `run` with the embedded Redis."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from orchestrator.config import Settings
from tests.jobs.helpers import cli, make_plugin, pid_alive, read_events, wait_for


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "plugins_dir": tmp_path / "plugins",
        "state_dir": tmp_path / "state",
        "redis_url": "redis://127.0.0.1:1/0",  # plugin commands must not need Redis
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def examples(tmp_path: Path, repo_root: Path) -> Path:
    shutil.copytree(repo_root / "plugins", tmp_path / "plugins")
    make_plugin(tmp_path / "plugins")
    broken = tmp_path / "plugins" / "broken"
    broken.mkdir()
    (broken / "plugin.json").write_text('{"name": "broken", "version": "1", "entry_point": "main.nope"}')
    (broken / "main.py").write_text("def run(): pass\n")
    return tmp_path / "plugins"


async def test_plugins_list_and_show(tmp_path: Path, examples: Path) -> None:
    settings = _settings(tmp_path)
    r = await cli(settings, "plugins", "list", "--json")
    assert r.rc == 0, r.err
    plugins = {p["name"]: p for p in r.json()}
    assert set(plugins) == {"data_processor", "es_indexer", "probe", "broken"}
    assert plugins["data_processor"]["state"] == "ready" and plugins["data_processor"]["reason"] is None
    assert plugins["es_indexer"]["state"] == "not-ready" and "not built" in plugins["es_indexer"]["reason"]
    assert plugins["broken"]["state"] == "invalid" and "nope" in plugins["broken"]["reason"]
    for p in plugins.values():
        assert {"name", "version", "enabled", "state", "reason", "tags", "queue", "parameters"} <= set(p)
    r = await cli(settings, "plugins", "list")
    assert r.rc == 0 and "data_processor" in r.out

    r = await cli(settings, "plugins", "show", "data_processor", "--json")
    assert r.rc == 0 and r.json()["entry_point"] == "main.process"
    r = await cli(settings, "plugins", "show", "ghost")
    assert r.rc == 1 and "ghost" in r.err


async def test_plugins_test_runs_once_and_validates_first(tmp_path: Path, examples: Path) -> None:
    settings = _settings(tmp_path)
    r = await cli(
        settings, "plugins", "test", "data_processor", "-p", "operation=clean_data", "-p", "batch_size=7", "--json"
    )
    assert r.rc == 0, r.err
    out = r.json()
    assert out["ok"] is True and out["result"]["status"] == "success"

    record = tmp_path / "events.jsonl"
    for bad in (["-p", "sleep=abc"], ["-p", "unknown=1"], ["--params-json", '{"sleep": "x"}']):
        r = await cli(settings, "plugins", "test", "probe", "-p", f"record={record}", *bad)
        assert r.rc == 2, (bad, r.err)
    assert read_events(record) == [], "the plugin was started despite invalid params"

    r = await cli(settings, "plugins", "test", "probe", "-p", f"fail_until_file={tmp_path / 'no'}")
    assert r.rc == 1
    assert "does not exist yet" in r.err and "working on x" in r.err  # the error and the log tail
    r = await cli(settings, "plugins", "test", "broken")
    assert r.rc == 2 and "invalid" in r.err


async def test_plugins_new_scaffolds_a_working_plugin(tmp_path: Path, examples: Path) -> None:
    settings = _settings(tmp_path)
    r = await cli(settings, "plugins", "new", "my_plugin")
    assert r.rc == 0, r.err
    assert (examples / "my_plugin" / "plugin.json").exists()
    listed = {p["name"]: p for p in (await cli(settings, "plugins", "list", "--json")).json()}
    assert listed["my_plugin"]["state"] == "ready"
    assert (await cli(settings, "plugins", "new", "my_plugin")).rc == 2
    assert (await cli(settings, "plugins", "new", "bad name!")).rc == 2


@pytest.mark.venv
async def test_plugins_install_builds_the_venv(tmp_path: Path) -> None:
    make_plugin(tmp_path / "plugins", name="with_dep", dependencies=["iniconfig"])
    settings = _settings(tmp_path)
    r = await cli(settings, "plugins", "install")
    assert r.rc == 0, r.err
    assert "with_dep: ready" in r.out
    listed = (await cli(settings, "plugins", "list", "--json")).json()
    assert listed[0]["state"] == "ready" and listed[0]["venv"]


async def test_config_masks_secrets_and_rejects_bad_values(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    env = {"DATABASE_URL": "mysql+pymysql://app:hunter2@db:3306/talent", "ES_PASSWORD": "hunter3"}
    r = await cli(settings, "config", "--json", **env)
    assert r.rc == 0, r.err
    data = r.json()
    assert data["database_url"] == "mysql+pymysql://app:***@db:3306/talent"
    assert "hunter" not in r.out
    r = await cli(settings, "config", ORCH_HTTP_PORT="eighty")
    assert r.rc == 2 and "ORCH_HTTP_PORT" in r.err and len(r.err.strip().splitlines()) == 1


async def test_run_with_embedded_redis_starts_and_stops_cleanly(tmp_path: Path, examples: Path) -> None:
    """No REDIS_URL: `run` starts a private redis-server (unix socket, append-only), says so, serves a
    job triggered by another command, and on SIGTERM exits 0 leaving no child behind."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_") and k != "REDIS_URL"}
    env.update(PLUGINS_DIR=str(examples), ORCH_STATE_DIR=str(tmp_path / "state"), ORCH_HTTP_PORT="0")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestrator", "run", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []

    async def read_until(text: str) -> None:
        while not any(text in line for line in lines):
            lines.append((await asyncio.wait_for(proc.stderr.readline(), 20)).decode())  # type: ignore[union-attr]

    try:
        await read_until("started: instance=")
        assert any("embedded redis-server" in line for line in lines)
        assert any("change capture: off" in line for line in lines)
        trigger = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "orchestrator", "trigger", "data_processor", "--wait", "--timeout", "20s", "--json",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await trigger.communicate()
        assert trigger.returncode == 0, err.decode()
        assert json.loads(out)["state"] == "succeeded"
        children = _children(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 30)
    assert rc == 0
    await wait_for(lambda: not (tmp_path / "state" / "redis" / "redis.sock").exists(), timeout_s=5)
    assert not [pid for pid in children if pid_alive(pid)], "a child outlived `run`"


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
