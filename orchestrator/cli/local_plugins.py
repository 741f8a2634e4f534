"""The plugins folder as the CLI sees it, loaded and launched the way `orchestrator run` does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.config import Settings
from orchestrator.errors import NotFoundError, ParamsError, PluginError
from orchestrator.plugins.build import build_launcher, build_registry
from orchestrator.plugins.output import RunResult
from orchestrator.plugins.params import coerce_cli_params, validate_params
from orchestrator.plugins.registry import PluginInfo


class LocalPlugins:
    """The plugins folder of the settings (not loaded until `load()`).

    Args:
        settings: the effective settings.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = build_registry(settings, settings.venv_dir)

    async def load(self) -> LocalPlugins:
        await self.registry.load()
        return self

    def all(self) -> list[PluginInfo]:
        return self.registry.all()

    def get(self, name: str) -> PluginInfo:
        info = self.registry.get(name)
        if info is None:
            msg = f"no plugin {name!r} in {self.settings.plugins_dir}"
            raise NotFoundError(msg)
        return info

    def params(self, name: str, pairs: list[str], params_json: str | None) -> dict[str, Any]:
        """`--params-json` then `-p k=v` pairs, typed by the manifest when the plugin is local."""
        params: dict[str, Any] = {}
        if params_json:
            loaded = json.loads(params_json)
            if not isinstance(loaded, dict):
                raise ParamsError(name, ["--params-json must be a JSON object"])
            params.update(loaded)
        info = self.registry.get(name)
        if info is not None and info.manifest is not None:
            params.update(coerce_cli_params(info.manifest, pairs))
        return params

    async def install(self, names: list[str]) -> dict[str, str | None]:
        return await self.registry.install(names)

    def create(self, name: str) -> Path:
        """Scaffold a new plugin folder; returns its path."""
        from orchestrator.plugins.scaffold import create_plugin

        return create_plugin(self.settings.plugins_dir, name)

    async def test(self, name: str, params: dict[str, Any], *, timeout_s: float | None = None) -> RunResult:
        """Run the plugin once now through the launcher, no queue (builds its venv if needed)."""
        info = self.get(name)
        if info.manifest is None:
            msg = f"plugin {name} is invalid: {info.reason}"
            raise PluginError(msg)
        params = validate_params(info.manifest, params)
        info = await self.registry.ensure_ready(name)
        assert info.manifest is not None and info.python is not None  # noqa: S101  ensure_ready raises otherwise
        timeout = timeout_s or info.manifest.timeout or self.settings.job_timeout_s
        context = {"job_id": "test", "attempt": 1, "source": "cli"}
        async with await build_launcher(self.settings, prestart=False) as launcher:
            return await launcher.run(info, params, context, python=info.python, timeout_s=timeout)
