"""The /api's request and response shapes (pydantic): they validate input and write the OpenAPI document.

Requests forbid unknown keys, so a typo (`param` for `params`) is a 400 naming it rather than a
silently ignored field. Responses allow more keys than they list (DESIGN.md: more keys are welcome).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.jobs.model import JobState

Priority = Annotated[int, Field(ge=0, le=9)] | Literal["high", "default", "low"]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- requests --
class ThrottleBody(Request):
    """A live change of a plugin's limits: only the keys given change; null removes that limit."""

    concurrency: Annotated[int, Field(gt=0)] | None = None
    rate: str | None = None
    key: str | None = None
    max_queued: Annotated[int, Field(gt=0)] | None = None
    reset: bool = False
    """Drop the live change: every instance writes its config's and manifest's limits back."""


class TriggerBody(Request):
    """A job to enqueue (the same checks as `orchestrator trigger`)."""

    plugin: Annotated[str, Field(min_length=1, max_length=200)]
    params: dict[str, Any] = Field(default_factory=dict)
    priority: Priority | None = None
    queue: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    job_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    defer_s: Annotated[float, Field(ge=0, le=366 * 86400)] | None = None


class BatchEntry(Request):
    plugin: Annotated[str, Field(min_length=1, max_length=200)]
    params: dict[str, Any] = Field(default_factory=dict)
    priority: Priority | None = None
    queue: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    job_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class BatchBody(Request):
    """Jobs validated together: one bad entry and nothing is enqueued."""

    jobs: Annotated[list[BatchEntry], Field(min_length=1, max_length=10_000)]


class JobsQuery(Request):
    state: JobState | None = None
    plugin: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    queue: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    offset: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    limit: Annotated[int, Field(ge=1, le=1000)] = 50


class LogsQuery(Request):
    after: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^(-|\d+-\d+)$")] = "-"
    limit: Annotated[int, Field(ge=1, le=5000)] = 500


class ThroughputQuery(Request):
    window_s: Annotated[float, Field(ge=60, le=7 * 86400)] = 3600.0
    bucket_s: Annotated[float, Field(ge=1, le=86400)] = 60.0


class FinishedQuery(Request):
    limit: Annotated[int, Field(ge=1, le=200)] = 10


class PurgeBody(Request):
    """Delete final jobs in bulk (running and waiting jobs are never purged)."""

    state: Literal["succeeded", "failed", "cancelled"]
    older_than_s: Annotated[float, Field(ge=0)] = 0.0
    plugin: Annotated[str, Field(min_length=1, max_length=200)] | None = None


# -- responses --
class ErrorOut(Response):
    error: str


class JobOut(Response):
    job_id: str
    plugin: str
    params: dict[str, Any]
    queue: str
    priority: int
    source: str | None
    state: JobState
    attempt: int
    enqueued_at: str | None
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    exit_code: int | None
    result: Any
    error: str | None
    log_tail: str | None
    batch_id: str | None
    trace_id: str | None = None  # the trace the job's spans joined (tracing on), for the trace viewer


class PluginOut(Response):
    name: str
    version: str | None
    enabled: bool
    state: Literal["ready", "not-ready", "invalid"]
    reason: str | None
    tags: list[str]
    queue: str | None
    parameters: dict[str, Any]


class QueueStats(Response):
    depth: int
    running: int
    concurrency: int


class StatsOut(Response):
    states: dict[str, int]
    queues: dict[str, QueueStats]


class BatchOut(Response):
    batch_id: str
    job_ids: list[str]
    states: dict[str, int]
    done: bool


class BatchCreatedOut(Response):
    batch_id: str
    job_ids: list[str]
    created: int


class TriggeredOut(Response):
    job_id: str
    created: bool


class JobStateOut(Response):
    job_id: str
    state: str


class RetriedOut(Response):
    job_id: str
    retry_of: str


class ThrottleOut(Response):
    """A plugin's throttle: the limits every claim reads now, and their use across the cluster."""

    plugin: str
    limits: dict[str, Any] | None
    """concurrency, rate, key, max_queued (only those set); null without limits."""
    live: bool
    """Set at run time (kept until reset), not from config or the manifest."""
    throttled: int
    refused: int
    over_cap: int
    keys: list[dict[str, Any]]
    """Per key in use: running and held jobs."""


class ToggledOut(Response):
    name: str
    enabled: bool


class DeletedOut(Response):
    deleted: int


class ReloadOut(Response):
    requested: bool
    plugin: str | None


class LogEntry(Response):
    id: str
    stream: str
    line: str


class LogsOut(Response):
    job_id: str
    state: str
    entries: list[LogEntry]


class ThroughputOut(Response):
    pass


class LiveOut(Response):
    status: Literal["ok"]


class HealthOut(Response):
    status: Literal["ok", "failing"]
    failing: list[str]
    components: dict[str, Any]
