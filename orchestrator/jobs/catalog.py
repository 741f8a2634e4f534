"""The plugin catalog of a process that has the plugins folder: its registry plus the Redis enable flags."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping

from orchestrator.errors import ConfigError
from orchestrator.jobs.model import Keys
from orchestrator.jobs.store import JobStore
from orchestrator.jobs.submit import CatalogEntry, enabled_override
from orchestrator.jobs.throttle import publish_limits
from orchestrator.plugins.registry import PluginInfo, PluginRegistry
from orchestrator.plugins.throttle import Throttle

logger = logging.getLogger(__name__)


class RegistryCatalog:
    """Manifests from the local registry; enable/disable from Redis, so every instance agrees."""

    def __init__(self, registry: PluginRegistry, store: JobStore) -> None:
        self.registry = registry
        self.store = store

    async def lookup(self, name: str) -> CatalogEntry | None:
        info = self.registry.get(name)
        if info is None:
            return None
        if info.state == "invalid":
            return CatalogEntry(manifest=None, enabled=False, state=info.state, reason=info.reason)
        override = await enabled_override(self.store, name)
        return CatalogEntry(
            manifest=info.manifest,
            enabled=info.enabled if override is None else override,
            state=info.state,
            reason=info.reason,
        )


async def publish_plugins(store: JobStore, plugins: list[PluginInfo], *, queues: dict[str, int] | None = None) -> None:
    """Let clients that have only a Redis URL validate against the same manifests.

    With `queues`, the queue table is written in the same transaction: clients take published
    queues as "an instance is up", so the manifests must be there by then (a trigger in between
    would find no plugin).
    """
    mapping = {
        p.name: json.dumps(
            {
                "manifest": p.manifest.model_dump(mode="json") if p.manifest else None,
                "state": p.state,
                "reason": p.reason,
                "enabled": p.enabled,
            }
        )
        for p in plugins
    }
    published = {k.decode() for k in await store.redis.hkeys(Keys.plugins)}  # type: ignore[misc]
    async with store.redis.pipeline(transaction=True) as pipe:
        if mapping:
            pipe.hset(Keys.plugins, mapping=mapping)
        if gone := published - set(mapping):  # removed from the folder: clients stop accepting triggers
            pipe.hdel(Keys.plugins, *gone)
        if queues:
            pipe.hset(Keys.queues, mapping={q: str(c) for q, c in queues.items()})
        await pipe.execute()


class CatalogPublisher:
    """Republishes this process's plugins (and, at start-up and after Redis lost them, its queues).

    Args:
        store: the job store (its Redis).
        registry: the plugins as this process loaded them.
        queues: every configured queue -> concurrency.
        throttles: `[plugins.NAME.throttle]` from config, over each manifest's `throttle`.
        reread_throttles: reads them again from the config file (blocking: run in a thread) at a
            plugin reload, so `orchestrator plugins reload` applies a changed config without a restart.
    """

    def __init__(
        self,
        store: JobStore,
        registry: PluginRegistry,
        queues: dict[str, int],
        throttles: Mapping[str, Throttle] | None = None,
        reread_throttles: Callable[[], Mapping[str, Throttle]] | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.queues = queues
        self.throttles = dict(throttles or {})
        self.reread_throttles = reread_throttles

    async def plugins(self) -> None:
        """After a reload or a venv build: the manifests and their states, and the throttles' limits
        (the config's read again)."""
        await publish_plugins(self.store, self.registry.all())
        if self.reread_throttles is not None:
            try:
                self.throttles = dict(await asyncio.to_thread(self.reread_throttles))
            except ConfigError as e:  # a bad edit must not take the limits away: keep what was read last
                logger.warning("plugins reload: the config's throttles were not re-read: %s", e)
        await publish_limits(self.store.redis, self.effective_throttles())

    async def everything(self) -> None:
        """At start-up, and when Redis lost what was published: the manifests, the queue table, the limits."""
        await publish_plugins(self.store, self.registry.all(), queues=self.queues)
        await publish_limits(self.store.redis, self.effective_throttles())

    def effective_throttles(self) -> dict[str, Throttle | None]:
        """Per plugin: config's throttle over the manifest's (None: no limits)."""
        out: dict[str, Throttle | None] = {}
        for info in self.registry.all():
            own = info.manifest.throttle if info.manifest else None
            config = self.throttles.get(info.name)
            out[info.name] = own.merged(config) if own else config
        for name, config in self.throttles.items():
            out.setdefault(name, config)
        return out
