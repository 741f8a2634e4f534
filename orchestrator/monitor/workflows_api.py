"""`/api/workflows`: start one (a tree of chain/group/job steps), read it, cancel it.

Everything goes through the app's Client, like the other routes. routes.py adds `routes(Route)`
to its table (this module does not import routes.py: no import cycle).
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
class StepBody(Request):
    """One step: a job (`plugin`, ...), a `chain` (one after another) or a `group` (in parallel)."""

    plugin: Name | None = None
    params: dict[str, Any] | None = None
    queue: Name | None = None
    priority: Priority | None = None
    retries: Annotated[int, Field(ge=0, le=100)] | None = None
    timeout: Annotated[float, Field(gt=0, le=366 * 86400)] | None = None
    chain: Annotated[list[StepBody], Field(min_length=1, max_length=50_000)] | None = None
    group: Annotated[list[StepBody], Field(min_length=1, max_length=50_000)] | None = None
    on_failure: Literal["fail", "continue"] | None = Field(
        default=None, description="a group's: `continue` hands failures to what follows as error entries"
    )


class WorkflowBody(StepBody):
    """A workflow: its root step, and an optional name shown with it."""

    name: Name | None = None


class WorkflowsQuery(Request):
    limit: Annotated[int, Field(ge=1, le=1000)] = 50


class WorkflowRowOut(Response):
    workflow_id: str
    name: str | None
    state: Literal["running", "succeeded", "failed", "cancelled"]
    created_at: str | None
    finished_at: str | None
    jobs: int


class WorkflowCreatedOut(Response):
    workflow_id: str


class WorkflowOut(Response):
    workflow_id: str
    name: str | None
    state: Literal["running", "succeeded", "failed", "cancelled"]
    created_at: str | None
    finished_at: str | None
    duration_s: float | None
    error: str | None
    result: Any
    counts: dict[str, int]
    steps: dict[str, Any]


class WorkflowStateOut(Response):
    workflow_id: str
    state: str


# -- handlers --
async def start_workflow(request: web.Request) -> web.Response:
    authorize(request)
    b = await body(request, WorkflowBody)
    steps = b.model_dump(exclude_none=True, exclude={"name"})
    workflow_id = await ctx(request).client.workflow(steps, name=b.name, source="http")
    return json_response({"workflow_id": workflow_id}, 201)


async def list_workflows(request: web.Request) -> web.Response:
    q = query(request, WorkflowsQuery)
    return json_response(await ctx(request).client.recent_workflows(q.limit))


async def get_workflow(request: web.Request) -> web.Response:
    return json_response(await ctx(request).client.workflow_status(request.match_info["workflow_id"]))


async def cancel_workflow(request: web.Request) -> web.Response:
    authorize(request)
    workflow_id = request.match_info["workflow_id"]
    return json_response({"workflow_id": workflow_id, "state": await ctx(request).client.cancel_workflow(workflow_id)})


def routes(make: Callable[..., R]) -> tuple[R, ...]:
    """The workflow routes, built with routes.Route (passed in: see the module docstring)."""
    return (
        make("GET", "/api/workflows", list_workflows, "the latest workflows, newest first", WorkflowRowOut, many=True,
             query=WorkflowsQuery, data=True),
        make("POST", "/api/workflows", start_workflow,
             "start a workflow: every step is checked first (one bad step and nothing starts)", WorkflowCreatedOut,
             status=201, body=WorkflowBody, write=True, errors=(400, 401, 403, 413, 415, 503)),
        make("GET", "/api/workflows/{workflow_id}", get_workflow, "a workflow: state, timings, steps with their jobs",
             WorkflowOut, errors=(404, 503), data=True),
        make("POST", "/api/workflows/{workflow_id}/cancel", cancel_workflow,
             "cancel a workflow: waiting steps are cancelled, running ones stopped", WorkflowStateOut, write=True,
             errors=(401, 403, 404, 503)),
    )  # fmt: skip
