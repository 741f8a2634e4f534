"""Every route of the status endpoint in one table: it registers the routes and writes their OpenAPI
document, so the two cannot drift apart."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from orchestrator.monitor import api_models as m
from orchestrator.monitor import dashboard_routes as d
from orchestrator.monitor import handlers as h
from orchestrator.monitor import (
    schedules_api,  # schedules
    workflows_api,  # workflows
)
from orchestrator.monitor.access import require_read
from orchestrator.monitor.context import ctx
from orchestrator.monitor.status import StatusBody

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_ERRORS = {
    400: "invalid input (the error names the field)",
    401: "missing or wrong bearer token",
    403: "no ORCH_API_TOKEN is configured: writes are disabled, and job data is served only on a loopback bind",
    404: "no such job, batch, plugin or workflow",
    409: "the job's state does not allow it",
    413: "body too large",
    415: "body is not application/json",
    503: "Redis is unavailable",
}


@dataclass(frozen=True)
class Route:
    """One route: how it is served and how it is described.

    Args:
        method, path: as aiohttp registers them (`{name}` for a path parameter).
        handler: the coroutine.
        summary: one line for the OpenAPI document.
        response: the 2xx body's model (a list of it when `many`), a pydantic model or a TypedDict
            (the type the handler builds it as); None for a non-JSON body.
        status: the success status.
        body: the request body's model.
        query: the query string's model.
        write: needs the bearer token.
        data: returns job data (params, results, errors, logs, plugin details): needs the bearer
            token when one is configured, and without one is served only on a loopback bind
            (access.py). Probes, counts and metrics leave it False.
        content_type: of the success body.
    """

    method: str
    path: str
    handler: Handler
    summary: str
    response: type[Any] | None = None
    many: bool = False
    status: int = 200
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    write: bool = False
    data: bool = False
    content_type: str = "application/json"
    errors: tuple[int, ...] = field(default=(400, 503))


ROUTES: tuple[Route, ...] = (
    Route("GET", "/", d.index, "the dashboard page", content_type="text/html", errors=()),
    Route("GET", "/dashboard/{name}", d.asset, "the dashboard's script and style sheet", content_type="text/plain",
          errors=(404,)),
    Route("GET", "/live", h.live, "200 while the event loop answers", m.LiveOut, errors=()),
    Route("GET", "/health", h.health, "200 when every component is healthy, else 503 naming them", m.HealthOut),
    Route("GET", "/status", h.status, "version, leader, queues, jobs, components", StatusBody),
    Route("GET", "/metrics", h.metrics, "Prometheus text exposition", content_type="text/plain"),
    Route("GET", "/api/plugins", h.list_plugins, "every plugin with its state", m.PluginOut, many=True, data=True),
    Route("POST", "/api/plugins/reload", h.reload_plugins, "every instance re-reads the plugins folder",
          m.ReloadOut, status=202, write=True, errors=(401, 403, 503)),
    Route("GET", "/api/plugins/{name}", h.get_plugin, "one plugin", m.PluginOut, errors=(404, 503), data=True),
    Route("POST", "/api/plugins/{name}/enable", h.toggle_plugin, "allow triggers (every instance)",
          m.ToggledOut, write=True, errors=(401, 403, 404, 503)),
    Route("POST", "/api/plugins/{name}/disable", h.toggle_plugin, "refuse new triggers (every instance)",
          m.ToggledOut, write=True, errors=(401, 403, 404, 503)),
    # per-key use names param values (user_id=42): job data
    Route("GET", "/api/plugins/{name}/throttle", h.get_throttle, "a plugin's limits and their use, cluster-wide",
          m.ThrottleOut, errors=(404, 503), data=True),
    Route("PUT", "/api/plugins/{name}/throttle", h.put_throttle,
          "change a plugin's limits live on every instance (null removes one; reset: config again)", m.ThrottleOut,
          body=m.ThrottleBody, write=True, errors=(400, 401, 403, 404, 415, 503)),
    Route("POST", "/api/plugins/{name}/reload", h.reload_plugins, "every instance re-reads this plugin",
          m.ReloadOut, status=202, write=True, errors=(401, 403, 503)),
    Route("GET", "/api/jobs", h.list_jobs, "jobs, newest first", m.JobOut, many=True, query=m.JobsQuery, data=True),
    Route("POST", "/api/jobs", h.post_job, "enqueue a job (200 when the job id existed)", m.TriggeredOut,
          status=201, body=m.TriggerBody, write=True, errors=(400, 401, 403, 413, 415, 503)),
    Route("POST", "/api/jobs/purge", h.purge_jobs, "delete final jobs by state, age and plugin", m.DeletedOut,
          body=m.PurgeBody, write=True, errors=(400, 401, 403, 413, 415, 503)),
    Route("GET", "/api/jobs/{job_id}", h.get_job, "one job", m.JobOut, errors=(404, 503), data=True),
    Route("GET", "/api/jobs/{job_id}/logs", d.job_logs, "a job's captured output after a stream id", m.LogsOut,
          query=m.LogsQuery, errors=(400, 404, 503), data=True),
    Route("DELETE", "/api/jobs/{job_id}", h.delete_job, "delete a job that is not running", m.DeletedOut,
          write=True, errors=(401, 403, 404, 409, 503)),
    Route("POST", "/api/jobs/{job_id}/cancel", h.cancel_job, "remove a waiting job or stop a running one",
          m.JobStateOut, write=True, errors=(401, 403, 404, 503)),
    Route("POST", "/api/jobs/{job_id}/retry", h.retry_job, "run a failed or cancelled job again", m.RetriedOut,
          status=201, write=True, errors=(400, 401, 403, 404, 503)),
    Route("GET", "/api/stats", h.stats, "counts per state; depth, running and concurrency per queue", m.StatsOut),
    Route("POST", "/api/batches", h.post_batch, "enqueue jobs together: one bad entry and nothing is enqueued",
          m.BatchCreatedOut, status=201, body=m.BatchBody, write=True, errors=(400, 401, 403, 413, 415, 503)),
    Route("GET", "/api/batches/{batch_id}", h.get_batch, "a batch's progress", m.BatchOut, errors=(404, 503), data=True),
    Route("GET", "/api/throughput", d.throughput, "jobs enqueued and finished per bucket", m.ThroughputOut,
          query=m.ThroughputQuery),
    Route("GET", "/api/finished", d.finished, "the last jobs that reached a final state", m.JobOut, many=True,
          query=m.FinishedQuery, data=True),
    *schedules_api.routes(Route),  # schedules
    *workflows_api.routes(Route),  # workflows
)  # fmt: skip


def register(app: web.Application, routes: Sequence[Route]) -> None:
    for route in routes:
        app.router.add_route(route.method, route.path, _guarded(route.handler) if route.data else route.handler)


def _guarded(handler: Handler) -> Handler:
    """The handler behind the job-data check (the table says which routes: none can forget it)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        require_read(ctx(request).access, request)
        return await handler(request)

    return guarded


