"""The change poller: a leader-only component that turns row changes into plugin jobs.

Every `db_change_polling_interval_s` it reads the changelog (and each timestamp-mode table), turns
matching changes into jobs, and writes the jobs and the new position to Redis in one atomic step
per chunk of `cdc.batch_size` changes. A crash replays at most the chunk being written, and that
enqueues nothing twice (job ids come from the change).

Failure handling: a lost connection (or MariaDB restarting) is retried with backoff from the
position in Redis, the error shown in status; a rule whose table is missing, or whose watched
columns are gone, is reported on that rule while the other rules keep running.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from asyncmy.errors import MySQLError  # type: ignore[import-untyped,unused-ignore]
from redis.asyncio import Redis
from redis.exceptions import RedisError

from orchestrator.cdc import changelog as cl
from orchestrator.cdc.db import Connection, connect, describe_error, is_connection_error, table_info
from orchestrator.cdc.delivery import Delivery, Round
from orchestrator.cdc.gaps import GapCursor, TrxInfo
from orchestrator.cdc.model import CdcKeys, Change
from orchestrator.cdc.readers import ChangelogReader, TimestampReader, TrxProbe, TsCursor
from orchestrator.cdc.rules import CdcSettings
from orchestrator.cdc.settings import MySQLParams
from orchestrator.cdc.status import CdcStatus, RuleState, changelog_status
from orchestrator.cluster.lease import LeaderLease
from orchestrator.components import BaseComponent, ComponentHealth
from orchestrator.errors import ChangeFeedError, FencedError
from orchestrator.jobs.submit import Submitter
from orchestrator.tracing.facade import Tracing
from orchestrator.workflows.named import NamedWorkflows

logger = logging.getLogger(__name__)

_SCHEMA_CHECK_S = 5.0
_TRIM_EVERY_S = 30.0
_FIRST_BACKOFF_S = 0.2


class _TsSource:
    """One timestamp-mode rule's reader and cursor."""

    def __init__(self, state: RuleState, reader: TimestampReader | None) -> None:
        self.state = state
        self.reader = reader
        self.cursor = TsCursor()
        self.recent: dict[str, datetime] = {}  # change ids delivered above the cursor -> their timestamp


