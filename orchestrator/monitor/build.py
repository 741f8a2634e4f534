"""The monitor package's components: the HTTP server (routes, dashboard, metrics), the loop probe, the Redis probe."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from orchestrator.components import Component, ComponentHealth
from orchestrator.jobs.shared import Shared
from orchestrator.monitor.access import Access
from orchestrator.monitor.context import MonitorContext
from orchestrator.monitor.health import RedisProbe
from orchestrator.monitor.http import HttpServer
from orchestrator.monitor.loop import LoopMonitor
from orchestrator.monitor.metrics import Metrics
from orchestrator.monitor.settings import MonitorSettings
from orchestrator.monitor.waiting import StartupProbes

if TYPE_CHECKING:
    from orchestrator.client import Client


def build(
    section: MonitorSettings,
    shared: Shared,
    *,
    client: Client,
    health: Callable[[], Awaitable[dict[str, ComponentHealth]]],
    status: Callable[[], Awaitable[dict[str, Any]]],
    redis_url: str,
    budget: dict[str, int],
) -> list[Component]:
    """In start order: `http` first (bound before anything else, so a taken port fails the start-up;
    drained last, so probes answer to the end). `health` and `status` are the supervisor's."""
    identity = shared.identity
    loop = LoopMonitor(threshold_s=section.loop_lag_threshold_s, window_s=section.loop_lag_window_s)
    context = MonitorContext(
        version=identity.version,
        instance_id=identity.instance_id,
        started_at=identity.started_at,
        store=shared.store,
        registry=shared.registry,
        client=client,
        health=health,
        status=status,
        # a `--role leader` process runs no jobs: no job counters of its own
        metrics=Metrics(shared.redis, shared.observer if identity.served_queues else None, loop),
        access=Access(
            token=section.api_token.get_secret_value() if section.api_token else None,
            bind=section.http_host,
            allowed_hosts=tuple(section.http_allowed_hosts),
        ),
    )
    return [
        HttpServer(context, section.http_host, section.http_port, idle_timeout_s=section.http_idle_timeout_s),
        loop,
        RedisProbe(shared.redis, redis_url, budget=budget),
    ]


def startup_probes(section: MonitorSettings) -> StartupProbes:
    """/live and /health while `run` waits for Redis (the real server binds the port afterwards)."""
    return StartupProbes(section.http_host, section.http_port)
