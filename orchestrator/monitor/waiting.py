"""The probes of a process that waits for Redis at start-up: /live 200, /health 503 naming redis.

The full status endpoint needs Redis (its routes read job records), so until Redis answers this
small server holds the HTTP port; it is closed just before the real one binds the same port.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from orchestrator.components import ComponentHealth
from orchestrator.monitor.health import overall

logger = logging.getLogger(__name__)


class StartupProbes:
    """Serves /live and /health while `run` waits for Redis.

    Args:
        host: the http_host setting.
        port: the http_port setting (the real server binds it afterwards).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reason = "waiting for redis"
        self.bound_port: int | None = None
        self._runner: web.AppRunner | None = None

    async def start(self, reason: str) -> None:
        """Bind (once); a port that cannot be bound is only logged: the real server reports it later."""
        self.reason = reason
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/live", self._live)
        app.router.add_get("/health", self._health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            logger.warning("http: cannot listen on %s:%s while waiting for redis: %s", self.host, self.port, e)
            return
        self._runner = runner
        sockets = getattr(site._server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self.port
        logger.info("http: probes on http://%s:%s while waiting for redis", self.host, self.bound_port)

    async def _live(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _health(self, request: web.Request) -> web.Response:
        status, body = overall({"redis": ComponentHealth.failing(self.reason)})
        return web.json_response(body, status=status, dumps=json.dumps)

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
