"""`/api/schedules`: list, get, add, remove, pause, resume, run now, history.

Reads return job data (params, job ids): they need the token as /api/jobs does; writes need it too. Everything goes
through the app's Client, so the HTTP API validates as the CLI and the Python API do. routes.py
adds `routes(Route)` to its table (this module does not import routes.py: no import cycle).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from pydantic import Field

from orchestrator.monitor.api_models import Priority, Request, Response
from orchestrator.monitor.context import ctx
from orchestrator.monitor.handlers import authorize, body, json_response, query

R = TypeVar("R")
Name = Annotated[str, Field(min_length=1, max_length=200)]


# -- shapes --
class ScheduleBody(Request):
    """A schedule to add (the same checks as `orchestrator schedules add`); give `cron` or `every`."""

    id: Annotated[str, Field(min_length=1, max_length=100)]
    plugin: Name
    params: dict[str, Any] = Field(default_factory=dict)
    cron: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    timezone: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    every: Annotated[str, Field(min_length=1, max_length=20)] | Annotated[int, Field(ge=1)] | None = None
    queue: Name | None = None
    priority: Priority | None = None
    misfire_grace_s: Annotated[float, Field(ge=1, le=366 * 86400)] | None = None
    overlap: Literal["skip", "allow"] = "skip"
    enabled: bool = True
    replace: bool = Field(default=False, description="replace a schedule with the same id")


class HistoryQuery(Request):
    limit: Annotated[int, Field(ge=1, le=200)] = 50


class ScheduleOut(Response):
    id: str
    plugin: str | None
    workflow: str | None = None
    params: dict[str, Any]
    cron: str | None
    every: str | None
    timezone: str
    enabled: bool
    trigger: str
    next_run_at: str | None
    last_run_at: str | None
    last_job_id: str | None
    last_state: str | None


class HistoryOut(Response):
    kind: Literal["fired", "manual", "skipped", "overlap", "error", "duplicate"]
    slot: str | None
    at: str | None
    job_id: str | None
    state: str | None
    duration_s: float | None
    reason: str | None
    count: int | None
    last_slot: str | None


class ScheduleRunOut(Response):
    id: str
    job_id: str


class ScheduleRemovedOut(Response):
    id: str
    action: Literal["removed"]


# -- handlers --
async def list_schedules(request: web.Request) -> web.Response:
    return json_response(await ctx(request).client.list_schedules())


async def get_schedule(request: web.Request) -> web.Response:
    return json_response(await ctx(request).client.get_schedule(request.match_info["id"]))


async def add_schedule(request: web.Request) -> web.Response:
    authorize(request)
    data = (await body(request, ScheduleBody)).model_dump(exclude_none=True)
    replace = data.pop("replace")
    return json_response(await ctx(request).client.add_schedule(data, replace=replace), 201)


async def remove_schedule(request: web.Request) -> web.Response:
    authorize(request)
    await ctx(request).client.remove_schedule(request.match_info["id"])
    return json_response({"id": request.match_info["id"], "action": "removed"})


async def pause_schedule(request: web.Request) -> web.Response:
    authorize(request)
    client = ctx(request).client
    await client.pause_schedule(request.match_info["id"])
    return json_response(await client.get_schedule(request.match_info["id"]))


async def resume_schedule(request: web.Request) -> web.Response:
    authorize(request)
    client = ctx(request).client
    await client.resume_schedule(request.match_info["id"])
    return json_response(await client.get_schedule(request.match_info["id"]))


async def run_schedule(request: web.Request) -> web.Response:
    authorize(request)
    schedule_id = request.match_info["id"]
    return json_response({"id": schedule_id, "job_id": await ctx(request).client.run_schedule(schedule_id)}, 201)


async def history(request: web.Request) -> web.Response:
    limit = query(request, HistoryQuery).limit
    return json_response(await ctx(request).client.schedule_history(request.match_info["id"], limit=limit))


def routes(make: Callable[..., R]) -> tuple[R, ...]:
    """The schedule routes, built with routes.Route (passed in: see the module docstring)."""
    w = (400, 401, 403, 404, 503)
    return (
        make("GET", "/api/schedules", list_schedules, "every schedule with its next and last run", ScheduleOut,
             many=True, data=True),
        make("POST", "/api/schedules", add_schedule, "add a schedule (validated first; nothing stored on error)",
             ScheduleOut, status=201, body=ScheduleBody, write=True, errors=(400, 401, 403, 503)),
        make("GET", "/api/schedules/{id}", get_schedule, "one schedule", ScheduleOut, errors=(404, 503), data=True),
        make("DELETE", "/api/schedules/{id}", remove_schedule, "delete a schedule", ScheduleRemovedOut,
             write=True, errors=w),
        make("POST", "/api/schedules/{id}/pause", pause_schedule, "stop firing (the definition is kept)",
             ScheduleOut, write=True, errors=w),
        make("POST", "/api/schedules/{id}/resume", resume_schedule, "fire again, from the next slot", ScheduleOut,
             write=True, errors=w),
        make("POST", "/api/schedules/{id}/run", run_schedule, "fire once now", ScheduleRunOut, status=201,
             write=True, errors=w),
        make("GET", "/api/schedules/{id}/history", history,
             "the last fires (job ids, states, durations), overlap skips and skipped slots", HistoryOut, many=True,
             query=HistoryQuery, errors=(400, 404, 503), data=True),
    )  # fmt: skip
