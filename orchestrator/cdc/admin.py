"""Change capture for the CLI: rules, status, install/uninstall, enable/disable, test, replay, snapshot.

The CLI reaches this through `app.cdc_admin()`; the leader's poller is not involved, except that
it reads the enable flags written here and publishes the status shown here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any, cast

from asyncmy.errors import MySQLError  # type: ignore[import-untyped,unused-ignore]
from redis.asyncio import Redis
from redis.exceptions import RedisError

from orchestrator.cdc import changelog as cl
from orchestrator.cdc.binlog_checks import current_position, is_purged, problems, server_facts
from orchestrator.cdc.binlog_position import BinlogPosition
from orchestrator.cdc.binlog_snapshot import (
    Progress,
    create_watermark_table,
    pending,
    progress_field,
    request_field,
    watermark_problem,
    watermark_table,
    write_mark,
)
from orchestrator.cdc.changelog import changelog_table
from orchestrator.cdc.db import Connection, connect, describe_error, json_value, qualified, quote, table_info
from orchestrator.cdc.delivery import Delivery, Round
from orchestrator.cdc.gaps import GapCursor
from orchestrator.cdc.model import CdcKeys, Change, job_id
from orchestrator.cdc.readers import ChangelogReader, TsCursor, after_clause
from orchestrator.cdc.rules import Rule
from orchestrator.cdc.settings import DatabaseSettings
from orchestrator.cdc.status import CdcStatus, RuleStatus
from orchestrator.cluster.lease import parse_published
from orchestrator.errors import ChangeFeedError, ConfigError, JobError, NotFoundError, PluginError
from orchestrator.jobs.model import Keys
from orchestrator.jobs.store import Checkpoint
from orchestrator.jobs.submit import JobRequest, Submitter

_CHUNK = 500
_WAIT_S = 0.2  # how often a waiting binlog snapshot looks at its progress


class CdcAdmin:
    """Args: settings; redis; submitter (validates and enqueues, as every job source does)."""

    def __init__(self, settings: DatabaseSettings, redis: Redis, submitter: Submitter) -> None:
        self.settings = settings
        self.redis = redis
        self.submitter = submitter
        self.rules = {r.name: r for r in settings.cdc.all_rules()}

    def rule(self, name: str) -> Rule:
        rule = self.rules.get(name)
        if rule is None:
            known = ", ".join(self.rules) or "none configured"
            raise NotFoundError(f"no cdc rule {name!r} (rules: {known})")
        return rule

    def _db(self) -> str | None:
        params = self.settings.mysql_params()
        return params.db if params else None

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        params = self.settings.mysql_params()
        if params is None:
            raise ConfigError("database_url: not set (DATABASE_URL): change capture needs a database")
        where = params.unix_socket or f"{params.host}:{params.port}"
        try:
            conn = await connect(params)
        except (MySQLError, OSError) as e:  # one line for the CLI; the driver's text holds no password
            raise ChangeFeedError(f"database {where}: cannot connect: {_reason(e)}") from None
        try:
            yield conn
        except MySQLError as e:
            raise ChangeFeedError(f"database {where}: {_reason(e)}") from None
        finally:
            conn.close()

    # -- rules and flags --
    async def overrides(self) -> dict[str, bool]:
        raw = await self.redis.hgetall(CdcKeys.rule_enabled)  # type: ignore[misc]
        return {k.decode(): v == b"1" for k, v in raw.items()}

    async def list_rules(self) -> list[dict[str, Any]]:
        """The configured rules; the enable flags from Redis when it answers (listing works without it)."""
        try:
            overrides = await self.overrides()
        except (RedisError, OSError):
            overrides = {}
        out = []
        for rule in self.rules.values():
            data = rule.model_dump(mode="json", exclude_none=True)
            data["enabled"] = overrides.get(rule.name, rule.enabled)
            out.append(data)
        return out

    async def set_enabled(self, name: str, enabled: bool) -> None:
        self.rule(name)
        await self.redis.hset(CdcKeys.rule_enabled, name, "1" if enabled else "0")  # type: ignore[misc]

    async def status(self) -> CdcStatus:
        """The leader's published status when there is one; else what Redis and the config say.

        With binlog rules, the server is checked too (`server_checks`: one line per missing setting
        or privilege, with its fix), whether a leader runs or not.
        """
        out = await self._status()
        if any(r.mode == "binlog" for r in self.rules.values()) and self.settings.mysql_params() is not None:
            out["server_checks"] = await self.binlog_checks()
        return out

    async def binlog_checks(self) -> list[str]:
        """What the server lacks for binlog mode; an unreachable server is one line too."""
        try:
            async with self.connection() as conn:
                facts = await server_facts(conn)
        except (MySQLError, OSError) as e:
            return [f"the database cannot be checked: {describe_error(e)}"]
        return problems(facts, replica_id=self.settings.cdc.binlog_server_id)

    async def _status(self) -> CdcStatus:
        raw = await self.redis.hget(Keys.component_status, "cdc")  # type: ignore[misc]
        live: CdcStatus | None = None
        published = parse_published(raw) if raw else None
        if published is not None and "cdc" in published["status"]:
            live = cast(CdcStatus, published["status"]["cdc"])  # what the leader's ChangePoller.status() returned
            if live["enabled"]:
                return {**live, "published_at": published["at"], "instance_id": published["instance_id"]}
        state = {k.decode(): v.decode() for k, v in (await self.redis.hgetall(CdcKeys.state)).items()}  # type: ignore[misc]
        overrides = await self.overrides()
        cursor = GapCursor.from_json(state.get(CdcKeys.CHANGELOG))
        rules: list[RuleStatus] = []
        for rule in self.rules.values():
            if rule.mode == "changelog":
                position: int | str | None = cursor.low
            elif rule.mode == "binlog":
                position = BinlogPosition.from_json(state.get(CdcKeys.BINLOG)).describe()
            else:
                position = TsCursor.from_json(state.get(CdcKeys.ts_field(rule.name))).describe()
            rules.append(
                {
                    "name": rule.name,
                    "table": rule.table,
                    "mode": rule.mode,
                    "enabled": overrides.get(rule.name, rule.enabled),
                    "position": position,
                    "lag_s": None,
                    "delivered": int(state.get(CdcKeys.delivered_field(rule.name), 0)),
                    "last_error": None,
                }
            )
        reason = None if self.settings.database_url else "no DATABASE_URL set"
        reason = reason or (live["reason"] if live is not None and not live["enabled"] else None)
        return {"enabled": False, "reason": reason or "no leader is running change capture", "rules": rules}

    # -- install / uninstall --
    def _changelog(self) -> str:
        try:
            return changelog_table(self.settings.cdc, self._db())
        except ValueError as e:
            raise ConfigError(str(e)) from e

    def _tables(self) -> list[str]:
        try:
            return [r.qualified_table(self._db()) for r in self.rules.values() if r.mode == "changelog"]
        except ValueError as e:
            raise ConfigError(str(e)) from e

    async def install(self, *, dry_run: bool) -> list[dict[str, Any]]:
        raw = await self.redis.hget(CdcKeys.state, CdcKeys.CHANGELOG)  # type: ignore[misc]
        first_id = GapCursor.from_json(raw).high + 1
        async with self.connection() as conn:
            steps = await cl.plan_install(conn, self._changelog(), self._tables(), first_id=first_id)
            if not dry_run:
                await cl.apply(conn, steps)
        return [s.to_json() for s in steps]

    async def uninstall(self, *, dry_run: bool, drop_changelog: bool) -> list[dict[str, Any]]:
        async with self.connection() as conn:
            steps = await cl.plan_uninstall(conn, self._changelog(), self._tables(), drop_changelog=drop_changelog)
            if not dry_run:
                await cl.apply(conn, steps)
        return [s.to_json() for s in steps]

    # -- test: a dry run of one change through one rule --
    async def test(
        self, name: str, operation: str, row: dict[str, Any] | None, before: dict[str, Any] | None
    ) -> dict[str, Any]:
        rule = self.rule(name)
        operation = operation.upper()
        if operation == "DELETE" and row is not None and before is None:
            row, before = None, row  # `--row` of a DELETE is the deleted row
        matched, checks = rule.evaluate(operation, row, before)
        change = Change("test", 0, rule.table, operation, {}, row, before, time.time())
        jobs = []
        if matched:
            for plugin in rule.plugins:
                request = JobRequest(
                    plugin=plugin,
                    params=dict(rule.params),
                    priority=rule.priority,
                    queue=rule.queue,
                    job_id=job_id(rule.name, "<change id>", plugin),
                    source="cdc",
                    context={"change_event": change.event(rule.name)},
                )
                entry: dict[str, Any] = {"plugin": plugin, "job_id": request.job_id}
                try:
                    prepared = await self.submitter.prepare(request)  # validates; writes nothing
                    record = prepared.record
                    entry.update(params=record.params, queue=record.queue, priority=record.priority)
                except (JobError, PluginError) as e:
                    entry["error"] = str(e)
                jobs.append(entry)
        return {
            "rule": rule.name,
            "operation": operation,
            "matched": matched,
            "checks": [{"check": what, "passed": ok} for what, ok in checks],
            "jobs": jobs,
            "enqueued": 0,
        }

    # -- replay: re-deliver from a changelog id --
    async def replay(self, name: str, from_id: int) -> dict[str, Any]:
        rule = self.rule(name)
        if rule.mode != "changelog":
            raise JobError(f"rule {name} is in timestamp mode: replay reads the changelog; use `cdc snapshot`")
        table = rule.qualified_table(self._db())
        raw = await self.redis.hget(CdcKeys.state, CdcKeys.CHANGELOG)  # type: ignore[misc]
        cursor = GapCursor.from_json(raw)
        # Fresh ids: a replay must not be swallowed by the dedupe of the first delivery.
        tag = f"r{int(time.time() * 1000)}"
        reader = ChangelogReader(self._changelog(), read_size=_CHUNK)
        delivery = Delivery(self.submitter, None)
        enqueued = changes = 0
        first: int | None = None
        position = from_id
        async with self.connection() as conn:
            while position <= cursor.high:
                rows = await reader.read_range(conn, position, cursor.high, limit=_CHUNK)
                if not rows:
                    break
                batch = Round()
                for change in rows:
                    in_hole = any(h.lo <= change.seq <= h.hi for h in cursor.holes)
                    if change.table != table or in_hole:
                        continue  # a hole is not delivered yet: the poller will
                    first = change.seq if first is None else first
                    replayed = Change(
                        f"{change.change_id}-{tag}", change.seq, change.table, change.operation,
                        change.primary_key, change.row, change.before, change.changed_at,
                    )  # fmt: skip
                    changes += 1
                    await delivery.add(batch, replayed, [rule])
                got = await delivery.write(batch, {f"replay:{rule.name}": str(rows[-1].seq)}, {})
                enqueued += sum(got.values())
                position = rows[-1].seq + 1
        if delivery.plugin_errors:
            raise JobError("; ".join(sorted(set(delivery.plugin_errors.values()))))
        return {
            "rule": name,
            "from": from_id,
            "first_found": first,
            "upto": cursor.high,
            "changes": changes,
            "enqueued": enqueued,
            "tag": tag,
        }

    async def _binlog_start(self) -> None:
        """Before a binlog rule's snapshot: a stored position the server purged (or none) moves to the
        current one; the stream resumes from there while the snapshot reads the tables (`cdc snapshot`
        is the way back from a purged position). Then one watermark write checks the table and grant
        the snapshot needs (cdc/binlog_snapshot.py), so a missing one is named here, with its fix.
        """
        binlog = [r.qualified_table(self._db()) for r in self.rules.values() if r.mode == "binlog"]
        table = watermark_table(self._db(), binlog)
        async with self.connection() as conn:
            facts = await server_facts(conn)
            current = await current_position(conn, facts)
            raw = await self.redis.hget(CdcKeys.state, CdcKeys.BINLOG)  # type: ignore[misc]
            stored = BinlogPosition.from_json(raw)
            if stored.empty or await is_purged(conn, stored):
                await self.redis.hset(CdcKeys.state, CdcKeys.BINLOG, current.to_json())  # type: ignore[misc]
            exists = await create_watermark_table(conn, table)  # when missing and the user may
            try:
                await write_mark(conn, table, "cli", "check", "check")  # a mark no chunk waits for: ignored
            except MySQLError as e:
                problem = watermark_problem(e, table, facts.user, missing=not exists)
                raise JobError(problem or describe_error(e)) from e

    async def request_binlog_snapshot(self, name: str, where: str | None, *, restart: bool) -> tuple[Progress, bool]:
        """Store (or keep, to resume) a binlog rule's snapshot request; the leader's capture takes it.

        Returns the request and whether an unfinished one with the same `where` was resumed.
        """
        self.rule(name)
        await self._binlog_start()
        saved = await self._binlog_snapshot_state(name)
        if saved is not None and not restart and not saved.done and saved.where == (where or ""):
            return saved, True
        progress = Progress(id=str(int(time.time() * 1000)), where=where or "")
        await self.redis.hset(CdcKeys.state, request_field(name), progress.to_json())  # type: ignore[misc]
        return progress, False

    async def _binlog_snapshot_state(self, name: str) -> Progress | None:
        fields = [request_field(name), progress_field(name)]
        request, progress = await self.redis.hmget(CdcKeys.state, fields)  # type: ignore[misc]
        return pending(Progress.from_json(request), Progress.from_json(progress))

    async def binlog_snapshot(self, name: str, where: str | None, *, restart: bool, wait: bool) -> dict[str, Any]:
        """`cdc snapshot` of a binlog rule: the request, then (wait) its progress until the leader is done."""
        progress, resumed = await self.request_binlog_snapshot(name, where, restart=restart)
        while wait and not progress.done:
            await asyncio.sleep(_WAIT_S)
            now = await self._binlog_snapshot_state(name)
            if now is None or now.id != progress.id:
                raise JobError(f"snapshot {progress.id} of rule {name} was replaced by another `cdc snapshot`")
            progress = now
        return {
            "rule": name,
            "snapshot_id": progress.id,
            "resumed": resumed,
            "done": progress.done,
            "rows": progress.rows,
            "enqueued": progress.enqueued,
            "from_stream": progress.skipped,
            "chunks": progress.chunks,
        }

    # -- snapshot: every existing row as an INSERT event --
    async def snapshot(
        self, name: str, where: str | None, *, restart: bool = False, wait: bool = True
    ) -> dict[str, Any]:
        rule = self.rule(name)
        if rule.mode == "binlog":  # taken by the leader, between watermarks in its stream
            return await self.binlog_snapshot(name, where, restart=restart, wait=wait)
        table = rule.qualified_table(self._db())
        key = CdcKeys.snapshot(name)
        saved = {k.decode(): v.decode() for k, v in (await self.redis.hgetall(key)).items()}  # type: ignore[misc]
        resumed = bool(saved) and not restart and saved.get("done") != "1" and saved.get("where", "") == (where or "")
        if resumed:
            snap_id = saved["id"]
            last = tuple(json.loads(saved["last_pk"])) if saved.get("last_pk") else None
            enqueued = int(saved.get("enqueued", 0))
        else:
            snap_id, last, enqueued = str(int(time.time())), None, 0
        as_insert = rule.model_copy(update={"operations": ["INSERT"]})
        seq = 0
        delivery = Delivery(self.submitter, None)
        rows_read = 0
        async with self.connection() as conn:
            info = await table_info(conn, table)
            if info is None:
                raise NotFoundError(f"table {table} does not exist")
            pk = rule.primary_key or info.primary_key
            if not pk:
                raise JobError(f"table {table} has no PRIMARY KEY: set primary_key in the rule")
            while True:
                clauses, args = [], []
                if where:
                    clauses.append(f"({where})")
                if last is not None:
                    sql, more = after_clause(pk, last)
                    clauses.append(sql)
                    args += more
                sql = f"SELECT * FROM {qualified(table)}"  # noqa: S608  names quoted; --where is trusted
                if clauses:
                    sql += " WHERE " + " AND ".join(clauses)
                sql += f" ORDER BY {', '.join(quote(c) for c in pk)} LIMIT %s"
                async with conn.cursor() as cur:
                    await cur.execute(sql, [*args, _CHUNK])
                    names = [d[0] for d in cur.description]
                    rows = [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]
                if not rows:
                    break
                batch = Round()
                now = time.time()
                for raw in rows:
                    row = {k: json_value(v) for k, v in raw.items()}
                    key_values = {c: row[c] for c in pk}
                    change_id = f"s{snap_id}-" + ",".join(str(v) for v in key_values.values())
                    change = Change(change_id, seq, table, "INSERT", key_values, row, None, now)
                    await delivery.add(batch, change, [as_insert])
                last = tuple(raw[c] for c in pk)
                rows_read += len(rows)
                progress = {
                    "id": snap_id, "where": where or "", "last_pk": json.dumps([json_value(v) for v in last]),
                    "enqueued": str(enqueued + len(batch.jobs)), "done": "0",
                }  # fmt: skip
                # The jobs, the index actions and the resume point land together: an interrupted
                # snapshot resumes exactly.
                await self.submitter.write_many(batch.jobs, checkpoint=Checkpoint(key, progress, streams=batch.index))
                enqueued += len(batch.jobs)
        await self.redis.hset(key, "done", "1")  # type: ignore[misc]
        if delivery.plugin_errors:
            raise JobError("; ".join(sorted(set(delivery.plugin_errors.values()))))
        return {"rule": name, "snapshot_id": snap_id, "resumed": resumed, "rows": rows_read, "enqueued": enqueued}


def _reason(error: BaseException) -> str:
    """`(1045, "Access denied ...")` -> `1045 Access denied ...`; an OSError's strerror."""
    if isinstance(error, OSError):
        return error.strerror or str(error)
    args = error.args
    return f"{args[0]} {args[1]}" if len(args) == 2 else str(error) or type(error).__name__
