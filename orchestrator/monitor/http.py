"""The aiohttp status endpoint: probes, status, metrics and a small JSON API (routes.ROUTES).

Probes, counts and metrics are open. Job data and writes need `Authorization: Bearer
$ORCH_API_TOKEN` (access.py says exactly who may read what, and which Host names are answered). No
input gives a 5xx: every error is answered by one middleware as JSON `{"error": ...}` with a 4xx
naming the field.

Limits: bodies over MAX_BODY_BYTES get 413; request lines and header fields over aiohttp's 8190
bytes get 400; a connection that has not sent a whole request (slow headers, a slowloris) or sits
idle between requests is closed after `idle_timeout_s` (aiohttp's keepalive_timeout: its timer
starts when the connection opens and is not pushed back by partial data).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from orchestrator.components import BaseComponent
from orchestrator.errors import ConflictError, NotFoundError, OrchestratorError, QueueFull, StartupError
from orchestrator.monitor.context import CONTEXT, MonitorContext
from orchestrator.monitor.handlers import BadRequest, json_response
from orchestrator.monitor.routes import ROUTES, Route, openapi, register
from orchestrator.monitor.status import HttpStatus

logger = logging.getLogger(__name__)

# A batch of 10,000 jobs with parameters fits; a 20 MB body does not (413 before it is read whole).
MAX_BODY_BYTES = 8 * 1024 * 1024


@web.middleware
async def host_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Refuse a Host this server does not answer to (DNS rebinding against a loopback bind)."""
    host = request.headers.get("Host")
    if not request.app[CONTEXT].access.host_allowed(host):
        error = f"Host {host!r} is not served here: add it to http_allowed_hosts (ORCH_HTTP_ALLOWED_HOSTS)"
        return json_response({"error": error}, 421)
    return await handler(request)


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The one error path: the error tree and aiohttp's own HTTP errors -> JSON bodies."""
    try:
        return await handler(request)
    except BadRequest as e:
        return json_response({"error": str(e)}, e.status)
    except NotFoundError as e:
        return json_response({"error": str(e)}, 404)
    except ConflictError as e:
        return json_response({"error": str(e)}, 409)
    except QueueFull as e:
        return json_response({"error": str(e), "plugin": e.plugin, "key": e.key, "max_queued": e.cap}, 429)
    except OrchestratorError as e:
        problems = getattr(e, "problems", None)
        return json_response({"error": str(e), **({"problems": problems} if problems else {})}, 400)
    except web.HTTPException as e:
        if e.content_type == "application/json":
            raise
        # 404/405 from the router, 413 from the body reader: keep the status, answer in JSON
        return json_response({"error": e.reason}, e.status)
    except (RedisError, OSError) as e:
        return json_response({"error": f"redis unavailable: {e}"}, 503)
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("http: %s %s failed", request.method, request.path)
        return json_response({"error": "internal error (see the orchestrator's log)"}, 500)


def build_app(context: MonitorContext, routes: tuple[Route, ...] = ROUTES) -> web.Application:
    app = web.Application(middlewares=[host_middleware, errors_middleware], client_max_size=MAX_BODY_BYTES)
    app[CONTEXT] = context
    register(app, routes)
    document: dict[str, Any] = {}  # built on the first request: most processes never serve it (~0.3 MB)

    async def openapi_json(request: web.Request) -> web.Response:
        if not document:
            document.update(openapi(routes, context.version))
        return json_response(document)

    app.router.add_get("/api/openapi.json", openapi_json)
    return app


class HttpServer(BaseComponent):
    """Runs the aiohttp app without letting it take signals (AppRunner default)."""

    name = "http"

    def __init__(self, context: MonitorContext, host: str, port: int, *, idle_timeout_s: float = 15.0) -> None:
        self.app = build_app(context)
        self.host = host
        self.port = port
        self.idle_timeout_s = idle_timeout_s
        self.counts_only = context.access.counts_only
        self.bound_port: int | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind before anything else starts, so a taken port fails the start-up, not a running process."""
        self._runner = web.AppRunner(self.app, access_log=None, keepalive_timeout=self.idle_timeout_s)
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
        if self.counts_only:
            logger.warning(
                "http: %s is not a loopback address and no ORCH_API_TOKEN is set: serving probes, counts and "
                "metrics only (job data needs the token)",
                self.host,
            )

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

    async def status(self) -> HttpStatus:
        return {"host": self.host, "port": self.bound_port}
