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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from orchestrator.cdc.capture import build_capture
from orchestrator.client import Client
from orchestrator.cluster.heartbeat import Heartbeat, Housekeeping, new_instance_id
from orchestrator.cluster.lease import LeaderLease
from orchestrator.cluster.plugin_reload import PluginReloader
from orchestrator.cluster.reconcile import Reconciler
from orchestrator.components import Component, ComponentHealth
from orchestrator.config import Settings
from orchestrator.errors import ConfigError, NotFoundError, ParamsError, PluginError, StartupError
from orchestrator.index.build import build_index_components
from orchestrator.jobs.catalog import RegistryCatalog, publish_plugins
from orchestrator.jobs.observer import JobObserver
from orchestrator.jobs.runner import JobRunner
from orchestrator.jobs.store import JobStore
from orchestrator.jobs.submit import JobDefaults, Submitter
from orchestrator.jobs.workers import WorkerPool
from orchestrator.logs import mask_url
from orchestrator.monitor.context import MonitorContext
from orchestrator.monitor.health import RedisProbe
from orchestrator.monitor.http import HttpServer
from orchestrator.monitor.loop import LoopMonitor
from orchestrator.monitor.metrics import Metrics
from orchestrator.monitor.waiting import StartupProbes
from orchestrator.plugins.builder import VenvBuilder
from orchestrator.plugins.envs import VenvManager
from orchestrator.plugins.launcher import Launcher
from orchestrator.plugins.output import RunResult
from orchestrator.plugins.params import coerce_cli_params, validate_params
from orchestrator.plugins.registry import PluginInfo, PluginRegistry
from orchestrator.redis import connection as redis_conn
from orchestrator.redis.connection import RedisOptions
from orchestrator.redis.embedded import EmbeddedRedis
from orchestrator.schedules.scheduler import Scheduler
from orchestrator.schedules.store import ScheduleStore
from orchestrator.supervisor import Supervisor

if TYPE_CHECKING:
    from orchestrator.cdc.admin import CdcAdmin

logger = logging.getLogger(__name__)

Role = Literal["all", "worker", "leader"]


def version() -> str:
    try:
        return importlib.metadata.version("orchestrator")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


@contextlib.asynccontextmanager
async def redis_connection(settings: Settings, *, start_embedded: bool = True) -> AsyncIterator[tuple[ArqRedis, str]]:
    """The configured Redis, or the embedded one (started if needed and allowed).

    A failure to reach Redis inside the block (refused, TLS, password) leaves it as one line naming
    the URL and the cause (redis_conn.explain): RedisUnavailable (exit 1) or ConfigError (exit 2).
    """
    url = settings.redis_url
    if url is None:
        embedded = EmbeddedRedis(settings.state_dir)
        if not await embedded.ensure(start=start_embedded):
            msg = f"redis_url: not set and no embedded Redis is running under {settings.state_dir}"
            raise ConfigError(msg)
        url = embedded.url
    options = RedisOptions.from_settings(settings)
    redis = redis_conn.connect(url, options)
    try:
        try:
            yield redis, url
        except (RedisError, OSError) as e:
            if redis_conn.is_connection_error(e):
                raise redis_conn.explain(e, url, options) from e
            raise
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


async def build_launcher(settings: Settings, *, prestart: bool | None = None) -> Launcher:
    """The plugin launcher as `run` wires it (a one-off `plugins test` passes prestart=False)."""
    return Launcher(
        kill_grace_s=settings.kill_grace_s,
        env_source=await plugin_env_source(),
        prestart=settings.plugin_prestart if prestart is None else prestart,
        spare_idle_s=settings.plugin_spare_idle_s,
    )


async def es_check(settings: Settings, indices: list[str]) -> dict[str, Any]:
    """`orchestrator es check`: the connection and every target index (see index/check.py)."""
    from orchestrator.index.check import es_check as check  # Elasticsearch is loaded only for this

    return await check(settings, indices)


