"""The aiohttp status endpoint: probes, status, metrics and a small JSON API.

Reads are open. Anything that changes state needs `Authorization: Bearer $ORCH_API_TOKEN` and is
refused (403, with the reason) when no token is configured.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from redis.exceptions import RedisError

from orchestrator.components import BaseComponent, ComponentHealth
from orchestrator.errors import JobError, NotFoundError, OrchestratorError, StartupError
from orchestrator.jobs.state import JobStore
from orchestrator.monitor.health import overall
from orchestrator.plugins.registry import PluginRegistry

if TYPE_CHECKING:
    from orchestrator.client import Client
    from orchestrator.monitor.metrics import Metrics

logger = logging.getLogger(__name__)


@dataclass
class MonitorContext:
    """Everything the routes read, handed over by the app.

    Writes go through the app's `Client` itself (no restated protocol that could drift from it).
    `health` and `status` are the supervisor's: assembled from the running components.
    """

    version: str
    instance_id: str
    started_at: float
    store: JobStore
    registry: PluginRegistry
    client: Client
    health: Callable[[], Awaitable[dict[str, ComponentHealth]]]
    status: Callable[[], Awaitable[dict[str, Any]]]
    api_token: str | None
    # Built on the first scrape: a process nobody scrapes does not load prometheus-client.
    metrics: Metrics | None = None


CONTEXT = web.AppKey("context", MonitorContext)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def _ctx(request: web.Request) -> MonitorContext:
    return request.app[CONTEXT]


def _authorize(request: web.Request) -> None:
    token = _ctx(request).api_token
    if not token:
        raise web.HTTPForbidden(
            text=json.dumps({"error": "writes are disabled: set ORCH_API_TOKEN to enable them"}),
            content_type="application/json",
        )
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "missing or wrong bearer token"}), content_type="application/json"
        )


async def live(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def health(request: web.Request) -> web.Response:
    status, body = overall(await _ctx(request).health())
    return _json(body, status)


async def status(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    stats = await ctx.client.stats()
    plugins = ctx.registry.all()
    body = {
        "version": ctx.version,
        "instance_id": ctx.instance_id,
        "uptime_s": round(time.time() - ctx.started_at, 1),
        "queues": stats["queues"],
        "jobs": stats["states"],
        "plugins": {
            "valid": [p.name for p in plugins if p.state != "invalid"],
            "invalid": {p.name: p.reason for p in plugins if p.state == "invalid"},
        },
        **(await ctx.status()),
    }
    return _json(body)


async def metrics(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    stats = await ctx.client.stats()
    _, body = overall(await ctx.health())
    if ctx.metrics is None:
        from orchestrator.monitor.metrics import Metrics

        ctx.metrics = Metrics()
    status_body = await ctx.status()
    workers = status_body.get("workers", {})
    ctx.metrics.observe_cdc(status_body.get("cdc"))  # change capture's counters (as the leader published them)
    payload = ctx.metrics.render(stats, workers, body["status"] == "ok")
    return web.Response(body=payload, content_type="text/plain", charset="utf-8")


async def list_plugins(request: web.Request) -> web.Response:
    return _json([p.to_json() for p in _ctx(request).registry.all()])


async def get_plugin(request: web.Request) -> web.Response:
    info = _ctx(request).registry.get(request.match_info["name"])
    if info is None:
        raise NotFoundError(f"no plugin {request.match_info['name']!r}")
    return _json(info.to_json())


async def list_jobs(request: web.Request) -> web.Response:
    q = request.query
    try:
        limit = min(int(q.get("limit", "50")), 1000)
    except ValueError as e:
        raise JobError("limit must be an integer") from e
    return _json(await _ctx(request).store.list_jobs(state=q.get("state"), plugin=q.get("plugin"), limit=limit))


async def get_job(request: web.Request) -> web.Response:
    from orchestrator.jobs.model import record_to_json

    record = await _ctx(request).store.get(request.match_info["job_id"])
    if record is None:
        raise NotFoundError(f"no job {request.match_info['job_id']!r}")
    return _json(record_to_json(record))


async def stats(request: web.Request) -> web.Response:
    return _json(await _ctx(request).client.stats())


async def get_batch(request: web.Request) -> web.Response:
    return _json(await _ctx(request).client.batch_status(request.match_info["batch_id"]))


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except json.JSONDecodeError as e:
        raise JobError(f"body is not JSON: {e}") from e
    if not isinstance(body, dict):
        raise JobError("body must be a JSON object")
    return body


async def post_job(request: web.Request) -> web.Response:
    _authorize(request)
    body = await _body(request)
    if not isinstance(body.get("plugin"), str):
        raise JobError("'plugin' is required")
    triggered = await _ctx(request).client.trigger(
        body["plugin"],
        body.get("params") or {},
        priority=body.get("priority"),
        queue=body.get("queue"),
        job_id=body.get("job_id"),
        defer_s=body.get("defer_s"),
        source="http",
    )
    return _json({"job_id": triggered.job_id, "created": triggered.created}, 201 if triggered.created else 200)


async def post_batch(request: web.Request) -> web.Response:
    _authorize(request)
    body = await request.json()
    entries = body.get("jobs") if isinstance(body, dict) else body
    if not isinstance(entries, list):
        raise JobError('body must be a JSON list of {"plugin", "params"} (or {"jobs": [...]})')
    return _json(await _ctx(request).client.batch(entries), 201)


async def cancel_job(request: web.Request) -> web.Response:
    _authorize(request)
    state = await _ctx(request).client.cancel(request.match_info["job_id"])
    return _json({"job_id": request.match_info["job_id"], "state": state})


async def retry_job(request: web.Request) -> web.Response:
    _authorize(request)
    new_id = await _ctx(request).client.retry(request.match_info["job_id"])
    return _json({"job_id": new_id, "retry_of": request.match_info["job_id"]}, 201)


async def toggle_plugin(request: web.Request) -> web.Response:
    _authorize(request)
    name, action = request.match_info["name"], request.match_info["action"]
    if _ctx(request).registry.get(name) is None:
        raise NotFoundError(f"no plugin {name!r}")
    await _ctx(request).client.set_enabled(name, action == "enable")
    return _json({"name": name, "enabled": action == "enable"})


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The error tree -> status codes, as JSON bodies."""
    try:
        return await handler(request)
    except NotFoundError as e:
        return _json({"error": str(e)}, 404)
    except OrchestratorError as e:
        problems = getattr(e, "problems", None)
        return _json({"error": str(e), **({"problems": problems} if problems else {})}, 400)
    except (RedisError, OSError) as e:
        return _json({"error": f"redis unavailable: {e}"}, 503)


