"""The plugins package's parts for `orchestrator run` and the CLI: the registry, the launcher, the venv builder.

Plugins sits below jobs: it never sees the job store, so what must happen when a venv is built (the
catalog republished) comes in as a callback.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from orchestrator.plugins.builder import VenvBuilder
from orchestrator.plugins.envs import VenvManager
from orchestrator.plugins.launcher import Launcher
from orchestrator.plugins.registry import PluginRegistry
from orchestrator.plugins.settings import PluginSettings
from orchestrator.plugins.user import resolve_plugin_user


def build_registry(section: PluginSettings, venv_dir: Path) -> PluginRegistry:
    """The plugins folder (not loaded yet: `await registry.load()`); virtualenvs under `venv_dir`."""
    return PluginRegistry(section.plugins_dir, VenvManager(venv_dir))


async def plugin_env_source() -> dict[str, str]:
    """Where a plugin's declared `env` names are looked up: the environment, plus a `.env` in the
    working directory (Settings reads `.env` without exporting it, and ES_HOSTS often lives there)."""
    from dotenv import dotenv_values  # python-dotenv: pydantic-settings' own .env reader

    from_file = await asyncio.to_thread(dotenv_values, ".env")
    return {**{k: v for k, v in from_file.items() if v is not None}, **os.environ}


async def build_launcher(section: PluginSettings, *, prestart: bool | None = None) -> Launcher:
    """The plugin launcher as `run` wires it (a one-off `plugins test` passes prestart=False).

    Raises:
        ConfigError: `plugin_user` names no user, or this process may not switch to it.
    """
    return Launcher(
        kill_grace_s=section.kill_grace_s,
        env_source=await plugin_env_source(),
        prestart=section.plugin_prestart if prestart is None else prestart,
        spare_idle_s=section.plugin_spare_idle_s,
        user=resolve_plugin_user(section.plugin_user) if section.plugin_user else None,
    )


def build(
    section: PluginSettings, registry: PluginRegistry, *, on_built: Callable[[], Awaitable[None]]
) -> list[VenvBuilder]:
    """The venv builder: builds missing virtualenvs in the background, then calls `on_built`."""
    return [VenvBuilder(registry, on_built)]
