"""What the cluster duties report in `/status`: the lease, the heartbeat, housekeeping, the
reconciler, the plugin reloader, and the envelope a leader publishes its components' status in.

TypedDicts from typing_extensions: pydantic reads them from there before Python 3.12, and the
monitor derives `/status`'s OpenAPI schema from these types (monitor/status.py).
"""

from __future__ import annotations

from typing_extensions import TypedDict

from orchestrator.components import StatusBlock


class LeaseHolder(TypedDict):
    """The lease holder as Redis has it."""

    instance_id: str | None
    since: float | None
    """Epoch seconds when it took the lease."""
    token: int | None
    """The fencing token it writes under (grows with every new holder)."""


class LeaderStatus(LeaseHolder):
    """`/status` `leader`: the holder's fields (null when nobody holds the lease), and what this
    instance is to the lease."""

    is_leader: bool
    """This instance holds the lease now."""
    eligible: bool
    """This instance may lead (false for `--role worker`)."""


class HeartbeatStatus(TypedDict):
    evictions: int
    """Times this instance found it had been presumed dead (its jobs were released meanwhile)."""


class HousekeepingStatus(TypedDict):
    index_entries_trimmed: int
    last_run_at: float | None


class ReconcileStatus(TypedDict):
    put_back: int
    """Jobs found claimed by nobody and queued again."""
    orphans_released: int
    """Jobs of dead instances released."""
    republished: int
    """Times the queues' and plugins' published info was found missing and written again."""


class PluginReloadStatus(TypedDict):
    reloads: int
    last_reload_at: float | None
    watch: bool
    """The plugins folder is watched for changes (`plugins_watch`)."""


class InstanceEntry(TypedDict):
    """`/status` `instances`: what an instance's heartbeat published, and whether it still beats."""

    version: str
    queues: dict[str, int]
    """Queue -> concurrency served (empty for `--role leader`)."""
    role: str
    started_at: float
    seen_at: float
    alive: bool
    """Its heartbeat key still exists (a dead instance stays listed until another reaps it)."""


class Published(TypedDict):
    """A leader-only component's status as the leader published it (`orch:component-status`)."""

    status: dict[str, StatusBlock]
    """`{status_key: what status() returned}`, the same shape read back. Keyed as in `/status`:
    the form every version of the orchestrator writes and reads, so instances of two versions
    side by side (a rolling upgrade) still read each other's."""
    instance_id: str
    token: int
    at: float