def build_app(context: MonitorContext) -> web.Application:
    app = web.Application(middlewares=[errors_middleware])
    app[CONTEXT] = context
    app.router.add_get("/live", live)
    app.router.add_get("/health", health)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/plugins", list_plugins)
    app.router.add_get("/api/plugins/{name}", get_plugin)
    app.router.add_post("/api/plugins/{name}/{action:enable|disable}", toggle_plugin)
    app.router.add_get("/api/jobs", list_jobs)
    app.router.add_post("/api/jobs", post_job)
    app.router.add_get("/api/jobs/{job_id}", get_job)
    app.router.add_post("/api/jobs/{job_id}/cancel", cancel_job)
    app.router.add_post("/api/jobs/{job_id}/retry", retry_job)
    app.router.add_get("/api/stats", stats)
    app.router.add_post("/api/batches", post_batch)
    app.router.add_get("/api/batches/{batch_id}", get_batch)
    return app


class HttpServer(BaseComponent):
    """Runs the aiohttp app without letting it take signals (AppRunner default)."""

    name = "http"

    def __init__(self, context: MonitorContext, host: str, port: int) -> None:
        self.app = build_app(context)
        self.host = host
        self.port = port
        self.bound_port: int | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind before anything else starts, so a taken port fails the start-up, not a running process."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            msg = f"http_port: cannot listen on {self.host}:{self.port}: {e.strerror or e}"
            raise StartupError(msg) from e
        server = site._server  # the only way to learn the port when binding port 0
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self.port
        logger.info("http: listening on http://%s:%s", self.host, self.bound_port)

    async def run(self) -> None:
        """Serve until cancelled (`start` first)."""
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def status(self) -> dict[str, Any]:
        return {"http": {"host": self.host, "port": self.bound_port}}