class LocalPlugins:
    """The plugins folder as the CLI sees it, loaded and launched the way `orchestrator run` does.

    Args:
        settings: the effective settings.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry, _ = build_registry(settings)

    async def load(self) -> LocalPlugins:
        await self.registry.load()
        return self

    def all(self) -> list[PluginInfo]:
        return self.registry.all()

    def find(self, name: str) -> PluginInfo | None:
        return self.registry.get(name)

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

    async def flags(self) -> dict[str, bool]:
        """Enable/disable flags as every instance sees them (Redis), if a Redis is reachable (never starts one)."""
        try:
            async with redis_connection(self.settings, start_embedded=False) as (redis, _):
                return await build_client(self.settings, redis, None).enabled_flags()
        except (ConfigError, StartupError, RedisError, OSError):  # listing plugins must work without Redis
            return {}

    async def install(self, names: list[str]) -> dict[str, str | None]:
        return await self.registry.install(names)

    def create(self, name: str) -> Path:
        """Scaffold a new plugin folder; returns its path."""
        from orchestrator.plugins.scaffold import create_plugin

        return create_plugin(self.settings.plugins_dir, name)

    def client(self, redis: ArqRedis) -> Client:
        """A client that validates against this plugins folder."""
        return build_client(self.settings, redis, self.registry)

    async def test(self, name: str, params: dict[str, Any], *, timeout_s: float | None = None) -> RunResult:
        """Run the plugin once now through the launcher, no queue (builds its venv if needed)."""
        info = self.get(name)
        if info.manifest is None:
            msg = f"plugin {name} is invalid: {info.reason}"
            raise PluginError(msg)
        params = validate_params(info.manifest, params)
        info = await self.registry.ensure_ready(name)
        assert info.manifest is not None and info.python is not None  # ensure_ready raises otherwise
        timeout = timeout_s or info.manifest.timeout or self.settings.job_timeout_s
        context = {"job_id": "test", "attempt": 1, "source": "cli"}
        async with await build_launcher(self.settings, prestart=False) as launcher:
            return await launcher.run(info, params, context, python=info.python, timeout_s=timeout)


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
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_s=settings.redis_wait_timeout_s,
    )


async def cdc_admin(settings: Settings, redis: ArqRedis, registry: PluginRegistry | None) -> CdcAdmin:
    """Change capture for the CLI (`orchestrator cdc ...`): rules, install, test, replay, snapshot."""
    from orchestrator.cdc.admin import CdcAdmin  # asyncmy: only for the commands that reach MySQL

    return CdcAdmin(settings, redis, await build_client(settings, redis, registry).submitter())


@dataclass
class RunState:
    """What the monitor reads about this process."""

    instance_id: str
    started_at: float = field(default_factory=time.time)
    redis_url: str = ""
    served_queues: dict[str, int] = field(default_factory=dict)
    role: str = "all"


@dataclass
class Parts:
    """The shared objects components are built from (one of each per process)."""

    redis: ArqRedis
    store: JobStore
    registry: PluginRegistry
    launcher: Launcher
    client: Client
    observer: JobObserver
    loop: LoopMonitor


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
        self.supervisor: Supervisor | None = None

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
                if await self._wait_for_redis(redis, url):
                    await self._run_with(redis)
        finally:
            if embedded is not None and embedded.started_here:
                await embedded.shutdown()

    async def _wait_for_redis(self, redis: ArqRedis, url: str) -> bool:
        """Wait (with backoff) until Redis answers; False when stopped meanwhile.

        While it waits, /live answers 200 and /health 503 naming redis (StartupProbes), so an
        orchestrator started before its Redis (a compose stack) is alive but not ready.
        """
        settings = self.settings
        probes = StartupProbes(settings.http_host, settings.http_port)
        waiting = asyncio.create_task(
            redis_conn.wait_until_up(
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

    async def _run_with(self, redis: ArqRedis) -> None:
        settings = self.settings
        registry, _ = build_registry(settings)
        await registry.load()
        self._log_plugins(registry)
        store = JobStore(redis, result_ttl_s=settings.result_ttl_s)
        await publish_plugins(store, registry.all(), queues={q: s.concurrency for q, s in settings.queues.items()})
        # prestart: a `process` plugin that ran recently has its next child already started.
        async with await build_launcher(settings) as launcher:  # stops warm pooled children and prestarted spares last
            parts = Parts(
                redis,
                store,
                registry,
                launcher,
                build_client(settings, redis, registry),
                JobObserver(log_jobs=settings.log_jobs),
                LoopMonitor(threshold_s=settings.loop_lag_threshold_s, window_s=settings.loop_lag_window_s),
            )
            await self._serve(parts)

    def _build_components(self, parts: Parts) -> tuple[list[Component], LeaderLease]:
        """The one place that decides which components this process runs, in start order."""
        settings, state = self.settings, self.state
        lease = LeaderLease(
            parts.redis, state.instance_id, ttl_s=settings.leader_ttl_s, eligible=self.role in {"all", "leader"}
        )
        pool: WorkerPool | None = None
        if self.role != "leader":
            runner = JobRunner(
                parts.store,
                parts.registry,
                parts.launcher,
                instance_id=state.instance_id,
                log_tail_bytes=settings.log_tail_bytes,
                observer=parts.observer,
            )
            pool = WorkerPool(
                parts.redis,
                state.served_queues,
                runner,
                parts.store,
                instance_id=state.instance_id,
                poll_delay_s=settings.poll_delay_s,
                shutdown_grace_s=settings.shutdown_grace_s,
            )
        heartbeat = Heartbeat(
            parts.store,
            state.instance_id,
            {"version": version(), "queues": state.served_queues, "role": self.role, "started_at": time.time()},
            interval_s=settings.heartbeat_interval_s,
            ttl_s=settings.instance_ttl_s,
            on_evicted=pool.abandon_running if pool is not None else None,
        )

        budget = redis_conn.connection_budget(state.served_queues, leader_eligible=self.role in {"all", "leader"})
        if budget["total"] > settings.redis_max_connections:
            logger.warning(
                "redis: this instance may need %d connections at its busiest, above redis_max_connections=%d: "
                "callers will wait for a free one", budget["total"], settings.redis_max_connections,
            )  # fmt: skip

        async def republish_plugins() -> None:
            await publish_plugins(parts.store, parts.registry.all())

        builder = VenvBuilder(parts.registry, republish_plugins)

        async def reloaded() -> None:
            await republish_plugins()
            builder.request()  # a new plugin with dependencies gets its venv now, not at its first job

        async def republish_all() -> None:
            queues = {q: s.concurrency for q, s in settings.queues.items()}
            await publish_plugins(parts.store, parts.registry.all(), queues=queues)

        assert self.http is not None
        components: list[Component] = [
            self.http,  # bound first (a taken port fails the start-up); drained last, so probes answer to the end
            parts.loop,
            RedisProbe(parts.redis, state.redis_url, budget=budget),
            lease,
            heartbeat,
            builder,
            PluginReloader(parts.redis, parts.registry, reloaded, watch=settings.plugins_watch),
        ]
        if pool is not None:
            components.append(pool)
            workers = pool.workers.values()
            components.append(
                Reconciler(
                    parts.store,
                    state.instance_id,
                    lambda: {job_id for w in workers for job_id in w.job_tasks},
                    every_s=settings.instance_ttl_s,
                    republish=republish_all,
                )
            )
        components.append(Housekeeping(parts.store))
        # schedules (begin): leader-only; config schedules are synced when this instance starts leading
        components.append(
            Scheduler(ScheduleStore(parts.redis), parts.client.submitter, lease, config=settings.schedules)
        )
        # schedules (end)
        # -- change capture (cdc/): the poller on the leader, or a stand-in saying why it is off --
        submitter = Submitter(
            parts.store, RegistryCatalog(parts.registry, parts.store), set(settings.queues), job_defaults(settings)
        )
        components.append(build_capture(settings, submitter, lease, parts.redis))
        # -- search index (index/): with ES_HOSTS, its probe, and the sink (leader-only) when a rule indexes --
        components.extend(build_index_components(settings, parts.redis))
        # -- search index (end) --
        return components, lease

    async def _serve(self, parts: Parts) -> None:
        settings = self.settings
        self.http = HttpServer(self._monitor_context(parts), settings.http_host, settings.http_port)
        await self.http.start()
        try:
            components, lease = self._build_components(parts)
            heartbeat = next(c for c in components if isinstance(c, Heartbeat))
            await heartbeat.register()
            self.supervisor = Supervisor(components, lease)
        except BaseException:
            await self.http.close()
            raise
        logger.info(
            "orchestrator %s started: instance=%s role=%s queues=%s components=%s",
            version(), self.state.instance_id, self.role,
            ",".join(f"{q}({c})" for q, c in self.state.served_queues.items()) or "none",
            ",".join(c.name for c in components),
        )  # fmt: skip
        self.ready.set()
        # Generous: the workers' own grace, then their put-back (bounded by kill_grace_s), then the rest.
        drain_timeout_s = settings.shutdown_grace_s + settings.kill_grace_s + 10.0
        await self.supervisor.run(self.stop_event, drain_timeout_s=drain_timeout_s)
        pool = next((c for c in components if isinstance(c, WorkerPool)), None)
        s = pool.stats() if pool is not None else {"completed": 0, "failed": 0, "retried": 0}
        logger.info(
            "shutdown complete ◆ %d jobs succeeded ◆ %d failed ◆ %d retried",
            s["completed"], s["failed"], s["retried"],
        )  # fmt: skip

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

    def _monitor_context(self, parts: Parts) -> MonitorContext:
        async def health() -> dict[str, ComponentHealth]:
            return await self.supervisor.health() if self.supervisor else {}

        async def status() -> dict[str, Any]:
            body = await self.supervisor.status() if self.supervisor else {}
            return {"role": self.role, **body}

        return MonitorContext(
            version=version(),
            instance_id=self.state.instance_id,
            started_at=self.state.started_at,
            store=parts.store,
            registry=parts.registry,
            client=parts.client,
            health=health,
            status=status,
            metrics=Metrics(parts.redis, parts.observer if self.role != "leader" else None, parts.loop),
            api_token=self.settings.api_token.get_secret_value() if self.settings.api_token else None,
        )