class ChangePoller(BaseComponent):
    """Change capture on the leader.

    Args:
        settings: the `[cdc]` section.
        mysql: DATABASE_URL taken apart.
        interval_s: seconds between polls (DB_CHANGE_POLLING_INTERVAL; sub-second works).
        submitter: the job layer.
        lease: the leader lease (every write carries its fence).
        redis: for positions, enable flags and counts.
        tracing: `cdc.change` spans (cdc/delivery.py).
    """

    name = "cdc"
    leader_only = True

    def __init__(
        self,
        settings: CdcSettings,
        mysql: MySQLParams,
        *,
        interval_s: float,
        submitter: Submitter,
        lease: LeaderLease,
        redis: Redis,
        clock: Callable[[], float] = time.time,
        tracing: Tracing | None = None,
        workflows: NamedWorkflows | None = None,
    ) -> None:
        self.settings = settings
        self.mysql = mysql
        self.interval_s = interval_s
        self.redis = redis
        self.clock = clock
        self.delivery = Delivery(submitter, lease, tracing, workflows)
        self.changelog = cl.changelog_table(settings, mysql.db)
        self.reader = ChangelogReader(self.changelog, read_size=settings.batch_size * 10)
        self.probe = TrxProbe()
        self.states: list[RuleState] = []
        for rule in settings.all_rules():
            if rule.mode == "binlog":
                continue  # cdc/binlog_capture.py
            try:
                table = rule.qualified_table(mysql.db)
                error = None
            except ValueError as e:
                table, error = rule.table, str(e)
            self.states.append(RuleState(rule, table, rule.enabled, schema_error=error))
        self.cursor = GapCursor()
        self.ts_sources = {s.rule.name: _TsSource(s, None) for s in self.states if s.rule.mode == "timestamp"}
        self.last_error: str | None = None
        self.connected = False
        self.rounds = 0
        self.closed_ids = 0
        self.last_round_at: float | None = None
        self._schema_checked_at = -1e9
        self._trimmed_at = time.monotonic()
        self._by_table: dict[str, list[RuleState]] = {}
        self._wake = asyncio.Event()

    # -- the loop --
    async def run(self) -> None:
        logger.info(
            "cdc: capturing %d rule(s) every %gs (changelog %s)", len(self.states), self.interval_s, self.changelog
        )
        await self._poll_forever()

    async def _poll_forever(self) -> None:
        backoff = _FIRST_BACKOFF_S
        while True:
            conn: Connection | None = None
            try:
                await self._load_position()
                conn = await connect(self.mysql)
                self.probe.forget()
                self.connected = True
                self._schema_checked_at = -1e9
                while True:
                    await self._round(conn)
                    if self.last_error:
                        logger.info("cdc: working again after: %s", self.last_error)
                    self.last_error = None
                    backoff = _FIRST_BACKOFF_S
                    await self._sleep(self.interval_s)
            except (MySQLError, RedisError, OSError, ConnectionError, EOFError) as e:
                self._fail(e)
            except FencedError as e:
                # The lease moved on: the app cancels this component; until then, write nothing.
                self._fail(e)
            finally:
                self.connected = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.reconnect_max_s)

    def _fail(self, error: BaseException) -> None:
        message = describe_error(error)
        if message != self.last_error:
            logger.warning("cdc: %s (retrying with backoff; the position is kept)", message)
        self.last_error = message
        if self.last_round_at is not None:
            for state in self.states:
                state.lag_s = self.clock() - self.last_round_at

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        self._wake.clear()  # after the wait: a poke during a round is not lost

    def poke(self) -> None:
        """Poll now (tests and benchmarks; a notification could call it too)."""
        self._wake.set()

    async def _load_position(self) -> None:
        raw = await self.redis.hgetall(CdcKeys.state)  # type: ignore[misc]
        data = {k.decode(): v.decode() for k, v in raw.items()}
        self.cursor = GapCursor.from_json(data.get(CdcKeys.CHANGELOG))
        for state in self.states:
            state.delivered = int(data.get(CdcKeys.delivered_field(state.rule.name), 0))
        for name, source in self.ts_sources.items():
            source.cursor = TsCursor.from_json(data.get(CdcKeys.ts_field(name)))
            source.recent.clear()

    # -- one round --
    async def _round(self, conn: Connection) -> None:
        flags = await self.redis.hgetall(CdcKeys.rule_enabled)  # type: ignore[misc]
        overrides = {k.decode(): v == b"1" for k, v in flags.items()}
        for state in self.states:
            state.enabled = overrides.get(state.rule.name, state.rule.enabled)
        if time.monotonic() - self._schema_checked_at > _SCHEMA_CHECK_S:
            await self._check_schema(conn)
            self._schema_checked_at = time.monotonic()
        self.delivery.new_round()
        if any(s.rule.mode == "changelog" for s in self.states):
            await self._guard(conn, [s for s in self.states if s.rule.mode == "changelog"], self._changelog_round)
        for source in self.ts_sources.values():
            if source.state.enabled and source.state.schema_error is None and source.reader is not None:
                await self._guard(conn, [source.state], functools.partial(self._ts_round, source=source))
        for state in self.states:
            plugin_error = self.delivery.plugin_errors.get(state.rule.name)
            if plugin_error and state.source_error is None:
                state.source_error = plugin_error
        self.rounds += 1
        self.last_round_at = self.clock()

    async def _guard(self, conn: Connection, states: list[RuleState], step: Callable[[Connection], Any]) -> None:
        """Run one source's step; a server error (not a lost connection) is that source's rules' error."""
        try:
            await step(conn)
        except (MySQLError, ChangeFeedError) as e:
            if is_connection_error(e):
                raise
            message = describe_error(e)
            for state in states:
                if state.source_error != message:
                    logger.warning("cdc: rule %s: %s", state.rule.name, message)
                state.source_error = message
            return
        for state in states:
            state.source_error = None

    async def _check_schema(self, conn: Connection) -> None:
        """Missing tables, dropped watched columns, stale triggers: reported per rule."""
        self._by_table = {}
        changelog_ok = await table_info(conn, self.changelog) is not None
        behind = await cl.ids_behind(conn, self.changelog, self.cursor.high) if changelog_ok else None
        for state in self.states:
            rule = state.rule
            if state.schema_error and "." not in state.table:
                continue  # no database to look in: reported at start
            info = await table_info(conn, state.table)
            error = None
            if info is None:
                error = f"table {state.table} does not exist"
            else:
                watched = {c.column for c in rule.conditions}
                if rule.mode == "timestamp":
                    watched |= {rule.timestamp_column, *(rule.primary_key or [])}
                    watched |= {rule.created_column} if rule.created_column else set()
                gone = sorted(watched - info.column_names)
                pk = rule.primary_key or info.primary_key
                if gone:
                    error = f"watched column(s) {', '.join(gone)} no longer in {state.table}"
                elif not pk:
                    error = f"table {state.table} has no PRIMARY KEY (set primary_key in the rule)"
                elif rule.mode == "changelog":
                    if not changelog_ok:
                        error = f"changelog table {self.changelog} is missing: run `orchestrator cdc install`"
                    elif behind:
                        error = behind
                    else:
                        error = await cl.triggers_current(conn, self.changelog, state.table, info)
                else:
                    source = self.ts_sources[rule.name]
                    source.reader = TimestampReader(state.table, rule.timestamp_column, pk, rule.created_column)
            if error != state.schema_error and error:
                logger.warning("cdc: rule %s: %s", rule.name, error)
            state.schema_error = error
            if rule.mode == "changelog":
                self._by_table.setdefault(state.table, []).append(state)

    # -- changelog mode --
    async def _changelog_round(self, conn: Connection) -> None:
        """Read and deliver until caught up.

        Writes go to Redis one at a time and in order (a later position never lands before an
        earlier chunk's jobs), but the next chunk is built, and the next read runs, while the
        previous write is in flight: `planned` is the position once every write sent has landed.
        """
        planned = self.cursor
        in_flight: asyncio.Task[None] | None = None
        try:
            while True:
                info = await self.probe.read(conn) if planned.holes else None
                read = await self.reader.read(conn, planned)
                self.delivery.refresh()  # job records get this read's time, not the round's
                planned, in_flight = await self._deliver_changelog(
                    read.changes, read.seen_at or 0.0, planned, in_flight
                )
                if info is not None:
                    if in_flight is not None:
                        await in_flight  # holes are closed against the written position
                        in_flight = None
                    planned = await self._close_holes(info, read.read_upto)
                self._set_changelog_status(read.changes, caught_up=not read.full)
                if not read.full:
                    break
            if in_flight is not None:
                await in_flight
                in_flight = None
            for state in self.states:
                if state.rule.mode == "changelog":
                    state.position = self.cursor.low
        except BaseException as e:
            await _settle(in_flight, cancelled=isinstance(e, asyncio.CancelledError))
            raise
        if time.monotonic() - self._trimmed_at > _TRIM_EVERY_S:
            self._trimmed_at = time.monotonic()
            await self._trim(conn)

    async def _close_holes(self, info: TrxInfo, read_upto: int) -> GapCursor:
        """Give up the holes no open transaction can fill any more; returns the position."""
        cursor, closed = self.cursor.close(info, read_upto=read_upto, timeout_s=self.settings.hole_timeout_s)
        if closed:
            await self.delivery.write(Round(), self._changelog_position(cursor), {})
            self.cursor = cursor
            self.closed_ids += closed
        return self.cursor

    async def _trim(self, conn: Connection) -> None:
        try:
            await self.reader.trim(conn, self.cursor.low, self.settings.retention_s)
        except MySQLError as e:
            if is_connection_error(e):
                raise
            # e.g. a lock wait timeout: the rows stay until the next trim; delivery goes on
            logger.warning("cdc: trimming %s failed: %s", self.changelog, describe_error(e))

    async def _deliver_changelog(
        self, changes: list[Change], seen_at: float, planned: GapCursor, in_flight: asyncio.Task[None] | None
    ) -> tuple[GapCursor, asyncio.Task[None] | None]:
        """Send the changes chunk by chunk, each chunk's jobs with the position after it.

        Returns the position once everything sent has landed, and the last write, still in flight.
        """
        size = self.settings.batch_size
        by_table = {t: [s.rule for s in states if s.enabled] for t, states in self._by_table.items()}
        try:
            for start in range(0, len(changes), size):
                chunk = changes[start : start + size]
                batch = Round()
                for change in chunk:
                    rules = by_table.get(change.table)
                    if rules:
                        await self.delivery.add(batch, change, rules)
                planned = planned.advance((c.seq for c in chunk), seen_at)
                if in_flight is not None:
                    await in_flight
                in_flight = asyncio.ensure_future(self._write_changelog(batch, planned))
        except BaseException as e:
            await _settle(in_flight, cancelled=isinstance(e, asyncio.CancelledError))
            raise
        return planned, in_flight

    async def _write_changelog(self, batch: Round, cursor: GapCursor) -> None:
        await self._write(batch, self._changelog_position(cursor))
        self.cursor = cursor

    def _changelog_position(self, cursor: GapCursor) -> dict[str, str]:
        return {CdcKeys.CHANGELOG: cursor.to_json()}

    def _set_changelog_status(self, changes: list[Change], *, caught_up: bool) -> None:
        now = self.clock()
        newest: dict[str, float] = {}
        for change in changes:
            newest[change.table] = max(newest.get(change.table, 0.0), change.changed_at)
        for state in self.states:
            if state.rule.mode != "changelog":
                continue
            if state.table in newest:
                state.lag_s = max(now - newest[state.table], 0.0)
            elif caught_up:
                state.lag_s = 0.0

    async def _write(self, batch: Round, position: dict[str, str]) -> None:
        delivered = {s.rule.name: s.delivered for s in self.states}
        await self.delivery.write(batch, position, delivered)
        for state in self.states:
            state.delivered = delivered.get(state.rule.name, state.delivered)
            state.matched += batch.matched.get(state.rule.name, 0)

    # -- timestamp mode --
    async def _ts_round(self, conn: Connection, source: _TsSource) -> None:
        reader = source.reader
        assert reader is not None  # noqa: S101  a changelog source always has its reader
        safe = await reader.safe_point(
            conn, self.probe, margin_s=self.settings.timestamp_margin_s, timeout_s=self.settings.hole_timeout_s
        )
        scan = source.cursor
        size = self.settings.batch_size
        newest = 0.0
        while True:
            rows = await reader.read(conn, scan, size)
            batch = Round()
            cursor = source.cursor
            above: dict[str, datetime] = {}
            for row_cursor, change in rows:
                assert row_cursor.ts is not None  # noqa: S101  timestamp rows always carry ts
                if row_cursor.ts < safe:
                    cursor = row_cursor  # nothing can appear below this any more
                if change.change_id in source.recent:
                    continue
                await self.delivery.add(batch, change, [source.state.rule])
                newest = max(newest, change.changed_at)
                if row_cursor.ts >= safe:
                    above[change.change_id] = row_cursor.ts  # read again next poll: skip it then
            if batch.jobs or cursor != source.cursor:
                await self._write(batch, {CdcKeys.ts_field(source.state.rule.name): cursor.to_json()})
                source.cursor = cursor
            source.recent.update(above)
            if rows:
                scan = rows[-1][0]
            if len(rows) < size:
                break
        if source.cursor.ts is not None:
            floor = source.cursor.ts
            source.recent = {k: ts for k, ts in source.recent.items() if ts >= floor}
        source.state.position = source.cursor.describe()
        source.state.lag_s = max(self.clock() - newest, 0.0) if newest else 0.0

    # -- the component shape --
    async def health(self) -> ComponentHealth:
        if self.last_error:
            return ComponentHealth.failing(self.last_error, rules=len(self.states))
        return ComponentHealth(detail={"rules": len(self.states)})

    async def status(self) -> CdcStatus:
        return {
            "enabled": True,
            "connected": self.connected,
            "interval_s": self.interval_s,
            "changelog": changelog_status(self.changelog, self.cursor, self.closed_ids),
            "last_error": self.last_error,
            "rounds": self.rounds,
            "rules": [s.to_json() for s in self.states],
        }


async def _settle(in_flight: asyncio.Task[None] | None, *, cancelled: bool) -> None:
    """A round ends early: stop the write on its way if we are cancelled (its position was not taken
    in; the next leader replays it), else let it land or fail before the error goes up."""
    if in_flight is None:
        return
    if in_flight.done():
        if not in_flight.cancelled():
            in_flight.exception()  # retrieved: the error that ends the round is reported instead
        return
    if cancelled:
        in_flight.cancel()
        return
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await in_flight
