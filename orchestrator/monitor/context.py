"""What the HTTP routes read, handed over by the app, and how a handler reaches it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from orchestrator.components import ComponentHealth
from orchestrator.jobs.store import JobStore
from orchestrator.monitor.access import Access
from orchestrator.plugins.registry import PluginRegistry

if TYPE_CHECKING:
    from orchestrator.client import Client
    from orchestrator.monitor.metrics import Metrics


@dataclass
class MonitorContext:
    """Everything the routes read, handed over by the app.

    Writes go through the app's `Client` itself (no restated protocol that could drift from it).
    `health` and `status` are the supervisor's: assembled from the running components. `metrics`
    is the process's Metrics (it holds the job counters the runner feeds). `access`: who may
    read and write what (access.py).
    """

    version: str
    instance_id: str
    started_at: float
    store: JobStore
    registry: PluginRegistry
    client: Client
    health: Callable[[], Awaitable[dict[str, ComponentHealth]]]
    status: Callable[[], Awaitable[dict[str, Any]]]
    access: Access
    metrics: Metrics | None = None


CONTEXT = web.AppKey("context", MonitorContext)


def ctx(request: web.Request) -> MonitorContext:
    return request.app[CONTEXT]
