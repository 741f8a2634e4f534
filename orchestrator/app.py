"""The Orchestrator: builds every component from Settings and runs them in one TaskGroup.

This is the one place where components are constructed and wired; nothing else holds a
process-wide instance of anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from arq.connections import ArqRedis

from orchestrator.client import Client, connect_redis
from orchestrator.config import Settings, mask_url
from orchestrator.embedded_redis import EmbeddedRedis
from orchestrator.errors import ConfigError
from orchestrator.jobs.catalog import RegistryCatalog, publish_plugins, publish_queues
from orchestrator.jobs.instances import Heartbeat, new_instance_id
from orchestrator.jobs.queue import WorkerPool
from orchestrator.jobs.runner import JobRunner
from orchestrator.jobs.state import JobStore
from orchestrator.jobs.submit import JobDefaults
from orchestrator.monitor.health import ComponentHealth, redis_health, task_health
from orchestrator.monitor.http import HttpServer, MonitorContext
from orchestrator.plugins.envs import VenvManager
from orchestrator.plugins.launcher import Launcher
from orchestrator.plugins.registry import PluginRegistry

logger = logging.getLogger(__name__)

Role = Literal["all", "worker", "leader"]


def version() -> str:
    try:
        return importlib.metadata.version("orchestrator")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


@contextlib.asynccontextmanager
async def redis_connection(settings: Settings, *, start_embedded: bool = True) -> AsyncIterator[tuple[ArqRedis, str]]:
    """The configured Redis, or the embedded one (started if needed and allowed)."""
    url = settings.redis_url
    if url is None:
        embedded = EmbeddedRedis(settings.state_dir)
        if not await embedded.ensure(start=start_embedded):
            msg = f"redis_url: not set and no embedded Redis is running under {settings.state_dir}"
            raise ConfigError(msg)
        url = embedded.url
    redis = connect_redis(url)
    try:
        yield redis, url
    finally:
        await redis.aclose()


async def plugin_env_source() -> dict[str, str]:
    """Where a plugin's declared `env` names are looked up: the environment, plus a `.env` in the
    working directory (Settings reads `.env` without exporting it, and ES_HOSTS often lives there)."""
    from dotenv import dotenv_values  # python-dotenv: pydantic-settings' own .env reader

    from_file = await asyncio.to_thread(dotenv_values, ".env")
    return {**{k: v for k, v in from_file.items() if v is not None}, **os.environ}


def job_defaults(settings: Settings) -> JobDefaults:
    return JobDefaults(
        default_queue=settings.default_queue,
        job_timeout_s=settings.job_timeout_s,
        max_retries=settings.max_retries,
        retry_backoff_s=settings.retry_backoff_s,
    )


def build_registry(settings: Settings) -> tuple[PluginRegistry, VenvManager]:
    envs = VenvManager(settings.venv_dir)
    return PluginRegistry(settings.plugins_dir, envs), envs


def build_client(settings: Settings, redis: ArqRedis, registry: PluginRegistry | None) -> Client:
    """A client that validates against the local plugins folder when it has one."""
    store = JobStore(redis, result_ttl_s=settings.result_ttl_s)
    catalog = RegistryCatalog(registry, store) if registry is not None else None
    return Client(
        redis,
        catalog=catalog,
        queues={q: s.concurrency for q, s in settings.queues.items()},
        defaults=job_defaults(settings),
        result_ttl_s=settings.result_ttl_s,
    )


@dataclass
class RunState:
    """What the monitor reads about this process."""

    instance_id: str
    started_at: float = field(default_factory=time.time)
    redis_url: str = ""
    served_queues: dict[str, int] = field(default_factory=dict)
    role: str = "all"


class Orchestrator:
    """Everything in one process.

    Args:
        settings: the effective settings.
        role: `all` (workers and leader duties), `worker`, or `leader` (no workers).
        queues: the queues this process serves (default: all configured queues).
    """

    def __init__(self, settings: Settings, *, role: Role = "all", queues: list[str] | None = None) -> None:
        unknown = sorted(set(queues or []) - set(settings.queues))
        if unknown:
            msg = f"--queues: unknown queue(s) {', '.join(unknown)}; configured: {', '.join(settings.queues)}"
            raise ConfigError(msg)
        self.settings = settings
        self.role = role
        served = queues or list(settings.queues)
        self.state = RunState(
            instance_id=settings.instance_id or new_instance_id(),
            served_queues={q: settings.queues[q].concurrency for q in served} if role != "leader" else {},
            role=role,
        )
        self.stop_event = asyncio.Event()
        self.ready = asyncio.Event()
        self.http: HttpServer | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}

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
            async with redis_connection(settings, start_embedded=False) as (redis, url):
                self.state.redis_url = mask_url(url)
                await self._run_with(redis)
        finally:
            if embedded is not None and embedded.started_here:
                await embedded.shutdown()

    async def _run_with(self, redis: ArqRedis) -> None:
        settings = self.settings
        registry, _ = build_registry(settings)
        await registry.load()
        self._log_plugins(registry)
        store = JobStore(redis, result_ttl_s=settings.result_ttl_s)
        await publish_queues(store, {q: s.concurrency for q, s in settings.queues.items()})
        await publish_plugins(store, registry.all())
        # prestart: a `process` plugin that ran recently has its next child already started.
        launcher = Launcher(
            kill_grace_s=settings.kill_grace_s,
            env_source=await plugin_env_source(),
            prestart=settings.plugin_prestart,
            spare_idle_s=settings.plugin_spare_idle_s,
        )
        async with launcher:  # stops warm pooled children and prestarted spares last
            await self._serve(redis, store, registry, launcher)

    async def _serve(self, redis: ArqRedis, store: JobStore, registry: PluginRegistry, launcher: Launcher) -> None:
        settings = self.settings
        runner = JobRunner(
            store,
            registry,
            launcher,
            instance_id=self.state.instance_id,
            log_tail_bytes=settings.log_tail_bytes,
        )
        pool = WorkerPool(
            redis,
            self.state.served_queues,
            runner,
            store,
            instance_id=self.state.instance_id,
            poll_delay_s=settings.poll_delay_s,
        )
        heartbeat = Heartbeat(
            store,
            self.state.instance_id,
            {"version": version(), "queues": self.state.served_queues, "role": self.role, "started_at": time.time()},
            interval_s=settings.heartbeat_interval_s,
            ttl_s=settings.instance_ttl_s,
        )
        await heartbeat.register()
        logger.info(
            "orchestrator %s started: instance=%s role=%s queues=%s",
            version(), self.state.instance_id, self.role,
            ",".join(f"{q}({c})" for q, c in self.state.served_queues.items()) or "none",
        )  # fmt: skip
        http = HttpServer(
            self._monitor_context(store, registry, build_client(settings, redis, registry), pool, heartbeat),
            settings.http_host,
            settings.http_port,
        )
        self.http = http
        await http.start()
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(pool.run(), name="workers"),
                tg.create_task(runner.flush_logs(), name="log-flusher"),
                tg.create_task(heartbeat.run(), name="heartbeat"),
                tg.create_task(http.run(), name="http"),
                tg.create_task(self._build_venvs(registry, store), name="venv-builder"),
            ]
            self._tasks = {t.get_name(): t for t in tasks}
            self.ready.set()
            await self.stop_event.wait()
            logger.info("shutdown requested: no new jobs are taken")
            await pool.drain(settings.shutdown_grace_s)
            for task in tasks:
                task.cancel()
        await heartbeat.unregister()
        s = pool.stats()
        logger.info(
            "shutdown complete ◆ %d jobs succeeded ◆ %d failed ◆ %d retried",
            s["completed"], s["failed"], s["retried"],
        )  # fmt: skip

    async def _build_venvs(self, registry: PluginRegistry, store: JobStore) -> None:
        """Build missing plugin venvs in the background; jobs for them build on demand anyway."""
        pending = [p.name for p in registry.all() if p.state == "not-ready"]
        if not pending:
            return
        logger.info("building virtualenvs for %s", ", ".join(pending))
        errors = await registry.install(pending)
        for name, error in errors.items():
            if error:
                logger.warning("plugin %s not ready: %s", name, error)
        await publish_plugins(store, registry.all())

    def _log_plugins(self, registry: PluginRegistry) -> None:
        plugins = registry.all()
        by_state: dict[str, list[str]] = {}
        for p in plugins:
            by_state.setdefault(p.state, []).append(p.name)
        logger.info(
            "plugins from %s: %s",
            self.settings.plugins_dir,
            "; ".join(f"{state}: {', '.join(names)}" for state, names in by_state.items()) or "none found",
        )
        for p in plugins:
            if p.state == "invalid":
                logger.warning("plugin %s is invalid: %s", p.name, p.reason)

    def _monitor_context(
        self, store: JobStore, registry: PluginRegistry, client: Client, pool: WorkerPool, heartbeat: Heartbeat
    ) -> MonitorContext:
        async def health() -> dict[str, ComponentHealth]:
            beat = (
                ComponentHealth("ok") if heartbeat.healthy else ComponentHealth("failing", error=heartbeat.last_error)
            )
            return {
                "redis": await redis_health(store.redis),
                "workers": task_health(self._tasks.get("workers"), "workers"),
                "heartbeat": beat,
            }

        async def status_extra() -> dict[str, Any]:
            return {
                "role": self.role,
                "leader": None,  # the scheduler / change-capture lease arrives with those components
                "instances": await heartbeat.instances(),
                "redis": self.state.redis_url,
                "schedules": [],
                "cdc": {"enabled": False, "reason": "change capture is not part of this build yet"},
            }

        return MonitorContext(
            version=version(),
            instance_id=self.state.instance_id,
            started_at=self.state.started_at,
            store=store,
            registry=registry,
            jobs=client,
            health=health,
            status_extra=status_extra,
            worker_stats=pool.stats,
            api_token=self.settings.api_token.get_secret_value() if self.settings.api_token else None,
        )
