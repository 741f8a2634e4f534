"""Binlog capture on the leader: the reader thread's transactions -> jobs, with the position, atomically.

The loop side of binlog mode. At start it checks the server (cdc/binlog_checks.py: nothing starts
half configured), loads the position from Redis, starts ONE reader thread (cdc/binlog_stream.py)
and takes whole transactions from it in commit order, up to `cdc.batch_size` rows per atomic write
(`Delivery.write`: the jobs of those transactions and the position after the last one, fenced by
the lease). A crash replays at most the batch being written, and that enqueues nothing twice: a
change's id is its transaction's GTID (or file:pos) and its row index.

`cdc snapshot` of a binlog rule is taken here too, next to the stream (one task in the session's
TaskGroup): primary-key chunks between watermarks that the stream itself hands over
(cdc/binlog_snapshot.py).

Failures (the server gone, a purged position, Redis unreachable, the lease lost) stop the thread,
are reported, and the loop starts again from the position in Redis after a backoff.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

import pymysql  # type: ignore[import-untyped,unused-ignore]
from asyncmy.errors import MySQLError  # type: ignore[import-untyped,unused-ignore]
from redis.asyncio import Redis
from redis.exceptions import RedisError

from orchestrator.cdc.binlog_checks import current_position, is_purged, problems, server_facts
from orchestrator.cdc.binlog_position import BinlogPosition
from orchestrator.cdc.binlog_snapshot import (
    Chunk,
    Progress,
    Watermarks,
    new_nonce,
    pending,
    progress_field,
    read_chunk,
    request_field,
    watermark_problem,
    watermark_table,
    write_mark,
)
from orchestrator.cdc.binlog_stream import BinlogThread, Handoff, Streaming, Txn
from orchestrator.cdc.db import Connection, connect, describe_error, table_info
from orchestrator.cdc.delivery import Delivery, Round
from orchestrator.cdc.model import CdcKeys, Change
from orchestrator.cdc.rules import Rule
from orchestrator.cdc.settings import DatabaseSettings, MySQLParams
from orchestrator.cdc.status import BinlogStatus, CdcStatus, RuleState
from orchestrator.cluster.lease import LeaderLease
from orchestrator.components import BaseComponent, ComponentHealth
from orchestrator.errors import ChangeFeedError, FencedError
from orchestrator.jobs.submit import Submitter

logger = logging.getLogger(__name__)

_FIRST_BACKOFF_S = 0.2
_SNAPSHOT_LOOK_S = 0.2  # how often the leader looks for a `cdc snapshot` request of a binlog rule
_FLAGS_EVERY_S = 1.0
_ER_MASTER_FATAL_READING_BINLOG = 1236  # the position asked for is not in the server's binlogs


# what a lost server, Redis or connection raises: reported, and retried from the stored position
_EXPECTED = (MySQLError, pymysql.MySQLError, RedisError, OSError, ConnectionError, EOFError)


class BinlogCapture(BaseComponent):
    """Change capture from the binlog (the rules with `mode = "binlog"`).

    Args:
        section: DATABASE_URL and the `[cdc]` section.
        mysql: DATABASE_URL taken apart.
        submitter / lease / redis: as for the poller.
        name: the component's name (`cdc`; `cdc-binlog` next to a poller for the other modes).
    """

    name = "cdc"
    leader_only = True
    # Its /status key: "cdc" alone, "cdc_binlog" next to the poller of the other modes (which has "cdc").
    status_keys = ("cdc", "cdc_binlog")

    @property
    def status_key(self) -> str:
        return "cdc" if self.name == "cdc" else "cdc_binlog"

    def __init__(
        self,
        section: DatabaseSettings,
        mysql: MySQLParams,
        *,
        submitter: Submitter,
        lease: LeaderLease,
        redis: Redis,
        name: str = "cdc",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.section = section
        self.settings = settings = section.cdc
        self.mysql = mysql
        self.redis = redis
        self.clock = clock
        self.delivery = Delivery(submitter, lease)
        self.states: list[RuleState] = []
        for rule in settings.all_rules():
            if rule.mode == "binlog":
                self.states.append(RuleState(rule, rule.qualified_table(mysql.db), rule.enabled))
        self.position = BinlogPosition()
        self.problems: list[str] = []
        self.server = ""
        self.purged = False
        self.last_error: str | None = None
        self.connected = False
        self.rounds = 0
        self.transactions = 0
        self._is_mariadb = True
        self._flags_at = -1e9
        self._by_table: dict[str, list[RuleState]] = {}
        for state in self.states:
            self._by_table.setdefault(state.table, []).append(state)
        self.watermark_table = watermark_table(mysql.db, [s.table for s in self.states])
        self.marks = Watermarks(self.watermark_table)
        self._user = mysql.user
        self._snapshot_errors: dict[str, str] = {}  # rule -> why its snapshot cannot go on

    async def run(self) -> None:
        logger.info("cdc: capturing %d rule(s) from the binlog", len(self.states))
        backoff = _FIRST_BACKOFF_S
        while True:
            try:
                await self._stream()
            except _EXPECTED as e:
                self._fail(self._explain(e))
            except (ChangeFeedError, FencedError) as e:
                self._fail(str(e))
            finally:
                if self.connected:  # it streamed: the next attempt starts from a short wait again
                    backoff = _FIRST_BACKOFF_S
                self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.reconnect_max_s)

    def _explain(self, error: BaseException) -> str:
        code = error.args[0] if error.args else None
        if code == _ER_MASTER_FATAL_READING_BINLOG:
            return self._purged_message()
        return describe_error(error)

    def _fail(self, message: str) -> None:
        if message != self.last_error:
            logger.warning("cdc: binlog: %s (retrying with backoff; the position is kept)", message)
        self.last_error = message
        for state in self.states:
            state.source_error = message

    async def _check(self) -> BinlogPosition:
        """The server checks and the stored position; returns where the binlog is now.

        Raises:
            ChangeFeedError: a missing setting or privilege (each named with its fix), or the stored
                position purged from the server (unless `on_purged = "snapshot"` took the tables again).
        """
        conn = await connect(self.mysql)
        try:
            facts = await server_facts(conn)
            self.server = facts.version
            self.problems = problems(facts, replica_id=self.settings.binlog_server_id)
            if self.problems:
                raise ChangeFeedError("binlog capture cannot start: " + "; ".join(self.problems))
            self._is_mariadb = facts.is_mariadb
            self._user = facts.user
            current = await current_position(conn, facts)
            raw = await self.redis.hget(CdcKeys.state, CdcKeys.BINLOG)  # type: ignore[misc]
            self.position = BinlogPosition.from_json(raw)
            if await is_purged(conn, self.position):
                if self.settings.on_purged != "snapshot":
                    raise ChangeFeedError(self._purged_message())
                await self._resnapshot(current)
            return current
        finally:
            conn.close()

    async def _resnapshot(self, current: BinlogPosition) -> None:
        """on_purged = "snapshot": resume from the current position, and request a snapshot of every
        table (taken by this component's snapshot task once it streams)."""
        from orchestrator.cdc.admin import CdcAdmin  # the CLI side: only needed here

        logger.warning("cdc: binlog: %s; on_purged = snapshot: taking the tables again", self._purged_message())
        await self.delivery.write(Round(), {CdcKeys.BINLOG: current.to_json()}, {})
        self.position = current
        admin = CdcAdmin(self.section, self.redis, self.delivery.submitter)
        for state in self.states:  # requests only: this component takes them once it streams
            await admin.request_binlog_snapshot(state.rule.name, None, restart=True)

    def _purged_message(self) -> str:
        self.purged = True
        first = self.states[0].rule.name if self.states else "RULE"
        return (
            f"binlog position {self.position.describe()} is no longer on the server (purged): "
            f"`orchestrator cdc snapshot {first}` (each binlog rule) takes the tables again and resumes "
            'from the current position (or set [cdc] on_purged = "snapshot")'
        )

    async def _stream(self) -> None:
        current = await self._check()
        if self.position.empty:
            self.position = current
            # the first start: say where it began (a replay of the same round enqueues nothing twice)
            await self.delivery.write(Round(), {CdcKeys.BINLOG: self.position.to_json()}, {})
        await self._load_delivered()
        self.marks = Watermarks(self.watermark_table)  # chunks of an earlier session are read again
        handoff = Handoff(asyncio.get_running_loop(), max_txns=max(self.settings.batch_size * 4, 1000))
        thread = BinlogThread(
            self.mysql,
            server_id=self.settings.binlog_server_id,
            start=self.position,
            current=current,
            tables={*self._by_table, self.watermark_table},
            is_mariadb=self._is_mariadb,
            handoff=handoff,
        )
        thread.start()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._snapshots(), name="cdc-binlog-snapshots")
                await self._consume(handoff)
        except BaseExceptionGroup as group:  # the stream's own error, reported as the other modes do
            raise group.exceptions[0] from None
        finally:
            await thread.stop()

    async def _consume(self, handoff: Handoff) -> None:
        while True:
            items = await handoff.take(self.settings.batch_size)
            txns = [t for t in items if isinstance(t, Txn)]
            if txns:
                await self._deliver(txns)
            for item in items:
                if isinstance(item, _EXPECTED):
                    raise item
                if isinstance(item, BaseException):  # e.g. a row the library cannot decode
                    raise ChangeFeedError(f"binlog reader: {describe_error(item)}") from item
                if isinstance(item, Streaming):
                    self._streaming()

    # -- snapshots: chunks between watermarks (cdc/binlog_snapshot.py) --
    async def _snapshots(self) -> None:
        """Takes the `cdc snapshot` requests of the binlog rules, one chunk at a time, while streaming."""
        while True:
            await asyncio.sleep(_SNAPSHOT_LOOK_S)
            if not self.connected:  # the marks must fall after the position the stream resumed from
                continue
            for state in self.states:
                if not state.enabled:  # its stream changes are not delivered: neither are its chunks
                    continue
                name = state.rule.name
                fields = [request_field(name), progress_field(name)]
                request, stored = await self.redis.hmget(CdcKeys.state, fields)  # type: ignore[misc]
                progress = pending(Progress.from_json(request), Progress.from_json(stored))
                if progress is not None and not progress.done:
                    await self._take(state, progress)

    async def _take(self, state: RuleState, progress: Progress) -> None:
        rule = state.rule
        as_insert = rule.model_copy(update={"operations": ["INSERT"]})
        conn = await connect(self.mysql)
        try:
            info = await table_info(conn, state.table)
            key_columns = list(rule.primary_key or (info.primary_key if info else []))
            if info is None:
                return await self._snapshot_problem(state, f"snapshot: table {state.table} does not exist")
            if not key_columns:
                message = f"snapshot: table {state.table} has no PRIMARY KEY: set primary_key in the rule"
                return await self._snapshot_problem(state, message)
            while not progress.done:
                raw = await self.redis.hget(CdcKeys.state, request_field(rule.name))  # type: ignore[misc]
                request = Progress.from_json(raw)
                if request is None or request.id != progress.id or not state.enabled:  # restarted, gone, disabled
                    return
                try:
                    progress = await self._chunk(conn, state, as_insert, key_columns, progress)
                except _EXPECTED as e:
                    problem = watermark_problem(e, self.watermark_table, self._user)
                    if problem is None:
                        raise
                    return await self._snapshot_problem(state, problem)
                if state.source_error is not None and state.source_error == self._snapshot_errors.get(rule.name):
                    state.source_error = None  # fixed (a grant given, a table created): a chunk went through
            logger.info(
                "cdc: rule %s: snapshot %s done: %d rows, %d from the stream instead, %d jobs",
                rule.name, progress.id, progress.rows, progress.skipped, progress.enqueued,
            )  # fmt: skip
        finally:
            conn.close()

    async def _snapshot_problem(self, state: RuleState, message: str) -> None:
        """A snapshot that cannot go on: reported on its rule (once in the log), tried again later."""
        if message != state.source_error:
            logger.warning("cdc: rule %s: %s", state.rule.name, message)
        state.source_error = self._snapshot_errors[state.rule.name] = message
        await asyncio.sleep(self.settings.reconnect_max_s)

    async def _chunk(
        self, conn: Connection, state: RuleState, rule: Rule, key_columns: list[str], progress: Progress
    ) -> Progress:
        """LOW, SELECT, HIGH; returns the progress once the stream delivered the chunk (unchanged if it
        must be read again)."""
        nonce = new_nonce()
        # registered before LOW is written: the stream may reach LOW before the SELECT returns
        chunk = Chunk(rule, state.table, key_columns, [], progress)
        self.marks.register(nonce, chunk)
        try:
            await write_mark(conn, self.watermark_table, rule.name, nonce, "low")
            rows = await read_chunk(conn, state.table, key_columns, progress, self.settings.snapshot_chunk_rows)
            after = dataclasses.replace(progress, rows=progress.rows + len(rows), chunks=progress.chunks + 1)
            if rows:
                after.last_pk = [rows[-1][c] for c in key_columns]
            after.done = len(rows) < self.settings.snapshot_chunk_rows
            chunk.rows, chunk.after = rows, after  # before HIGH is written: the stream reads them at HIGH
            await write_mark(conn, self.watermark_table, rule.name, nonce, "high")
            await chunk.finished.wait()
        finally:
            self.marks.forget(nonce)
        return chunk.after if chunk.delivered else progress

    def _streaming(self) -> None:
        """The server accepted the position and streams: whatever failed before is over."""
        self.connected = True
        if self.last_error is not None:
            logger.info("cdc: binlog: working again after: %s", self.last_error)
        self.last_error = None
        self.purged = False
        for state in self.states:
            state.source_error = None

    async def _load_delivered(self) -> None:
        fields = [CdcKeys.delivered_field(s.rule.name) for s in self.states]
        values = await self.redis.hmget(CdcKeys.state, fields)  # type: ignore[misc]
        for state, value in zip(self.states, values, strict=True):
            state.delivered = int(value or 0)

    async def _refresh_flags(self) -> None:
        if time.monotonic() - self._flags_at < _FLAGS_EVERY_S:
            return
        self._flags_at = time.monotonic()
        flags = await self.redis.hgetall(CdcKeys.rule_enabled)  # type: ignore[misc]
        overrides = {k.decode(): v == b"1" for k, v in flags.items()}
        for state in self.states:
            state.enabled = overrides.get(state.rule.name, state.rule.enabled)
        self.delivery.new_round()

    async def _on_mark(self, batch: Round, mark: Change, fields: dict[str, str], chunks: list[Chunk]) -> None:
        """A watermark: at a chunk's HIGH, the rows the stream did not touch meanwhile, here in the
        stream, and the chunk's progress in the same write."""
        chunk = self.marks.on_mark(mark)
        if chunk is None:
            return
        jobs = len(batch.jobs)
        for row_change in chunk.emit(mark):
            await self.delivery.add(batch, row_change, [chunk.rule])
        chunk.after.enqueued += len(batch.jobs) - jobs
        fields[progress_field(chunk.rule.name)] = chunk.after.to_json()
        chunks.append(chunk)

    async def _deliver(self, txns: list[Txn]) -> None:
        """One atomic write: the jobs of these whole transactions and the position after the last."""
        await self._refresh_flags()
        self.delivery.refresh()
        batch = Round()
        position = BinlogPosition(dict(self.position.gtids), self.position.file, self.position.pos)
        newest = 0.0
        fields: dict[str, str] = {}
        chunks: list[Chunk] = []
        for txn in txns:
            for change in txn.changes:
                if change.table == self.watermark_table:
                    await self._on_mark(batch, change, fields, chunks)
                    continue
                self.marks.strike(change)
                newest = max(newest, change.changed_at)
                rules = []
                for state in self._by_table.get(change.table, ()):
                    if not state.enabled:
                        continue
                    image = change.row if change.row is not None else change.before or {}
                    gone = sorted({c.column for c in state.rule.conditions} - set(image))
                    if gone:  # reported on this rule; the others go on
                        error = f"watched column(s) {', '.join(gone)} not in {state.table} (dropped?)"
                        if error != state.schema_error:
                            logger.warning("cdc: rule %s: %s", state.rule.name, error)
                        state.schema_error = error
                        continue
                    state.schema_error = None
                    if state.rule.primary_key:  # the rule names its key columns (a table without a PRIMARY KEY)
                        keyed = dataclasses.replace(
                            change, primary_key={c: image.get(c) for c in state.rule.primary_key}
                        )
                        await self.delivery.add(batch, keyed, [state.rule])
                    else:
                        rules.append(state.rule)
                if rules:
                    await self.delivery.add(batch, change, rules)
            position.advance(txn.position, next_pos=txn.next_pos, next_file=txn.next_file)
        delivered = {s.rule.name: s.delivered for s in self.states}
        # the chunks' progress lands with their jobs (a failed write ends the session and its snapshot
        # task: the chunk is read again from the stored progress)
        await self.delivery.write(batch, {CdcKeys.BINLOG: position.to_json(), **fields}, delivered)
        for chunk in chunks:
            chunk.delivered = True
            chunk.finished.set()
        self.position = position
        self.transactions += len(txns)
        self.rounds += 1
        described = position.describe()
        for state in self.states:
            state.position = described
            state.matched += batch.matched.get(state.rule.name, 0)
            state.delivered = delivered[state.rule.name]
            if newest:
                state.lag_s = max(self.clock() - newest, 0.0)
            plugin_error = self.delivery.plugin_errors.get(state.rule.name)
            if plugin_error:
                state.source_error = plugin_error

    # -- the component shape --
    async def health(self) -> ComponentHealth:
        if self.last_error:
            return ComponentHealth.failing(self.last_error, rules=len(self.states))
        return ComponentHealth(detail={"rules": len(self.states)})

    def binlog_status(self) -> BinlogStatus:
        return {
            "position": self.position.describe(),
            "server": self.server,
            "problems": list(self.problems),
            "purged": self.purged,
            "transactions": self.transactions,
        }

    async def status(self) -> CdcStatus:
        return {
            "enabled": True,
            "connected": self.connected,
            "interval_s": 0.0,
            "binlog": self.binlog_status(),
            "last_error": self.last_error,
            "rounds": self.rounds,
            "rules": [s.to_json() for s in self.states],
        }
