"""The `/status` body as one type, composed of each package's status types.

Each component's status() returns a TypedDict of its own package; the supervisor nests it under
the component's `status_key` (supervisor.py). ProcessStatus names those keys with their types, so
the metrics read typed fields, and `/status`'s OpenAPI schema is derived from StatusBody itself
(routes.py), so the document and the type cannot drift. tests/monitor/test_status_types.py checks
that every component's status() return type is the one ProcessStatus gives its key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Required, cast

from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict

from orchestrator.cdc.status import CdcStatus
from orchestrator.cluster.status import (
    HeartbeatStatus,
    HousekeepingStatus,
    InstanceEntry,
    LeaderStatus,
    PluginReloadStatus,
    ReconcileStatus,
)
from orchestrator.index.status import ElasticsearchStatus, IndexStatus
from orchestrator.jobs.throttle import PluginThrottle
from orchestrator.jobs.workers import WorkersStatus
from orchestrator.monitor.health import RedisStatus
from orchestrator.monitor.loop import LoopStatus
from orchestrator.plugins.builder import VenvsStatus
from orchestrator.schedules.status import ScheduleRow
from orchestrator.supervisor import SlotStatus


class HttpStatus(TypedDict):
    """`/status` `http`: where this status endpoint listens."""

    host: str
    port: int | None
    """The port bound (the one asked for, or the one the OS picked for port 0); null before start()."""


class ProcessStatus(TypedDict, total=False):
    """What the supervisor assembles (supervisor.Supervisor.status) plus the app's `role`.

    A component's key is absent when it does not run in this role, when its leader has not
    published it yet, or when its status() raised (`components.<name>.status_error` says why).
    """

    role: Required[str]
    """`all`, `worker` or `leader` (`orchestrator run --role`)."""
    components: Required[dict[str, SlotStatus]]
    """Every component of this process by name: its state and restarts."""
    http: HttpStatus
    loop: LoopStatus
    redis: RedisStatus
    leader: LeaderStatus
    heartbeat: HeartbeatStatus
    venvs: VenvsStatus
    plugin_reload: PluginReloadStatus
    workers: WorkersStatus
    reconcile: ReconcileStatus
    housekeeping: HousekeepingStatus
    schedules: list[ScheduleRow]
    """Every schedule: its next run and last outcome (leader-only: as the leader published it)."""
    cdc: CdcStatus
    cdc_binlog: CdcStatus
    """Binlog capture, when rules of the other modes run beside it (their poller has `cdc`)."""
    elasticsearch: ElasticsearchStatus
    index: IndexStatus


class QueueCounts(TypedDict):
    depth: int
    """Jobs waiting."""
    running: int
    """Jobs running (all instances)."""
    concurrency: int


class PluginsStatus(TypedDict):
    valid: list[str]
    invalid: dict[str, str | None]
    """Plugin -> why it is invalid."""


@with_config(ConfigDict(use_attribute_docstrings=True))  # the field docstrings become the schema's descriptions
class StatusBody(ProcessStatus):
    """`GET /status`: this process, the cluster it sees, and every component's status."""

    version: Required[str]
    instance_id: Required[str]
    uptime_s: Required[float]
    queues: Required[dict[str, QueueCounts]]
    jobs: Required[dict[str, int]]
    """Jobs per state (records kept in Redis)."""
    plugins: Required[PluginsStatus]
    instances: Required[dict[str, InstanceEntry]]
    throttles: Required[dict[str, PluginThrottle]]
    """Every throttled plugin (cluster-wide, from Redis): its limits, counters and each key's use."""


def process_status(raw: Mapping[str, object]) -> ProcessStatus:
    """The app's status (the supervisor's, with `role`) as its type.

    A cast, not a check: each key holds what the component's typed status() returned (or the
    leader published of it), and test_status_types.py checks those types against ProcessStatus.
    """
    return cast(ProcessStatus, raw)


def instance_entries(raw: dict[str, dict[str, Any]]) -> dict[str, InstanceEntry]:
    """`Client.instances()` as its type: what each heartbeat published (cluster/heartbeat.py), plus
    `alive`. (Client keeps its documented `dict[str, dict[str, Any]]`.)"""
    return cast(dict[str, InstanceEntry], raw)
