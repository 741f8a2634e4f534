"""Fixtures for the plugin runtime: temp plugin folders, a fresh PLUGIN_VENV_DIR, a launcher."""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import load_settings
from orchestrator.plugins import Launcher, PluginInfo, PluginRegistry, VenvManager

MakePlugin = Callable[..., Path]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "venv: builds a virtualenv with uv (seconds; needs PyPI or uv's cache)")


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    path = tmp_path / "plugins"
    path.mkdir()
    return path


@pytest.fixture
def venv_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh PLUGIN_VENV_DIR, resolved through Settings like the app does."""
    monkeypatch.setenv("PLUGIN_VENV_DIR", str(tmp_path / "venvs"))
    return load_settings().venv_dir


@pytest.fixture
def envs(venv_dir: Path) -> VenvManager:
    return VenvManager(venv_dir)


@pytest.fixture
def registry(plugins_dir: Path, envs: VenvManager) -> PluginRegistry:
    return PluginRegistry(plugins_dir, envs)


@pytest.fixture
async def launcher() -> AsyncIterator[Launcher]:
    async with Launcher(kill_grace_s=1.0) as launcher:
        yield launcher


@pytest.fixture
def make_plugin(plugins_dir: Path) -> MakePlugin:
    """Write a plugin folder: `make_plugin("name", code, entry="main.run", **manifest_keys)`.

    `code` is dedented into main.py; `manifest=` replaces the whole plugin.json (dict or raw text).
    """

    def make(
        name: str,
        code: str = "def run(**kwargs):\n    return {'ok': True}\n",
        *,
        entry: str = "main.run",
        manifest: dict[str, Any] | str | None = None,
        **keys: Any,
    ) -> Path:
        folder = plugins_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "main.py").write_text(textwrap.dedent(code))
        if manifest is None:
            manifest = {"name": name, "version": "1.0.0", "entry_point": entry, **keys}
        text = manifest if isinstance(manifest, str) else json.dumps(manifest, indent=2)
        (folder / "plugin.json").write_text(text)
        return folder

    return make


@pytest.fixture
async def load_plugin(make_plugin: MakePlugin, registry: PluginRegistry) -> Callable[..., Any]:
    """make_plugin + registry load; returns the PluginInfo (ready, for plugins without dependencies)."""

    async def load(name: str, code: str, **kwargs: Any) -> PluginInfo:
        make_plugin(name, code, **kwargs)
        await registry.reload(name)
        info = registry.get(name)
        assert info is not None, name
        return info

    return load


@pytest.fixture
def load_plugin_sync(make_plugin: MakePlugin, plugins_dir: Path, envs: VenvManager) -> Callable[..., PluginInfo]:
    """make_plugin + a registry read outside any event loop (for tests that run their own loop)."""

    def load(name: str, code: str, **kwargs: Any) -> PluginInfo:
        make_plugin(name, code, **kwargs)
        registry = PluginRegistry(plugins_dir, envs)
        info = registry._inspect(plugins_dir / name)
        assert info.python is not None, info.reason
        return info

    return load
