"""`/api/schedules`: list, get, add, remove, pause, resume, run now, history.

Reads are open; writes need the bearer token, exactly like the other write routes (http.py).
Everything goes through the app's Client, so the HTTP API validates as the CLI and the Python API do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from orchestrator.errors import JobError
from orchestrator.monitor.http import CONTEXT, _authorize, _body, _json

if TYPE_CHECKING:
    from orchestrator.client import Client


def _client(request: web.Request) -> Client:
    return request.app[CONTEXT].client


async def list_schedules(request: web.Request) -> web.Response:
    return _json(await _client(request).list_schedules())


async def get_schedule(request: web.Request) -> web.Response:
    return _json(await _client(request).get_schedule(request.match_info["id"]))


async def add_schedule(request: web.Request) -> web.Response:
    _authorize(request)
    body = await _body(request)
    replace = bool(body.pop("replace", False)) or request.query.get("replace") in {"1", "true"}
    return _json(await _client(request).add_schedule(body, replace=replace), 201)


async def remove_schedule(request: web.Request) -> web.Response:
    _authorize(request)
    await _client(request).remove_schedule(request.match_info["id"])
    return _json({"id": request.match_info["id"], "action": "removed"})


async def act(request: web.Request) -> web.Response:
    _authorize(request)
    schedule_id, action = request.match_info["id"], request.match_info["action"]
    client = _client(request)
    if action == "run":
        return _json({"id": schedule_id, "job_id": await client.run_schedule(schedule_id)}, 201)
    await (client.pause_schedule if action == "pause" else client.resume_schedule)(schedule_id)
    return _json(await client.get_schedule(schedule_id))


async def history(request: web.Request) -> web.Response:
    try:
        limit = min(int(request.query.get("limit", "50")), 200)
    except ValueError as e:
        raise JobError("limit must be an integer") from e
    return _json(await _client(request).schedule_history(request.match_info["id"], limit=limit))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/schedules", list_schedules)
    app.router.add_post("/api/schedules", add_schedule)
    app.router.add_get("/api/schedules/{id}", get_schedule)
    app.router.add_delete("/api/schedules/{id}", remove_schedule)
    app.router.add_post("/api/schedules/{id}/remove", remove_schedule)
    app.router.add_post("/api/schedules/{id}/{action:pause|resume|run}", act)
    app.router.add_get("/api/schedules/{id}/history", history)
