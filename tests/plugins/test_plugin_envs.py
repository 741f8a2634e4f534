"""Per-plugin virtualenvs: keys, one build per key, reuse, locking, failures. Builds use real uv."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.errors import PluginEnvError
from orchestrator.plugins import Launcher, Manifest, PluginRegistry, VenvManager
from orchestrator.plugins.envs import READY_MARKER

MakePlugin = Callable[..., Path]
USES_INICONFIG = """
import iniconfig, os, sys
def run(**kw):
    env = os.environ
    return {"prefix": sys.prefix, "file": iniconfig.__file__, "path": env["PATH"], "venv": env["VIRTUAL_ENV"]}
"""


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def manifest(*deps: str) -> Manifest:
    return Manifest(name="p", version="1", entry_point="main.run", dependencies=list(deps))


def test_keys_and_interpreters_without_building(tmp_path: Path, envs: VenvManager) -> None:
    assert envs.base_python == Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    assert ".venv" not in str(envs.base_python)  # the real interpreter, not the project's venv or a shim
    assert envs.env_key([]) is None
    assert envs.env_key(["b", "a"]) == envs.env_key(["a", "b", "a"])  # order and repeats do not matter
    assert envs.env_key(["a"]) != envs.env_key(["a>=2"])
    assert VenvManager(tmp_path, base_python="/usr/bin/python3").env_key(["a"]) != envs.env_key(["a"])
    assert envs.python_for(tmp_path, manifest()) == (envs.base_python, ["-I", "-S"])
    assert envs.python_for(tmp_path, manifest("iniconfig")) is None


def test_unreadable_requirements_file(tmp_path: Path, envs: VenvManager) -> None:
    (tmp_path / "requirements.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(PluginEnvError, match="requirements.txt: cannot be read"):
        envs.requirements_for(tmp_path, manifest())


@pytest.mark.venv
async def test_venv_built_once_then_reused(
    make_plugin: MakePlugin, registry: PluginRegistry, launcher: Launcher, venv_dir: Path
) -> None:
    make_plugin("with_dep", USES_INICONFIG, dependencies=["iniconfig"])
    make_plugin("same_deps", USES_INICONFIG, dependencies=["iniconfig"])
    await registry.load()
    progress: list[tuple[str, str]] = []
    assert await registry.install(on_progress=lambda name, msg: progress.append((name, msg))) == {
        "same_deps": None,
        "with_dep": None,
    }
    assert registry.envs.builds == 1  # two plugins with the same requirements share one venv
    assert any("building virtualenv" in msg for _, msg in progress)

    info = registry.get("with_dep")
    assert info is not None and info.state == "ready" and info.python is not None and info.venv is not None
    assert info.python == (info.venv / "bin" / "python", ["-I"])
    assert info.venv.parent == venv_dir and (info.venv / READY_MARKER).is_file()
    assert [name for name in listing(venv_dir) if name.startswith(".build-")] == []
    result = await launcher.run(info, {}, {}, python=info.python, timeout_s=30)
    assert result.ok, result
    assert Path(result.result["prefix"]) == info.venv  # runs from the final location after the rename
    assert result.result["file"].startswith(str(info.venv))
    assert result.result["path"].startswith(f"{info.venv / 'bin'}:")  # as if activated
    assert result.result["venv"] == str(info.venv)

    # A restarted orchestrator (new manager, new registry) finds the venv ready without building.
    envs2 = VenvManager(venv_dir)
    registry2 = PluginRegistry(registry.plugins_dir, envs2)
    await registry2.load()
    again = registry2.get("with_dep")
    assert again is not None and again.state == "ready"
    await registry2.ensure_ready("with_dep")
    assert envs2.builds == 0


@pytest.mark.venv
async def test_concurrent_ensure_builds_once(tmp_path: Path, venv_dir: Path) -> None:
    """Two coroutines of one manager and one of another manager (as another process would) race."""
    plugin_dir = tmp_path / "p"
    plugin_dir.mkdir()
    m = manifest("iniconfig")
    a, b = VenvManager(venv_dir), VenvManager(venv_dir)
    results = await asyncio.gather(
        a.ensure(plugin_dir, m),
        a.ensure(plugin_dir, m),
        b.ensure(plugin_dir, m),
    )
    assert a.builds + b.builds == 1
    assert results[0] == results[1] == results[2]
    assert results[0][0].is_file()


@pytest.mark.venv
async def test_failed_install_leaves_plugin_not_ready(make_plugin: MakePlugin, registry: PluginRegistry) -> None:
    make_plugin("broken_dep", dependencies=["pkg-that-is-nowhere @ file:///nonexistent/pkg-that-is-nowhere"])
    await registry.load()
    with pytest.raises(PluginEnvError) as exc:
        await registry.ensure_ready("broken_dep")
    message = str(exc.value)
    assert message.startswith("uv failed installing requirements (exit ")
    assert "/nonexistent/pkg-that-is-nowhere" in message  # uv's own words come along
    info = registry.get("broken_dep")
    assert info is not None and info.state == "not-ready" and info.reason == message
    assert [name for name in listing(registry.envs.venv_dir) if not name.endswith(".lock")] == []
    assert info.venv is not None and not info.venv.exists()
