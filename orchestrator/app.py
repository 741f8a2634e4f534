"""The Orchestrator: `orchestrator run`. Connect, ask each package for its components, supervise them.

This is the one place where the packages' parts are wired together; each package builds its own
components from its settings section and the `Shared` objects (`<package>/build.py`), and nothing
holds a process-wide instance of anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Literal

from arq.connections import ArqRedis

from orchestrator.cdc import build as cdc
from orchestrator.client import Client
from orchestrator.cluster import build as cluster
from orchestrator.cluster.heartbeat import new_instance_id
from orchestrator.cluster.lease import LeaderLease
from orchestrator.components import Component, ComponentHealth
from orchestrator.config import Settings
from orchestrator.errors import ConfigError
from orchestrator.index import build as index
from orchestrator.jobs import build as jobs
from orchestrator.jobs.shared import Identity, Shared, make_shared
from orchestrator.jobs.workers import WorkerPool
from orchestrator.logs import mask_url
from orchestrator.monitor import build as monitor
from orchestrator.monitor.http import HttpServer
from orchestrator.plugins import build as plugins
from orchestrator.plugins.registry import PluginRegistry
from orchestrator.redis.configured import open_redis
from orchestrator.redis.connection import RedisOptions, connection_budget, wait_until_up
from orchestrator.redis.embedded import EmbeddedRedis
from orchestrator.schedules import build as schedules
from orchestrator.supervisor import Supervisor
from orchestrator.tracing import build as tracing
from orchestrator.version import __version__
from orchestrator.workflows import build as workflows

logger = logging.getLogger(__name__)

Role = Literal["all", "worker", "leader"]


class Orchestrator:
    """Everything in one process.

    Args:
        settings: the effective settings.
        role: `all` (workers and leader duties), `worker` (never leads), or `leader` (no workers).
        queues: the queues this process serves (default: all configured queues).
    """

    def __init__(self, settings: Settings, *, role: Role = "all", queues: list[str] | None = None) -> None:
        unknown = sorted(set(queues or []) - set(settings.queues))
        if unknown:
            msg = f"--queues: unknown queue(s) {', '.join(unknown)}; configured: {', '.join(settings.queues)}"
            raise ConfigError(msg)
        self.settings = settings
        served = queues or list(settings.queues)
        self.identity = Identity(
            instance_id=settings.instance_id or new_instance_id(),
            role=role,
            version=__version__,
            served_queues={q: settings.queues[q].concurrency for q in served} if role != "leader" else {},
        )
        self.stop_event = asyncio.Event()
        self.ready = asyncio.Event()
        self.supervisor: Supervisor | None = None

    @property
    def http(self) -> HttpServer | None:
        """The status endpoint once it is built (its `bound_port` is the port it listens on)."""
        component = self.supervisor.get("http") if self.supervisor is not None else None
        return component if isinstance(component, HttpServer) else None

    def stop(self) -> None:
        """Signal handlers call this; it only sets an event."""
        self.stop_event.set()

    async def run(self) -> None:
        settings = self.settings
        embedded = EmbeddedRedis(settings.state_dir) if settings.redis_url is None else None
        if embedded is not None:
            await embedded.ensure()
            logger.info("redis: embedded redis-server on %s (no REDIS_URL set)", embedded.socket_path)
        else:
            logger.info("redis: %s", mask_url(settings.redis_url or ""))
        if settings.database_url is None:
            logger.info("change capture: off (no DATABASE_URL set)")
        logger.info("settings: %s", json.dumps(settings.masked(), separators=(",", ":")))
        try:
            async with open_redis(settings, settings.state_dir, start_embedded=False) as (redis, url):
                if await self._wait_for_redis(redis, url):
                    await self._run_with(redis, url)
        finally:
            if embedded is not None and embedded.started_here:
                await embedded.shutdown()

    async def _wait_for_redis(self, redis: ArqRedis, url: str) -> bool:
        """Wait (with backoff) until Redis answers; False when stopped meanwhile.

        While it waits, /live answers 200 and /health 503 naming redis (StartupProbes), so an
        orchestrator started before its Redis (a compose stack) is alive but not ready.
        """
        settings = self.settings
        probes = monitor.startup_probes(settings)
        waiting = asyncio.create_task(
            wait_until_up(
                redis,
                url,
                RedisOptions.from_settings(settings),
                timeout_s=settings.redis_connect_timeout_s,
                on_waiting=probes.start,
            )
        )
        stopped = asyncio.create_task(self.stop_event.wait())
        try:
            await asyncio.wait({waiting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not waiting.done():
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
            await probes.close()
        if waiting.cancelled():
            logger.info("stopped while waiting for redis")
            return False
        if (error := waiting.exception()) is not None:
            raise error
        return True

    async def _run_with(self, redis: ArqRedis, url: str) -> None:
        settings = self.settings
        registry = plugins.build_registry(settings, settings.venv_dir)
        await registry.load()
        self._log_plugins(registry)
        # prestart: a `process` plugin that ran recently has its next child already started.
        spans = tracing.build(settings)
        try:
            async with await plugins.build_launcher(settings) as launcher:  # warm children and spares stop last
                shared = make_shared(
                    settings,
                    redis,
                    self.identity,
                    registry,
                    launcher,
                    settings.throttles(),
                    settings.reread_throttles,
                    tracing=spans,
                )
                await shared.publisher.everything()
                lease = cluster.build_lease(settings, shared)
                client = Client.for_settings(settings, redis, registry, tracing=spans)
                components = self._build_components(shared, lease, client, url)
                self.supervisor = Supervisor(components, lease)
                await self._supervise(components)
        finally:
            await spans.aclose()  # the last spans (the drained jobs') are flushed

    def _build_components(self, shared: Shared, lease: LeaderLease, client: Client, redis_url: str) -> list[Component]:
        """The one place that decides which components this process runs, in start order."""
        settings = self.settings
        budget = connection_budget(
            shared.identity.served_queues,
            leader_eligible=lease.eligible,
            max_connections=settings.redis_max_connections,
        )
        workers = jobs.build(settings, shared)
        named = workflows.build(settings, shared)
        venvs = plugins.build(settings, shared.registry, on_built=shared.publisher.plugins)
        return [
            *monitor.build(
                settings,
                shared,
                client=client,
                health=self._health,
                status=self._status,
                redis_url=mask_url(redis_url),
                budget=budget,
            ),
            *cluster.build(
                settings, shared, lease=lease, workers=workers, venvs=venvs, watch_plugins=settings.plugins_watch
            ),
            *venvs,
            *workers,
            *schedules.build(settings, shared, lease=lease, workflows=named),  # leader-only from here on
            *cdc.build(settings, shared, lease=lease, workflows=named),
            *index.build(settings, shared, rules=settings.cdc.rules),
        ]

    async def _supervise(self, components: list[Component]) -> None:
        assert self.supervisor is not None  # noqa: S101  set by run() before it supervises
        supervisor, identity = self.supervisor, self.identity
        await supervisor.start()
        logger.info(
            "orchestrator %s started: instance=%s role=%s queues=%s components=%s",
            identity.version, identity.instance_id, identity.role,
            ",".join(f"{q}({c})" for q, c in identity.served_queues.items()) or "none",
            ",".join(c.name for c in components),
        )  # fmt: skip
        self.ready.set()
        # Generous: the workers' own grace, then their put-back (bounded by kill_grace_s), then the rest.
        drain_timeout_s = self.settings.shutdown_grace_s + self.settings.kill_grace_s + 10.0
        await supervisor.run(self.stop_event, drain_timeout_s=drain_timeout_s)
        pool = next((c for c in components if isinstance(c, WorkerPool)), None)
        s = pool.stats() if pool is not None else {"completed": 0, "failed": 0, "retried": 0}
        logger.info(
            "shutdown complete ◆ %d jobs succeeded ◆ %d failed ◆ %d retried",
            s["completed"], s["failed"], s["retried"],
        )  # fmt: skip

    async def _health(self) -> dict[str, ComponentHealth]:
        return await self.supervisor.health() if self.supervisor else {}

    async def _status(self) -> dict[str, Any]:
        body = await self.supervisor.status() if self.supervisor else {}
        return {"role": self.identity.role, **body}

    def _log_plugins(self, registry: PluginRegistry) -> None:
        by_state: dict[str, list[str]] = {}
        for p in registry.all():
            by_state.setdefault(p.state, []).append(p.name)
        logger.info(
            "plugins from %s: %s",
            self.settings.plugins_dir,
            "; ".join(f"{state}: {', '.join(names)}" for state, names in by_state.items()) or "none found",
        )
        for p in registry.all():
            if p.state == "invalid":
                logger.warning("plugin %s is invalid: %s", p.name, p.reason)
