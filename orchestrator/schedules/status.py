"""What the scheduler reports in `/status` `schedules`: one compact row per schedule.

Compact because the leader publishes it every few seconds, for 1,000 schedules too: no params,
no queue or priority (the API and `schedules list` show everything).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from typing_extensions import TypedDict


class ScheduleRow(TypedDict):
    id: str
    plugin: str | None
    """None for a schedule that starts a workflow named in config."""
    trigger: str
    """`cron <expr> (<timezone>)` or `every <interval>`."""
    enabled: bool
    """False while paused."""
    next_run_at: str | None
    """ISO 8601 UTC; null while paused."""
    last_run_at: str | None
    last_job_id: str | None
    last_state: str | None
    """The last job's state, `expired` once its record is gone; null before the first fire."""
    fires: int
    """Jobs it enqueued."""
    misfires: int
    """Slots skipped: missed by more than the misfire grace."""
    overlap_skips: int
    """Slots skipped because its previous run was still queued or running."""
    errors: int
    """Slots whose job was refused (unknown plugin, bad params, disabled plugin)."""
    note: str | None
    """Why the config file and the running definition differ, when they do."""


STATUS_KEYS = ScheduleRow.__required_keys__


def status_row(described: Mapping[str, Any]) -> ScheduleRow:
    """The row of a schedule as `store.describe_one` describes it in full (its keys, in its order)."""
    return cast(ScheduleRow, {k: v for k, v in described.items() if k in STATUS_KEYS})
