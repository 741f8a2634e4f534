"""Job vocabulary: states, priorities, Redis key names and the record <-> JSON mapping."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, Final, Literal, TypedDict, get_args

from orchestrator.tracing.facade import trace_id_of

JobState = Literal["queued", "deferred", "running", "succeeded", "failed", "cancelled"]
STATES: Final[tuple[JobState, ...]] = get_args(JobState)
TERMINAL: Final[frozenset[str]] = frozenset({"succeeded", "failed", "cancelled"})

# The old system's 0-9 scale (smaller = more urgent): 0-3 high, 4-6 default, 7-9 low.
PRIORITY_NAMES: Final[dict[str, int]] = {"high": 1, "default": 5, "low": 8}
# Subtracted from the arq score so that every ready job of a more urgent priority sorts first,
# while FIFO order is kept inside one priority (the score is still the enqueue time).
_PRIORITY_STEP_MS: Final[int] = 10**12


def parse_priority(value: str | int | None) -> int:
    """`high|default|low` or 0-9 -> 0-9. Raises ValueError with a message fit for the user."""
    if value is None:
        return PRIORITY_NAMES["default"]
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().lower() in PRIORITY_NAMES:
        return PRIORITY_NAMES[value.strip().lower()]
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    else:
        msg = f"priority {value!r}: expected high, default, low or 0-9"
        raise ValueError(msg)
    if not 0 <= number <= 9:
        msg = f"priority {value!r}: expected high, default, low or 0-9"
        raise ValueError(msg)
    return number


def priority_band(priority: int) -> str:
    return "high" if priority <= 3 else "default" if priority <= 6 else "low"


def queue_score(ready_at_ms: float, priority: int) -> float:
    return ready_at_ms - (9 - priority) * _PRIORITY_STEP_MS


def new_job_id() -> str:
    return uuid.uuid4().hex


MAX_JOB_ID = 200


def job_id_problem(job_id: str) -> str | None:
    """Why `job_id` cannot name a job, or None. Ids are printed in logs and on one console line
    each: a CR, LF, TAB or another control or invisible format character would split or forge
    lines, so only printable characters (str.isprintable) are taken."""
    if not job_id or len(job_id) > MAX_JOB_ID:
        return f"job id must be 1-{MAX_JOB_ID} characters"
    if not job_id.isprintable():
        bad = next(ch for ch in job_id if not ch.isprintable())
        return f"job id holds {bad!r}: printable characters only (no line breaks, tabs or control characters)"
    return None


def now() -> float:
    return time.time()


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Keys:
    """Every Redis key and channel the job layer uses, in one place.

    arq's own keys (`arq:job:*`, `arq:in-progress:*`, `arq:retry:*`, `arq:abort`) are arq's;
    the queue sorted sets are named here so that arq workers read them.
    """

    @staticmethod
    def job(job_id: str) -> str:
        return f"orch:job:{job_id}"

    @staticmethod
    def log(job_id: str) -> str:
        return f"orch:log:{job_id}"

    @staticmethod
    def state(state: str) -> str:
        return f"orch:state:{state}"

    @staticmethod
    def plugin_jobs(plugin: str) -> str:
        return f"orch:plugin-jobs:{plugin}"

    all_jobs = "orch:jobs"

    @staticmethod
    def queue(queue: str) -> str:
        return f"orch:queue:{queue}"

    @staticmethod
    def heartbeat(instance_id: str) -> str:
        return f"orch:heartbeat:{instance_id}"

    instances = "orch:instances"
    queues = "orch:queues"  # queue -> concurrency, published by running instances
    plugins = "orch:plugins"  # plugin -> manifest JSON, published by running instances
    plugin_enabled = "orch:plugin-enabled"  # plugin -> "1"/"0": enable/disable seen by every instance
    leader = "orch:leader"  # hash {instance, token, since} with a TTL: the leader lease
    leader_epoch = "orch:leader:epoch"  # the fencing-token counter; only grows
    component_status = "orch:component-status"  # leader-only component -> its status JSON

    @staticmethod
    def batch(batch_id: str) -> str:
        return f"orch:batch:{batch_id}"

    # zset: batches with a job that has not ended (their hash has no TTL yet; JobStore.close_ended_batches)
    open_batches = "orch:batches:open"

    # Workflows (workflows/, jobs/lua/workflow.lua): the record, and beside it (the record's key
    # + ":graph", ":left", ":results") the compiled steps, the join counters and the members' results.
    @staticmethod
    def workflow(workflow_id: str) -> str:
        return f"orch:wf:{workflow_id}"

    all_workflows = "orch:wfs"  # zset: workflow id -> created at
    workflow_outcomes = "orch:wf-outcomes"  # hash: end state -> how many workflows ended so

    @staticmethod
    def workflow_done_channel(workflow_id: str) -> str:
        return f"orch:wf-done:{workflow_id}"

    # pub/sub
    @staticmethod
    def wake_channel(queue: str) -> str:
        return f"orch:wake:{queue}"

    @staticmethod
    def offers(queue: str) -> str:
        """Hash: an idle worker's push channel -> how many of its slots an enqueue may fill directly."""
        return f"orch:offers:{queue}"

    # The push channel's one format: the enqueue script reads the instance back out of a channel
    # with a Lua pattern made from it (JobStore, redis/lua.py `pattern`).
    push_channel_format = "orch:push:{instance}:{token}"

    @staticmethod
    def push_channel(instance_id: str, token: str) -> str:
        """Jobs an enqueue claimed for one process's workers (jobs/lua/enqueue.lua). The token
        is the process's own: two processes given one instance id never read each other's pushes."""
        return Keys.push_channel_format.format(instance=instance_id, token=token)

    cancel_channel = "orch:cancel"
    reload_channel = "orch:reload"  # a plugin name, or "" for the whole folder

    @staticmethod
    def done_channel(job_id: str) -> str:
        return f"orch:done:{job_id}"

    @staticmethod
    def client_done_channel(client_id: str) -> str:
        """One per waiting Client: the ends of the jobs it triggered (jobs/results.py)."""
        return f"orch:done-to:{client_id}"


