"""The route handlers of the status endpoint, and how they read and check their input.

Input errors are raised, never answered here: the one error path (http.errors_middleware) turns
them into a 4xx with a JSON `{"error": ...}` naming the field.
"""

from __future__ import annotations

import json
import time
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from orchestrator import nesting
from orchestrator.errors import NotFoundError
from orchestrator.monitor import api_models as m
from orchestrator.monitor.access import require_write
from orchestrator.monitor.context import ctx
from orchestrator.monitor.health import overall
from orchestrator.monitor.status import StatusBody, instance_entries, process_status

Model = TypeVar("Model", bound=BaseModel)
_JSON_TYPES = ("application/json", "application/vnd.api+json")


class BadRequest(Exception):
    """Input that does not validate: 400 with the field named (or another 4xx via `status`)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def authorize(request: web.Request) -> None:
    """A write: 403 when no token is configured, 401 without the right one."""
    require_write(ctx(request).access, request)


def describe(error: ValidationError, where: str) -> str:
    """One line naming every bad field (never echoing the value)."""
    problems = []
    for err in error.errors():
        field = ".".join(str(p) for p in err["loc"]) or where
        problems.append(f"{field}: {err['msg']}")
    return f"invalid {where}: " + "; ".join(problems)


async def body(request: web.Request, model: type[Model], *, list_key: str | None = None) -> Model:
    """The request body as `model`; a bare JSON list is taken as `{list_key: [...]}`."""
    content_type = request.headers.get("Content-Type", "")
    if content_type and content_type.split(";")[0].strip().lower() not in _JSON_TYPES:
        raise BadRequest(f"unsupported Content-Type {content_type.split(';')[0]!r}: send application/json", 415)
    raw = await request.read()  # over client_max_size: 413 from aiohttp
    try:
        data = nesting.loads(raw.decode("utf-8")) if raw.strip() else {}
    except UnicodeDecodeError as e:
        raise BadRequest(f"body is not UTF-8: {e.reason} at byte {e.start}") from e
    except json.JSONDecodeError as e:
        raise BadRequest(f"body is not JSON: {e}") from e
    except nesting.TooDeep as e:
        raise BadRequest(f"body is {e}") from e
    if list_key is not None and isinstance(data, list):
        data = {list_key: data}
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise BadRequest(describe(e, "body")) from e


def query(request: web.Request, model: type[Model]) -> Model:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as e:
        raise BadRequest(describe(e, "query")) from e


# -- probes and status --
async def live(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def health(request: web.Request) -> web.Response:
    status, data = overall(await ctx(request).health())
    return json_response(data, status)


async def status(request: web.Request) -> web.Response:
    c = ctx(request)
    stats = await c.client.stats()
    plugins = c.registry.all()
    data: StatusBody = {
        "version": c.version,
        "instance_id": c.instance_id,
        "uptime_s": round(time.time() - c.started_at, 1),
        "queues": stats["queues"],
        "jobs": stats["states"],
        "plugins": {
            "valid": [p.name for p in plugins if p.state != "invalid"],
            "invalid": {p.name: p.reason for p in plugins if p.state == "invalid"},
        },
        "instances": instance_entries(await c.client.instances()),
        "throttles": await c.client.throttles(),
        **process_status(await c.status()),
    }
    return json_response(data)


async def metrics(request: web.Request) -> web.Response:
    c = ctx(request)
    stats = await c.client.stats()
    _, data = overall(await c.health())
    assert c.metrics is not None  # noqa: S101  build() always gives the HTTP server its metrics
    status, instances = process_status(await c.status()), instance_entries(await c.client.instances())
    payload = await c.metrics.render(
        stats, status, instances, healthy=data["status"] == "ok", throttles=await c.client.throttles()
    )
    return web.Response(body=payload, content_type="text/plain", charset="utf-8")


# -- plugins --
async def list_plugins(request: web.Request) -> web.Response:
    c = ctx(request)
    flags = await c.client.enabled_flags()
    throttles = await c.client.throttles()
    return json_response(
        [
            {**p.to_json(), "enabled": flags.get(p.name, p.enabled), "throttle": throttles.get(p.name)}
            for p in c.registry.all()
        ]
    )


async def get_plugin(request: web.Request) -> web.Response:
    c = ctx(request)
    name = request.match_info["name"]
    info = c.registry.get(name)
    if info is None:
        raise NotFoundError(f"no plugin {name!r}")
    flags = await c.client.enabled_flags()
    return json_response({**info.to_json(), "enabled": flags.get(name, info.enabled)})


async def toggle_plugin(request: web.Request) -> web.Response:
    authorize(request)
    name, action = request.match_info["name"], request.path.rsplit("/", 1)[1]  # .../enable or .../disable
    if ctx(request).registry.get(name) is None:
        raise NotFoundError(f"no plugin {name!r}")
    await ctx(request).client.set_enabled(name, action == "enable")
    return json_response({"name": name, "enabled": action == "enable"})


async def reload_plugins(request: web.Request) -> web.Response:
    authorize(request)
    name = request.match_info.get("name")
    await ctx(request).client.reload_plugins(name)
    return json_response({"requested": True, "plugin": name}, 202)


async def get_throttle(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return json_response(await _throttle_view(request, name))


async def put_throttle(request: web.Request) -> web.Response:
    authorize(request)
    name = request.match_info["name"]
    if ctx(request).registry.get(name) is None:
        raise NotFoundError(f"no plugin {name!r}")
    b = await body(request, m.ThrottleBody)
    client = ctx(request).client
    if b.reset:
        await client.reset_throttle(name)
    else:
        changes = {k: getattr(b, k) for k in b.model_fields_set - {"reset"}}
        try:
            await client.set_throttle(name, **changes)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            raise BadRequest(f"{name}: {problems}") from e
    return json_response(await _throttle_view(request, name))


async def _throttle_view(request: web.Request, name: str) -> dict[str, Any]:
    client = ctx(request).client
    limits = await client.throttle(name)
    use = (await client.throttles()).get(name)
    return {
        "plugin": name,
        "limits": limits.model_dump(exclude_none=True) if limits else None,
        "live": bool(use and use["live"]),
        "throttled": use["throttled"] if use else 0,
        "refused": use["refused"] if use else 0,
        "over_cap": use["over_cap"] if use else 0,
        "keys": list(use["keys"]) if use else [],
    }


# -- jobs --
async def list_jobs(request: web.Request) -> web.Response:
    q = query(request, m.JobsQuery)
    page = await ctx(request).client.jobs_page(
        state=q.state, plugin=q.plugin, queue=q.queue, offset=q.offset, limit=q.limit
    )
    return json_response(page)


async def get_job(request: web.Request) -> web.Response:
    job = await ctx(request).client.status(request.match_info["job_id"])
    if job is None:
        raise NotFoundError(f"no job {request.match_info['job_id']!r}")
    return json_response(job)


async def post_job(request: web.Request) -> web.Response:
    authorize(request)
    b = await body(request, m.TriggerBody)
    triggered = await ctx(request).client.trigger(
        b.plugin, b.params, priority=b.priority, queue=b.queue, job_id=b.job_id, defer_s=b.defer_s, source="http",
        trace_parent={k: v for k in ("traceparent", "tracestate") if (v := request.headers.get(k))} or None,
    )  # fmt: skip
    return json_response({"job_id": triggered.job_id, "created": triggered.created}, 201 if triggered.created else 200)


async def cancel_job(request: web.Request) -> web.Response:
    authorize(request)
    state = await ctx(request).client.cancel(request.match_info["job_id"])
    return json_response({"job_id": request.match_info["job_id"], "state": state})


async def retry_job(request: web.Request) -> web.Response:
    authorize(request)
    new_id = await ctx(request).client.retry(request.match_info["job_id"])
    return json_response({"job_id": new_id, "retry_of": request.match_info["job_id"]}, 201)


async def delete_job(request: web.Request) -> web.Response:
    authorize(request)
    await ctx(request).client.delete(request.match_info["job_id"])
    return json_response({"deleted": 1})


async def purge_jobs(request: web.Request) -> web.Response:
    authorize(request)
    b = await body(request, m.PurgeBody)
    deleted = await ctx(request).client.purge(state=b.state, older_than_s=b.older_than_s, plugin=b.plugin)
    return json_response({"deleted": deleted})


async def stats(request: web.Request) -> web.Response:
    return json_response(await ctx(request).client.stats())


# -- batches --
async def post_batch(request: web.Request) -> web.Response:
    authorize(request)
    b = await body(request, m.BatchBody, list_key="jobs")
    entries = [e.model_dump(exclude_none=True) for e in b.jobs]
    return json_response(await ctx(request).client.batch(entries), 201)


async def get_batch(request: web.Request) -> web.Response:
    return json_response(await ctx(request).client.batch_status(request.match_info["batch_id"]))
