"""Plugin reload across the cluster: `orchestrator plugins reload [NAME]` publishes on a Redis
channel, and every running instance re-reads its plugins folder (the seeds' `reload_plugin`).

A new plugin becomes triggerable, a changed manifest applies to the next job, a removed plugin
refuses new triggers while its running jobs finish (they hold their own snapshot of it). With
`plugins_watch` on, an instance also reloads by itself when files in the folder change (watchfiles).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from redis.asyncio import Redis

from orchestrator.cluster.status import PluginReloadStatus
from orchestrator.components import BaseComponent
from orchestrator.errors import NotFoundError
from orchestrator.jobs.model import Keys, now
from orchestrator.plugins.registry import PluginRegistry
from orchestrator.redis.subscribe import listen_forever

logger = logging.getLogger(__name__)


class PluginReloader(BaseComponent):
    """Re-reads the plugins folder when asked through Redis (or when its files change).

    Args:
        redis: the shared connection pool (one pub/sub connection is taken from it).
        registry: the plugins.
        on_reloaded: called after each reload (the app republishes manifests and builds new venvs).
        watch: also reload on file changes under the plugins folder.
    """

    name = "plugin-reload"
    status_key = "plugin_reload"  # the /status key users read (older than the component's name)

    def __init__(
        self,
        redis: Redis,
        registry: PluginRegistry,
        on_reloaded: Callable[[], Awaitable[None]],
        *,
        watch: bool = False,
    ) -> None:
        self.redis = redis
        self.registry = registry
        self.on_reloaded = on_reloaded
        self.watch = watch
        self.reloads = 0
        self.last_reload_at: float | None = None
        self.watching = asyncio.Event()  # set once the file watcher runs

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._listen())
            if self.watch:
                tg.create_task(self._watch(self.registry.plugins_dir))

    async def _listen(self) -> None:
        async def on_message(_channel: str, data: bytes) -> None:
            await self.reload(data.decode() or None)

        await listen_forever(self.redis, [Keys.reload_channel], on_message, name="plugin-reload")

    async def _watch(self, folder: Path) -> None:
        from watchfiles import awatch  # only when plugins_watch is on

        # yield_on_timeout: an empty first batch tells that the watcher runs (tests wait for it)
        async for changes in awatch(folder, debounce=500, recursive=True, rust_timeout=500, yield_on_timeout=True):
            self.watching.set()
            if changes:
                await self.reload(None)

    async def reload(self, name: str | None) -> None:
        try:
            await self.registry.reload(name)
        except NotFoundError as e:
            logger.warning("plugin reload: %s", e)
            return
        self.reloads += 1
        self.last_reload_at = now()
        logger.info("plugins reloaded: %s", name or "all")
        await self.on_reloaded()

    async def status(self) -> PluginReloadStatus:
        return {"reloads": self.reloads, "last_reload_at": self.last_reload_at, "watch": self.watch}
