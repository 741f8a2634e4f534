"""What change capture reports: per-rule state, its `/status` types, and the stand-in component
when it does not run."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal, NotRequired

from typing_extensions import TypedDict

from orchestrator.cdc.gaps import GapCursor
from orchestrator.cdc.rules import Mode, Rule
from orchestrator.components import BaseComponent


class RuleStatus(TypedDict):
    """One rule in `/status` `cdc.rules` (and `orchestrator cdc status`)."""

    name: str
    table: str
    """db.table"""
    mode: Mode
    enabled: bool
    position: int | str | None
    """changelog mode: the changelog id below which everything was delivered; timestamp mode: the
    cursor (`timestamp / primary key`); null before the first round."""
    lag_s: float | None
    """Age of the newest change delivered; null until known."""
    delivered: int
    """Jobs enqueued for this rule (kept in Redis across leaders)."""
    matched: NotRequired[int]
    """Changes that matched since this leader started (absent when no poller runs)."""
    plugins: NotRequired[list[str]]
    """Absent when no poller runs."""
    last_error: str | None


class ChangelogStatus(TypedDict):
    table: str
    low: int
    """Every change id up to here was delivered."""
    high: int
    """The highest change id read."""
    holes: int
    """Ids between the two not seen yet (a transaction still open, or rolled back)."""
    closed: int
    """Holes given up on: their transactions ended without the id appearing."""


class BinlogStatus(TypedDict):
    """`/status` `cdc.binlog` in binlog mode."""

    position: str | None
    """MariaDB GTID state (`domain-server-seq,...`) or `file:offset`: after the last transaction delivered."""
    server: str
    """The server's version."""
    problems: list[str]
    """Missing server settings or privileges, each with the statement that fixes it (empty: none)."""
    purged: bool
    """The stored position is no longer in the server's binlogs (`cdc snapshot` is the way back)."""
    transactions: int
    """Transactions read since this leader started."""


class CdcOn(TypedDict):
    """`/status` `cdc` while the leader's poller (or binlog capture) runs."""

    enabled: Literal[True]
    connected: bool
    interval_s: float
    changelog: NotRequired[ChangelogStatus]
    """Changelog mode only."""
    binlog: NotRequired[BinlogStatus]
    """Binlog mode only."""
    server_checks: NotRequired[list[str]]
    """`orchestrator cdc status` with binlog rules: what the server lacks for them (empty: nothing)."""
    last_error: str | None
    rounds: int
    rules: list[RuleStatus]
    published_at: NotRequired[float | None]
    """`orchestrator cdc status` only: when the leader published it."""
    instance_id: NotRequired[str | None]
    """`orchestrator cdc status` only: the leader that published it."""


class CdcOff(TypedDict):
    """`/status` `cdc` when change capture does not run here (or, for the CLI, on no leader)."""

    enabled: Literal[False]
    reason: str
    rules: list[RuleStatus]
    server_checks: NotRequired[list[str]]
    """`orchestrator cdc status` with binlog rules: what the server lacks for them (empty: nothing)."""


CdcStatus = CdcOn | CdcOff


def changelog_status(table: str, cursor: GapCursor, closed: int) -> ChangelogStatus:
    figures = cursor.describe()
    return {"table": table, "low": figures["low"], "high": figures["high"], "holes": figures["holes"], "closed": closed}


@dataclass
class RuleState:
    rule: Rule
    table: str  # db.table
    enabled: bool
    delivered: int = 0
    matched: int = 0
    lag_s: float | None = None
    schema_error: str | None = None
    source_error: str | None = None
    position: int | str | None = None

    @property
    def last_error(self) -> str | None:
        return self.schema_error or self.source_error

    def to_json(self) -> RuleStatus:
        return {
            "name": self.rule.name,
            "table": self.table,
            "mode": self.rule.mode,
            "enabled": self.enabled,
            "position": self.position,
            "lag_s": round(self.lag_s, 3) if self.lag_s is not None else None,
            "delivered": self.delivered,
            "matched": self.matched,
            "plugins": self.rule.plugins,
            "last_error": self.last_error,
        }


class CaptureOff(BaseComponent):
    """Stands in for the poller when change capture does not run, so `/status` says why."""

    name = "cdc"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def status(self) -> CdcStatus:
        return {"enabled": False, "reason": self.reason, "rules": []}