def openapi(routes: Sequence[Route], version: str) -> dict[str, Any]:
    """An OpenAPI 3.1 document for `routes` (pydantic's JSON Schemas are 3.1 schemas as they are)."""
    schemas: dict[str, Any] = {}

    def ref(model: type[Any]) -> dict[str, Any]:
        if model.__name__ not in schemas:
            schema = TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    paths: dict[str, Any] = {}
    for route in routes:
        op: dict[str, Any] = {"summary": route.summary, "operationId": _operation_id(route), "responses": {}}
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            for name in re.findall(r"{(\w+)}", route.path)
        ]
        if route.query is not None:
            props = route.query.model_json_schema()["properties"]
            params += [{"name": name, "in": "query", "required": False, "schema": s} for name, s in props.items()]
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(route.body)}}}
        if route.response is not None:
            schema = {"type": "array", "items": ref(route.response)} if route.many else ref(route.response)
            content = {"application/json": {"schema": schema}}
        else:
            content = {route.content_type: {"schema": {"type": "string"}}}
        op["responses"][str(route.status)] = {"description": "success", "content": content}
        if route.path == "/api/jobs" and route.method == "POST":
            op["responses"]["200"] = {"description": "a job with this id existed: nothing enqueued", "content": content}
        for code in sorted(set(route.errors) | ({401, 403} if route.write or route.data else set())):
            op["responses"][str(code)] = {
                "description": _ERRORS[code],
                "content": {"application/json": {"schema": ref(m.ErrorOut)}},
            }
        if route.path == "/health":
            op["responses"]["503"] = {"description": "a component is failing", "content": content}
        if route.write:
            op["security"] = [{"bearer": []}]
        elif route.data:  # the token, or nothing on a loopback bind without one
            op["security"] = [{"bearer": []}, {}]
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "orchestrator status endpoint and API", "version": version},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def _operation_id(route: Route) -> str:
    words = re.sub(r"[{}]", "", route.path).strip("/").replace("/", "_") or "root"
    return f"{route.method.lower()}_{words}"
