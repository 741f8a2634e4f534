"""The schedule model: one definition (config or run time), its trigger, and the slots it fires at.

A *slot* is the UTC instant a schedule is due; it names the job (`sched:<id>:<slot>`), so every
instance and every restart agrees on what "this slot" is and the enqueue script's dedupe by job id
makes a slot fire once.

- `every = "30s"` slots are multiples of the interval since the Unix epoch (every 1h fires at the
  top of each UTC hour, every 30s at :00 and :30), so they do not depend on when the schedule was
  added or which instance computes them.
- `cron` slots are local wall-clock times in `timezone` (default UTC). A wall time that a DST
  change skips (02:30 on a spring-forward night) fires once, at the instant the clock jumps; a wall
  time that happens twice (02:30 on a fall-back night) fires at its first occurrence only.

Nothing here touches Redis: it is imported by config.py to validate `[[schedules]]`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
# Candidates a cron lookup may inspect before it gives up (an expression that never matches, such
# as `0 0 30 2 *`, is refused when the schedule is added; this only bounds a pathological zone).
_MAX_CANDIDATES = 1000
_MAX_S = 366 * 86400
Overlap = Literal["skip", "allow"]
Origin = Literal["config", "runtime"]


def parse_every(text: str | float, what: str = "every") -> float:
    """`30s`, `5m`, `1h`, `1d` or plain seconds -> seconds (at least 1, whole seconds).

    Raises:
        ValueError: with a message fit for the user, naming `what`.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _EVERY.fullmatch(str(text))
        if not match:
            msg = f"{what} {text!r}: use e.g. 30s, 5m, 1h or 1d"
            raise ValueError(msg)
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not 1 <= seconds <= _MAX_S or seconds != int(seconds):
        msg = f"{what} {text!r}: must be a whole number of seconds, from 1s to 366d"
        raise ValueError(msg)
    return seconds


def format_every(seconds: float) -> str:
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def check_cron(expr: str) -> str:
    """A 5-field cron expression or an `@daily`-style macro; raises ValueError otherwise."""
    from croniter import croniter

    expr = " ".join(expr.split())
    fields = expr.split(" ")
    if not (len(fields) == 5 or (len(fields) == 1 and expr.startswith("@"))) or not croniter.is_valid(expr):
        msg = f"cron {expr!r}: not a valid 5-field cron expression (minute hour day month weekday)"
        raise ValueError(msg)
    return expr


def check_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a path
        msg = f"timezone {name!r}: unknown (use an IANA name such as Europe/Berlin or UTC)"
        raise ValueError(msg) from None


def slot_name(slot: float) -> str:
    """The slot as it appears in job ids: basic ISO 8601 UTC, no colons (`20261130T020000Z`)."""
    return datetime.fromtimestamp(slot, UTC).strftime("%Y%m%dT%H%M%SZ")


def job_id_for(schedule_id: str, slot: float) -> str:
    return f"sched:{schedule_id}:{slot_name(slot)}"


