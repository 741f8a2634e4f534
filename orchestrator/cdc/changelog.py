"""The changelog table and the capture triggers: install, uninstall, and whether they are current.

`orchestrator cdc install` creates one changelog table (`orch_changelog` in the DATABASE_URL's
database unless `cdc.changelog_table` says otherwise) and, on every table a changelog-mode rule
watches, three AFTER triggers that copy each row change into it, with the row before and after as
JSON. Idempotent: a trigger that is already what it should be is left alone, one whose table
gained or lost columns is replaced in one statement (`CREATE OR REPLACE TRIGGER`, MariaDB 10.1.4+:
no window in which a write goes uncaptured). A trigger names every column, so after an ALTER TABLE
that drops a column the table's writes fail until `cdc install` runs again: the poller reports it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from orchestrator.cdc.db import Connection, TableInfo, execute, fetchall, qualified, quote, split_table, table_info
from orchestrator.cdc.rules import CdcSettings

DEFAULT_CHANGELOG = "orch_changelog"
_TRIGGER_PREFIX = "orch_cdc_"
# Binary values are not valid JSON text: they travel base64-encoded.
_BINARY_TYPES = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "geometry"}
_EVENTS = (("INSERT", "ai"), ("UPDATE", "au"), ("DELETE", "ad"))


def changelog_ddl(changelog: str, first_id: int = 1) -> str:
    # created_at is the change's time (statement time): the "commit time" change events carry.
    # first_id: a changelog created again starts above the position stored in Redis, or the poller
    # would take its first ids for changes it delivered already.
    return (
        f"CREATE TABLE IF NOT EXISTS {qualified(changelog)} (\n"
        "  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,\n"
        "  tbl VARCHAR(129) NOT NULL,\n"
        "  op CHAR(6) NOT NULL,\n"
        "  pk LONGTEXT NOT NULL,\n"
        "  row_after LONGTEXT NULL,\n"
        "  row_before LONGTEXT NULL,\n"
        # no secondary index: every captured write pays for each index of this table
        "  created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)\n"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4" + (f" AUTO_INCREMENT={int(first_id)}" if first_id > 1 else "")
    )


def trigger_name(table: str, suffix: str) -> str:
    _, name = split_table(table)
    full = f"{_TRIGGER_PREFIX}{suffix}_{name}"
    if len(full) <= 64:
        return full
    digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{full[:55]}_{digest}"


def _json_object(alias: str, columns: list[tuple[str, str]]) -> str:
    parts = []
    for column, data_type in columns:
        ref = f"{alias}.{quote(column)}"
        if data_type in _BINARY_TYPES:
            ref = f"TO_BASE64({ref})"
        elif data_type == "bit":
            ref = f"CAST({ref} AS UNSIGNED)"
        parts.append(f"'{_sql_string(column)}', {ref}")
    return "JSON_OBJECT(" + ", ".join(parts) + ")"


def _sql_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "''")


def trigger_body(table: str, changelog: str, info: TableInfo, operation: str) -> str:
    """The statement a trigger runs (what information_schema.TRIGGERS shows as ACTION_STATEMENT)."""
    pk_cols = [(c, t) for c, t in info.columns if c in info.primary_key]
    pk_cols.sort(key=lambda ct: info.primary_key.index(ct[0]))
    image = "OLD" if operation == "DELETE" else "NEW"
    after = _json_object("NEW", info.columns) if operation != "DELETE" else "NULL"
    before = _json_object("OLD", info.columns) if operation != "INSERT" else "NULL"
    return (
        f"INSERT INTO {qualified(changelog)} (tbl, op, pk, row_after, row_before) VALUES "  # noqa: S608  quoted, escaped
        f"('{_sql_string(table)}', '{operation}', {_json_object(image, pk_cols)}, {after}, {before})"
    )


def trigger_sql(table: str, changelog: str, info: TableInfo, operation: str, suffix: str) -> str:
    db, name = split_table(table)
    return (
        f"CREATE OR REPLACE TRIGGER {quote(db)}.{quote(trigger_name(table, suffix))} "
        f"AFTER {operation} ON {quote(db)}.{quote(name)} FOR EACH ROW "
        + trigger_body(table, changelog, info, operation)
    )


Action = Literal["create", "replace", "unchanged", "drop", "absent", "error"]


@dataclass(frozen=True)
class Step:
    """One thing install/uninstall did (or, with --dry-run, would do)."""

    target: str
    action: Action
    sql: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"target": self.target, "action": self.action, "sql": self.sql, "error": self.error}


async def _existing_triggers(conn: Connection, table: str) -> dict[str, str]:
    db, name = split_table(table)
    rows = await fetchall(
        conn,
        "SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS "
        "WHERE EVENT_OBJECT_SCHEMA = %s AND EVENT_OBJECT_TABLE = %s AND TRIGGER_NAME LIKE %s",
        (db, name, _TRIGGER_PREFIX.replace("_", "\\_") + "%"),
    )
    return {str(n): str(body) for n, body in rows}


async def plan_install(conn: Connection, changelog: str, tables: list[str], *, first_id: int = 1) -> list[Step]:
    """What `cdc install` has to do; nothing is changed."""
    steps: list[Step] = []
    exists = await table_info(conn, changelog) is not None
    ddl = None if exists else changelog_ddl(changelog, first_id)
    steps.append(Step(changelog, "unchanged" if exists else "create", ddl))
    for table in sorted(set(tables)):
        info = await table_info(conn, table)
        if info is None:
            steps.append(Step(table, "error", error=f"table {table} does not exist"))
            continue
        if not info.primary_key:
            steps.append(Step(table, "error", error=f"table {table} has no PRIMARY KEY (change events need one)"))
            continue
        current = await _existing_triggers(conn, table)
        for operation, suffix in _EVENTS:
            name = trigger_name(table, suffix)
            wanted = trigger_body(table, changelog, info, operation)
            target = f"{split_table(table)[0]}.{name}"
            if current.get(name) == wanted:
                steps.append(Step(target, "unchanged"))
            else:
                sql = trigger_sql(table, changelog, info, operation, suffix)
                steps.append(Step(target, "replace" if name in current else "create", sql))
    return steps


async def plan_uninstall(conn: Connection, changelog: str, tables: list[str], *, drop_changelog: bool) -> list[Step]:
    steps: list[Step] = []
    for table in sorted(set(tables)):
        db, _ = split_table(table)
        current = await _existing_triggers(conn, table)
        for _, suffix in _EVENTS:
            name = trigger_name(table, suffix)
            target = f"{db}.{name}"
            if name in current:
                steps.append(Step(target, "drop", f"DROP TRIGGER IF EXISTS {quote(db)}.{quote(name)}"))
            else:
                steps.append(Step(target, "absent"))
    if drop_changelog:
        exists = await table_info(conn, changelog) is not None
        sql = f"DROP TABLE IF EXISTS {qualified(changelog)}"
        steps.append(Step(changelog, "drop" if exists else "absent", sql if exists else None))
    return steps


async def apply(conn: Connection, steps: list[Step]) -> None:
    for step in steps:
        if step.sql and step.action in {"create", "replace", "drop"}:
            await execute(conn, step.sql)


async def triggers_current(conn: Connection, changelog: str, table: str, info: TableInfo) -> str | None:
    """None when the table's three triggers are installed and match its columns; else why not."""
    current = await _existing_triggers(conn, table)
    for operation, suffix in _EVENTS:
        name = trigger_name(table, suffix)
        if name not in current:
            return f"capture trigger {name} is missing: run `orchestrator cdc install`"
        if current[name] != trigger_body(table, changelog, info, operation):
            return (
                f"the columns of {table} changed since `orchestrator cdc install` (a column added or dropped): "
                "its writes fail or go uncaptured until you run `orchestrator cdc install` again"
            )
    return None


async def ids_behind(conn: Connection, changelog: str, high: int) -> str | None:
    """Why the changelog's next id is at or below the stored position (it was dropped and created
    again outside `cdc install`), or None when it is not."""
    db, name = split_table(changelog)
    rows = await fetchall(
        conn,
        "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
        (db, name),
    )
    next_id = rows[0][0] if rows else None
    if next_id is None or int(next_id) > high:
        return None
    return (
        f"changelog {changelog} gives out ids from {next_id} but {high} were delivered already: it was created "
        f"again; run `ALTER TABLE {changelog} AUTO_INCREMENT = {high + 1}`"
    )


def changelog_table(settings: CdcSettings, default_db: str | None) -> str:
    name = settings.changelog_table or DEFAULT_CHANGELOG
    if "." in name:
        return name
    if not default_db:
        msg = "cdc.changelog_table: give it as db.table (DATABASE_URL names no database)"
        raise ValueError(msg)
    return f"{default_db}.{name}"
