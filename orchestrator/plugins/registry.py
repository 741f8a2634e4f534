"""Plugin discovery: every sub-folder of the plugins directory with a plugin.json.

A bad manifest never stops the load: that plugin is listed as invalid with the reason and the
others work. Entries are replaced, never mutated, so a caller holding a PluginInfo keeps a
consistent snapshot while a reload runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from orchestrator.errors import ManifestError, NotFoundError, PluginEnvError
from orchestrator.logs import mask_secrets
from orchestrator.plugins.envs import PythonCmd, VenvManager
from orchestrator.plugins.manifest import MANIFEST_FILE, Manifest, is_plugin_name, load_manifest

logger = logging.getLogger(__name__)

PluginState = Literal["ready", "not-ready", "invalid"]
InstallProgressFn = Callable[[str, str], None]  # (plugin name, message)

NOT_BUILT = "virtualenv not built yet (run `orchestrator plugins install`)"


@dataclass
class PluginInfo:
    """One plugin folder as the registry sees it.

    `python` is the interpreter and flags to launch it with; None until the plugin is ready.
    """

    name: str
    path: Path
    manifest: Manifest | None
    state: PluginState
    reason: str | None
    warnings: list[str] = field(default_factory=list)
    venv: Path | None = None
    enabled: bool = True
    python: PythonCmd | None = None

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "name": self.name,
            "version": m.version if m else None,
            "enabled": self.enabled,
            "state": self.state,
            "reason": self.reason,
            "tags": list(m.tags) if m else [],
            "queue": m.queue if m else None,
            "parameters": {k: v.model_dump(mode="json") for k, v in m.parameters.items()} if m else {},
            "description": m.description if m else "",
            "author": m.author if m else "",
            "entry_point": m.entry_point if m else None,
            "dependencies": [mask_secrets(d) for d in m.dependencies] if m else [],
            "python_version": m.python_version if m else None,
            "isolation": m.isolation if m else None,
            "pool": m.pool.model_dump(mode="json") if m and m.isolation == "pooled" else None,
            "timeout": m.timeout if m else None,
            "max_retries": m.max_retries if m else None,
            "retry_backoff": m.retry_backoff if m else None,
            "env": list(m.env) if m else [],
            "limits": m.limits.model_dump(mode="json") if m and m.limits else None,
            "venv": str(self.venv) if self.venv else None,
            "path": str(self.path),
            "warnings": list(self.warnings),
        }


class PluginRegistry:
    """The set of known plugins, keyed by manifest name.

    Args:
        plugins_dir: folder holding one sub-folder per plugin (`PLUGINS_DIR`).
        envs: builds and finds the plugins' virtualenvs.
    """

    def __init__(self, plugins_dir: Path, envs: VenvManager) -> None:
        self.plugins_dir = plugins_dir
        self.envs = envs
        self._plugins: dict[str, PluginInfo] = {}
        # enable/disable at run time outlives a reload of the manifest

    def get(self, name: str) -> PluginInfo | None:
        return self._plugins.get(name)

    def all(self) -> list[PluginInfo]:
        return sorted(self._plugins.values(), key=lambda p: p.name)

    async def load(self) -> None:
        """(Re)discover every plugin folder."""
        self._plugins = await asyncio.to_thread(self._scan)
        counts = {s: sum(p.state == s for p in self._plugins.values()) for s in ("ready", "not-ready", "invalid")}
        logger.info("plugins.loaded dir=%s %s", self.plugins_dir, " ".join(f"{k}={v}" for k, v in counts.items()))

    async def reload(self, name: str | None = None) -> None:
        """Re-read one plugin's folder (or all of them when `name` is None).

        Raises:
            NotFoundError: no plugin of that name is known and no folder of that name exists.
        """
        if name is None:
            await self.load()
            return
        if not is_plugin_name(name):  # never a path: `../x` must not reach outside plugins_dir
            raise NotFoundError(f"no plugin {name!r}: not a plugin name")
        current = self._plugins.get(name)
        folder = current.path if current else self.plugins_dir / name
        if not await asyncio.to_thread((folder / MANIFEST_FILE).is_file):
            if current is None:
                raise NotFoundError(f"plugin {name!r} not found in {self.plugins_dir}")
            del self._plugins[name]
            logger.info("plugins.removed name=%s path=%s", name, folder)
            return
        info = await asyncio.to_thread(self._inspect, folder)
        clash = self._plugins.get(info.name)
        if info.name != name or (clash is not None and clash.path != folder):
            await self.load()  # the plugin was renamed: names and duplicates must be settled again
            return
        self._plugins[name] = info
        _log_problems(info)

    async def ensure_ready(self, name: str, *, on_progress: Callable[[str], None] | None = None) -> PluginInfo:
        """Build the plugin's venv if needed and return its (ready) entry.

        Raises:
            NotFoundError: unknown plugin.
            ManifestError: the plugin is invalid.
            PluginEnvError: the build failed; the plugin is then not-ready with the installer's message.
        """
        info = self._require(name)
        if info.manifest is None or info.state == "invalid":
            raise ManifestError(f"plugin {name!r} is invalid: {info.reason}")
        if info.state == "ready" and info.python is not None:
            return info
        try:
            python = await self.envs.ensure(info.path, info.manifest, on_progress=on_progress)
        except PluginEnvError as e:
            self._update(info, state="not-ready", reason=mask_secrets(str(e)), python=None)
            raise
        return self._update(info, state="ready", reason=None, python=python)

    async def install(
        self, names: list[str] | None = None, on_progress: InstallProgressFn | None = None
    ) -> dict[str, str | None]:
        """Build the venvs of the named plugins (default: all). Returns name -> error, or None if ready."""
        results: dict[str, str | None] = {}
        for name in names if names is not None else sorted(self._plugins):
            progress = (lambda msg, n=name: on_progress(n, msg)) if on_progress else None
            try:
                await self.ensure_ready(name, on_progress=progress)
                results[name] = None
            except (NotFoundError, ManifestError, PluginEnvError) as e:
                results[name] = str(e)
        return results

    # -- internals --

    def _require(self, name: str) -> PluginInfo:
        info = self._plugins.get(name)
        if info is None:
            raise NotFoundError(f"plugin {name!r} not found")
        return info

    def _update(self, old: PluginInfo, **changes: Any) -> PluginInfo:
        new = replace(old, **changes)
        # A reload may have replaced the entry meanwhile; only the entry we started from is updated.
        if self._plugins.get(old.name) is old:
            self._plugins[old.name] = new
        return new

    def _scan(self) -> dict[str, PluginInfo]:
        if not self.plugins_dir.is_dir():
            logger.warning("plugins.dir_missing dir=%s", self.plugins_dir)
            return {}
        folders = sorted(p for p in self.plugins_dir.iterdir() if (p / MANIFEST_FILE).is_file())
        infos = [self._inspect(folder) for folder in folders]
        # Who keeps a contested name: valid manifests first, then the folder named like the plugin.
        infos.sort(key=lambda i: (i.manifest is None, i.path.name != i.name, i.path.name))
        found: dict[str, PluginInfo] = {}
        for info in infos:
            owner = found.get(info.name)
            if owner is not None:
                key = info.path.name if info.path.name not in found else str(info.path)
                info = replace(
                    info,
                    name=key,
                    state="invalid",
                    reason=f"duplicate plugin name {info.name!r}: already provided by folder {owner.path.name}",
                    python=None,
                )
            found[info.name] = info
            _log_problems(info)
        return found

    def _inspect(self, folder: Path) -> PluginInfo:
        """Build the entry for one folder (blocking file I/O)."""
        folder = folder.absolute()
        try:
            manifest, warnings = load_manifest(folder)
            reqs = self.envs.requirements_for(folder, manifest)
        except (ManifestError, PluginEnvError) as e:
            # the reason may quote a requirement line, index credentials included: it is shown everywhere
            return PluginInfo(folder.name, folder, None, "invalid", mask_secrets(str(e)), [], None, False)
        if manifest.name != folder.name:
            warnings.append(f"folder {folder.name!r} holds plugin {manifest.name!r}; the manifest name is used")
        key = self.envs.env_key(reqs)
        python = self.envs.python_for_key(key)
        return PluginInfo(
            name=manifest.name,
            path=folder,
            manifest=manifest,
            state="ready" if python else "not-ready",
            reason=None if python else NOT_BUILT,
            warnings=warnings,
            venv=self.envs.venv_path(key) if key else None,
            # the manifest's default; the live switch is the Redis flag every instance reads
            enabled=manifest.enabled,
            python=python,
        )


def _log_problems(info: PluginInfo) -> None:
    for warning in info.warnings:
        logger.warning("plugins.manifest_warning plugin=%s %s", info.name, warning)
    if info.state == "invalid":
        logger.warning("plugins.invalid plugin=%s path=%s reason=%s", info.name, info.path, info.reason)