class ScheduleSpec(BaseModel):
    """One schedule, as written in `[[schedules]]`, given to `Client.add_schedule` or stored in Redis.

    Args:
        id: unique name (letters, digits, `_`, `.`, `-`); part of every job id it makes.
        plugin: the plugin to run; params: its parameters (validated against its manifest).
        workflow: instead of a plugin, a workflow named in `[workflows]` (started once per slot).
        cron: a 5-field cron expression in `timezone` (default UTC), or
        every: an interval (`30s`, `5m`, `1h`); exactly one of the two.
        queue / priority: as for a trigger (default: the manifest's queue, priority `default`).
        misfire_grace_s: a slot missed by at most this much (downtime, a leader change) still fires,
            once; older missed slots are skipped and recorded as skipped.
        overlap: `skip` (default): no new run while the previous run of this schedule is queued or
            running; `allow`: fire regardless.
        enabled: a paused schedule keeps its definition and fires nothing.
        origin: `config` (from the config file, re-read at start) or `runtime` (added later).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str
    plugin: str | None = None
    workflow: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    cron: str | None = None
    timezone: str = "UTC"
    every: float | None = None
    queue: str | None = None
    priority: str | int | None = None
    # At least 1 s: a wake-up is never exactly on its slot, and a zero grace would skip every fire.
    misfire_grace_s: Annotated[float, Field(ge=1, le=_MAX_S)] = Field(
        default=60.0, validation_alias=AliasChoices("misfire_grace_s", "misfire_grace")
    )
    overlap: Overlap = "skip"
    enabled: bool = True
    origin: Origin = "runtime"

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not ID_PATTERN.fullmatch(value):
            msg = f"schedule id {value!r}: use 1-100 letters, digits, '_', '.' or '-' (starting with a letter or digit)"
            raise ValueError(msg)
        return value

    @field_validator("plugin")
    @classmethod
    def _check_plugin(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("plugin must not be empty")
        return value

    @field_validator("every", mode="before")
    @classmethod
    def _parse_every(cls, value: Any) -> Any:
        return None if value is None else parse_every(value)

    @field_validator("misfire_grace_s", mode="before")
    @classmethod
    def _parse_grace(cls, value: Any) -> Any:
        # "5m" reads better in TOML; a bare number is seconds (pydantic checks it is at least 1).
        return parse_every(value, "misfire_grace") if isinstance(value, str) else value

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        check_timezone(value)
        return value

    @model_validator(mode="after")
    def _one_trigger(self) -> ScheduleSpec:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give exactly one of cron or every")
        if (self.plugin is None) == (self.workflow is None):
            raise ValueError("give exactly one of plugin or workflow")
        if self.cron is not None:
            try:
                self.next_after(datetime.now(UTC).timestamp())
            except ValueError as e:
                msg = f"cron {self.cron!r}: {e}"
                raise ValueError(msg) from None
        return self

    # -- the trigger --
    @property
    def trigger(self) -> str:
        if self.cron is not None:
            return f"cron {self.cron}" + (f" ({self.timezone})" if self.timezone != "UTC" else "")
        assert self.every is not None  # noqa: S101  the validator requires cron or every
        return f"every {format_every(self.every)}"

    def next_after(self, t: float) -> float:
        """The first slot strictly after `t` (epoch seconds)."""
        if self.every is not None:
            return (int(t // self.every) + 1) * self.every
        return next(self._cron_slots(t))

    def slots_between(self, after: float, upto: float, *, limit: int) -> tuple[list[float], bool]:
        """Slots in (after, upto], at most `limit` of them; the flag says whether the list is complete."""
        if self.every is not None:
            first = (int(after // self.every) + 1) * self.every
            count = max(0, int((upto - first) // self.every) + 1) if first <= upto else 0
            # the last `limit` slots: the caller needs the newest one exactly
            start = max(0, count - limit)
            return [first + (start + i) * self.every for i in range(count - start)], count <= limit
        out: list[float] = []
        for slot in self._cron_slots(after):
            if slot > upto:
                return out, True
            out.append(slot)
            if len(out) >= limit:
                return out, False
        return out, True  # pragma: no cover - _cron_slots only ends by raising

    def _cron_slots(self, t: float) -> Iterator[float]:
        from croniter import croniter

        tz = ZoneInfo(self.timezone)
        start = datetime.fromtimestamp(t, tz).replace(tzinfo=None)
        assert self.cron is not None  # noqa: S101  only cron schedules reach this
        walls = croniter(self.cron, start)
        last = t
        misses = 0
        while True:
            try:
                wall = walls.get_next(datetime)
            except Exception as e:  # croniter's CroniterBadDateError: the expression never matches
                raise ValueError("it never matches a date") from e
            slot = _resolve(wall, tz)
            # During the second pass of a repeated (fall-back) hour the next wall times resolve to
            # their first occurrence, already past: skip them (they fired an hour ago).
            if slot <= last:
                misses += 1
                if misses > _MAX_CANDIDATES:
                    raise ValueError("no slot found")
                continue
            misses = 0
            last = slot
            yield slot

    # -- identity --
    def fingerprint(self) -> str:
        """A hash of the definition (without `origin`): tells a config edit from a runtime change."""
        data = self.model_dump(mode="json", exclude={"origin"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        """The stored and public definition (DESIGN.md: the schedule shape)."""
        out = self.model_dump(mode="json")
        out["every"] = format_every(self.every) if self.every is not None else None
        return out

    def differences(self, other: ScheduleSpec) -> list[str]:
        mine, theirs = self.model_dump(exclude={"origin"}), other.model_dump(exclude={"origin"})
        return [k for k in mine if mine[k] != theirs[k]]


def _resolve(wall: datetime, tz: ZoneInfo) -> float:
    """A local wall time -> its UTC instant; a skipped wall time -> the instant the clock jumps."""
    first = wall.replace(tzinfo=tz, fold=0)
    ts = first.timestamp()
    if datetime.fromtimestamp(ts, tz).replace(tzinfo=None) == wall:
        return ts  # exists (fold=0 is the first occurrence of a repeated wall time)
    # In a gap: fold=1 gives the instant before the jump, fold=0 the one after; search between.
    lo, hi = wall.replace(tzinfo=tz, fold=1).timestamp(), ts
    lo, hi = min(lo, hi), max(lo, hi)
    offset = datetime.fromtimestamp(lo, tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == offset:
            lo = mid
        else:
            hi = mid
    return hi


def spec_from_seed(data: dict[str, Any]) -> ScheduleSpec:
    """The seed's `add_scheduled_task({"plugin": ..., "params": ..., "cron": "0 2 * * *"})` shape.

    Accepts `name`, `task_id` or `id` as the id (default: `<plugin>-<hash of the definition>`),
    `params` or `kwargs` as the parameters; everything else as in ScheduleSpec.

    Raises:
        ValueError: a one-line reason (pydantic's errors joined).
    """
    raw = dict(data)
    for alias in ("name", "task_id", "schedule_id"):
        if alias in raw and "id" not in raw:
            raw["id"] = raw.pop(alias)
    if "kwargs" in raw and "params" not in raw:
        raw["params"] = raw.pop("kwargs")
    if "id" not in raw and isinstance(raw.get("plugin"), str):
        trigger = {k: raw.get(k) for k in ("cron", "every", "timezone", "params")}
        digest = hashlib.sha256(json.dumps(trigger, sort_keys=True, default=str).encode()).hexdigest()[:8]
        raw["id"] = f"{raw['plugin']}-{digest}"
    return parse_spec(raw)


def parse_spec(raw: dict[str, Any]) -> ScheduleSpec:
    try:
        return ScheduleSpec.model_validate(raw)
    except ValidationError as e:
        raise ValueError(describe_errors(e)) from None


def describe_errors(error: ValidationError) -> str:
    problems = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"])
        text = str(err["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {text}" if where else text)
    return "; ".join(problems)


__all__ = [
    "ScheduleSpec",
    "check_cron",
    "check_timezone",
    "format_every",
    "job_id_for",
    "parse_every",
    "parse_spec",
    "slot_name",
    "spec_from_seed",
]
