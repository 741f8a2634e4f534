"""Change events and the Redis keys of change capture."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class Change:
    """One row change as a reader saw it.

    Args:
        change_id: unique per source: the changelog id, or `t<epoch µs>-<pk>` in timestamp mode.
        seq: the position in the source's order (the changelog id; timestamp mode: 0).
        table: `db.table`.
        operation: INSERT, UPDATE or DELETE.
        primary_key: {column: value}.
        row: the row after the change (None for DELETE).
        before: the row before (UPDATE/DELETE in changelog mode; else None).
        changed_at: when the change was made (epoch s, DB clock): the statement time, which is the
            closest to the commit time a poller can know.
    """

    change_id: str
    seq: int
    table: str
    operation: str
    primary_key: dict[str, Any]
    row: dict[str, Any] | None
    before: dict[str, Any] | None
    changed_at: float

    def event(self, rule: str) -> dict[str, Any]:
        """The `change_event` keyword a plugin receives."""
        return {
            "rule": rule,
            "table": self.table,
            "operation": self.operation,
            "primary_key": self.primary_key,
            "row": self.row,
            "before": self.before,
            "change_id": self.change_id,
            "commit_time": self.commit_time,
        }

    @cached_property
    def commit_time(self) -> str:
        return datetime.fromtimestamp(self.changed_at, UTC).isoformat(timespec="microseconds")


def job_id(rule: str, change_id: str, plugin: str) -> str:
    return f"cdc:{rule}:{change_id}:{plugin}"


class CdcKeys:
    """Redis keys of change capture (the job layer's keys are jobs.model.Keys)."""

    # hash: `changelog` -> the gap cursor (JSON), `binlog` -> the binlog position (JSON), `ts:<rule>` -> a timestamp cursor (JSON),
    # `delivered:<rule>` -> jobs enqueued so far. Written only together with the jobs it accounts for.
    state = "orch:cdc:state"
    rule_enabled = "orch:cdc:rule-enabled"  # rule -> "1"/"0": `cdc enable|disable`, seen by the leader

    @staticmethod
    def snapshot(rule: str) -> str:
        return f"orch:cdc:snapshot:{rule}"

    CHANGELOG = "changelog"
    BINLOG = "binlog"  # binlog mode's position (cdc/binlog_position.py), one for all its rules

    @staticmethod
    def ts_field(rule: str) -> str:
        return f"ts:{rule}"

    @staticmethod
    def delivered_field(rule: str) -> str:
        return f"delivered:{rule}"
