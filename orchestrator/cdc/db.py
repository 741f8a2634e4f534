"""MySQL/MariaDB access for change capture: connections, identifiers, schema facts (asyncmy only)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import asyncmy  # type: ignore[import-untyped,unused-ignore]
from asyncmy.errors import MySQLError  # type: ignore[import-untyped,unused-ignore]

from orchestrator.cdc.settings import MySQLParams

# Errors that mean "the connection is gone or unusable": reconnect. Anything else from the server
# (no such table, unknown column) is the rule's problem, reported with it.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, ConnectionError, EOFError)
ER_ACCESS_DENIED = (1227, 1142, 1044)  # no PROCESS privilege / table access / db access
_CONNECTION_CODES = {2003, 2006, 2013, 2055, 1927, 1053, 1152, 1184}

Connection = Any  # asyncmy.Connection (asyncmy ships no type hints)


def is_connection_error(error: BaseException) -> bool:
    if isinstance(error, CONNECTION_ERRORS):
        return True
    code = error.args[0] if isinstance(error, MySQLError) and error.args else None
    return isinstance(code, int) and code in _CONNECTION_CODES


def error_code(error: BaseException) -> int | None:
    code = error.args[0] if isinstance(error, MySQLError) and error.args else None
    return code if isinstance(code, int) else None


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


async def connect(params: MySQLParams, *, connect_timeout_s: float = 5.0) -> Connection:
    """An autocommit connection pinned to UTC.

    Autocommit: under REPEATABLE READ a long-lived transaction never sees rows committed after
    its first read. UTC: TIMESTAMP values and INNODB_TRX times compare in one zone.
    """
    kwargs: dict[str, Any] = {
        "user": params.user,
        "password": params.password,
        "db": params.db,
        "autocommit": True,
        "connect_timeout": connect_timeout_s,
        # A lock wait (only trimming takes locks) must not stall the poller for InnoDB's 50 s default.
        "init_command": "SET time_zone = '+00:00', innodb_lock_wait_timeout = 5",
    }
    if params.unix_socket:
        kwargs["unix_socket"] = params.unix_socket
    else:
        kwargs.update(host=params.host, port=params.port)
    return await asyncmy.connect(**kwargs)


async def fetchall(conn: Connection, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    async with conn.cursor() as cur:
        await cur.execute(sql, args)
        return list(await cur.fetchall())


async def execute(conn: Connection, sql: str, args: Any = None) -> int:
    async with conn.cursor() as cur:
        return int(await cur.execute(sql, args))


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def qualified(table: str) -> str:
    return ".".join(quote(p) for p in table.split("."))


def split_table(table: str) -> tuple[str, str]:
    db, _, name = table.partition(".")
    return db, name


@dataclass(frozen=True)
class TableInfo:
    columns: list[tuple[str, str]]  # (name, data type), in table order
    primary_key: list[str]

    @property
    def column_names(self) -> set[str]:
        return {c for c, _ in self.columns}


async def table_info(conn: Connection, table: str) -> TableInfo | None:
    """Columns and primary key of `db.table`, or None when it does not exist."""
    db, name = split_table(table)
    cols = await fetchall(
        conn,
        "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (db, name),
    )
    if not cols:
        return None
    pk = await fetchall(
        conn,
        "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
        (db, name),
    )
    return TableInfo([(str(c), str(t).lower()) for c, t in cols], [str(c) for (c,) in pk])


def json_value(value: Any) -> Any:
    """A column value as JSON carries it (what a change event shows for timestamp-mode rows)."""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            return bytes(value).hex()
    return value


def load_json(value: Any) -> Any:
    """MariaDB hands JSON back as text (LONGTEXT, or bytes for JSON_OBJECT results)."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode()
    return json.loads(value)