# Record fields stored as JSON text in the Redis hash (everything else is a plain string/number).
_JSON_FIELDS: Final[frozenset[str]] = frozenset({"params", "result", "context", "previous", "trace", "trace_first"})
_FLOAT_FIELDS: Final[frozenset[str]] = frozenset(
    {"enqueued_at", "started_at", "finished_at", "duration_s", "defer_until", "timeout_s", "retry_backoff_s",
     "interrupted"}
)  # fmt: skip
_INT_FIELDS: Final[frozenset[str]] = frozenset({"priority", "attempt", "exit_code", "max_retries"})


class RecordUpdate(TypedDict, total=False):
    """The fields an outcome changes on a record (JobStore.finish)."""

    attempt: int
    finished_at: float
    duration_s: float
    exit_code: int | None
    result: Any
    error: str | None
    error_type: str | None
    traceback: str | None
    log_tail: str | None
    defer_until: float
    interrupted: float
    trace_first: dict[str, str]


@dataclass
class JobRecord:
    """One job, as stored in its Redis hash `orch:job:<id>` (None fields are not stored).

    A worker holds only what it claimed (JobStore.claim reads the fields it needs); the monitor
    and the client read the whole hash.
    """

    job_id: str
    plugin: str
    queue: str
    state: JobState = "queued"
    params: dict[str, Any] = field(default_factory=dict)
    priority: int = PRIORITY_NAMES["default"]
    source: str | None = None
    attempt: int = 0
    max_retries: int = 0
    retry_backoff_s: float = 0.0
    timeout_s: float | None = None
    enqueued_at: float | None = None
    defer_until: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    exit_code: int | None = None
    result: Any = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    log_tail: str | None = None
    batch_id: str | None = None
    retry_of: str | None = None
    retried_as: str | None = None
    context: dict[str, Any] | None = None
    instance: str | None = None  # who claimed it last
    claim: str | None = None  # the current claim's id: fences the finish (JobStore.finish)
    interrupted: float | None = None
    cancel_requested: str | None = None
    notify: str | None = None  # a triggering client's own done channel (jobs/results.py), told at the end too
    throttle_key: str | None = None  # the plugin throttle's key for this job ('user_id=42'; jobs/throttle.py)
    waiting: str | None = None  # why a throttle holds it back ('waiting: concurrency limit 2/2 for user_id=42')
    # W3C trace context (tracing/facade.py): the trigger's, parent of every attempt's `job` span;
    # and the first attempt's own, which a retry's span links to.
    trace: dict[str, str] | None = None
    trace_first: dict[str, str] | None = None
    workflow: str | None = None  # the workflow this job is a step of (workflows/)
    step: str | None = None  # its node in that workflow's graph
    previous: Any = None  # a workflow step's predecessor's result, handed to the plugin as `previous`

    def to_hash(self) -> dict[str, str]:
        """Hash fields (None values are left out)."""
        flat = self.to_enqueue_fields()
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def derive(self, **changes: Any) -> JobRecord:
        """A copy with `changes`: dataclasses.replace without its __init__ pass (change capture makes
        one record per change from a template; this is why records keep a __dict__, not slots)."""
        new = object.__new__(JobRecord)
        new.__dict__ = {**self.__dict__, **changes}
        return new

    def to_enqueue_fields(self) -> list[str]:
        """The record's hash fields, flat (field, value, ...), as the enqueue sends them (None values
        are left out), made in one pass: the enqueue's hot path.

        Field by field: packing the fields fixed at the enqueue into one JSON value was measured
        (bench/README.md, issue 27) and gained nothing beyond the noise, while a worker of the
        previous version, side by side in a rolling upgrade, would have run such a job with no params."""
        out: list[str] = []
        for name, value in zip(_ALL_FIELDS, _all_values(self), strict=True):
            if value is not None:
                out += (name, _compact_json(value) if name in _JSON_FIELDS else str(value))
        return out

    @classmethod
    def from_hash(cls, raw: Mapping[bytes, bytes] | Mapping[str, str], **extra: Any) -> JobRecord:
        """From hash fields (unknown fields, written by a newer version, are ignored)."""
        values = {k: v for k, v in decode_fields(raw).items() if k in _RECORD_FIELDS}
        return cls(**{**values, **extra})

    def to_json(self) -> dict[str, Any]:
        """The public job shape (DESIGN.md: JSON shapes scripts rely on)."""
        return {
            "job_id": self.job_id,
            "plugin": self.plugin,
            "params": self.params,
            "queue": self.queue,
            "priority": self.priority,
            "priority_band": priority_band(self.priority),
            "source": self.source,
            "state": self.state,
            "attempt": self.attempt,
            "max_retries": self.max_retries,
            "enqueued_at": iso(self.enqueued_at),
            "defer_until": iso(self.defer_until),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_s": self.duration_s,
            "exit_code": self.exit_code,
            "result": self.result,
            "error": self.error,
            "error_type": self.error_type,
            "traceback": self.traceback,
            "log_tail": self.log_tail,
            "batch_id": self.batch_id,
            "retry_of": self.retry_of,
            "instance": self.instance,
            "throttle_key": self.throttle_key,
            "waiting": self.waiting if self.state in ("queued", "deferred") else None,
            "trace_id": trace_id_of(self.trace),
            "workflow": self.workflow,
            "step": self.step,
        }


_RECORD_FIELDS: Final[frozenset[str]] = frozenset(f.name for f in fields(JobRecord))
_ALL_FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in fields(JobRecord))
# the enqueue's hot path: one C call reads every attribute, one reused encoder writes the JSON ones
_all_values = attrgetter(*_ALL_FIELDS)
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def encode_fields(values: Mapping[str, Any]) -> dict[str, str]:
    """Python values -> hash fields (None values are left out)."""
    out: dict[str, str] = {}
    for key, value in values.items():
        if value is None:
            continue
        if key in _JSON_FIELDS:
            out[key] = json.dumps(value, separators=(",", ":"))
        else:
            out[key] = str(value)
    return out


def decode_fields(raw: Mapping[bytes, bytes] | Mapping[str, str]) -> dict[str, Any]:
    """Hash fields -> Python values."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key = k.decode() if isinstance(k, bytes) else k
        text = v.decode() if isinstance(v, bytes) else v
        if key in _JSON_FIELDS:
            out[key] = json.loads(text)
        elif key in _FLOAT_FIELDS:
            out[key] = float(text)
        elif key in _INT_FIELDS:
            out[key] = int(text)
        else:
            out[key] = text
    return out
