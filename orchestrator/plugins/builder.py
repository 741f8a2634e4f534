"""The venv builder component: builds missing plugin virtualenvs in the background.

Jobs for a plugin whose venv is not built yet build it on demand anyway (locked, so never twice);
this only gets the work out of the first job's way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from typing_extensions import TypedDict

from orchestrator.components import BaseComponent
from orchestrator.plugins.registry import PluginRegistry

logger = logging.getLogger(__name__)


class VenvsStatus(TypedDict):
    building: list[str]
    """Plugins whose venv this round builds."""
    failed: dict[str, str]
    """Plugin -> why its venv could not be built."""


class VenvBuilder(BaseComponent):
    """Builds the venvs of `not-ready` plugins, at start and whenever `request()` asks.

    Args:
        registry: the plugins.
        on_built: called after each round (the app republishes the plugins' states).
    """

    name = "venv-builder"
    status_key = "venvs"  # the /status key users read (older than the component's name)

    def __init__(self, registry: PluginRegistry, on_built: Callable[[], Awaitable[None]]) -> None:
        self.registry = registry
        self.on_built = on_built
        self.errors: dict[str, str] = {}
        self.building: list[str] = []
        self._wanted: asyncio.Queue[list[str] | None] = asyncio.Queue()
        self._wanted.put_nowait(None)  # at start: everything not ready

    def request(self, names: list[str] | None = None) -> None:
        """Build these (None: every plugin that is not ready)."""
        self._wanted.put_nowait(names)

    async def run(self) -> None:
        while True:
            names = await self._wanted.get()
            pending = names if names is not None else [p.name for p in self.registry.all() if p.state == "not-ready"]
            if not pending:
                continue
            logger.info("building virtualenvs for %s", ", ".join(pending))
            self.building = pending
            try:
                for name, error in (await self.registry.install(pending)).items():
                    if error:
                        self.errors[name] = error
                        logger.warning("plugin %s not ready: %s", name, error)
                    else:
                        self.errors.pop(name, None)
            finally:
                self.building = []
            await self.on_built()

    async def status(self) -> VenvsStatus:
        return {"building": self.building, "failed": dict(self.errors)}
