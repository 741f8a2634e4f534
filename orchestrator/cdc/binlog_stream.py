"""The binlog reader thread: python-mysql-replication (synchronous) in ONE worker thread.

The thread reads row events as a replica, groups them into whole transactions (a GTID event opens
one; XID, COMMIT or a DDL closes it) and hands each finished transaction to the event loop through
a bounded `Handoff`; the loop takes whole transactions in commit order and never half of one.

Column names come from the table map event's own metadata (`binlog_row_metadata=FULL`), never from
`information_schema`: a stream that lags behind an ALTER TABLE maps each row to the columns it was
written with. DDL passes through as a transaction without rows: it moves the position and nothing
else.

Stopping: the loop sets the stop flag and shuts the stream's socket down; the library then tries to
reconnect through our connect function, which refuses while stopping, and the thread ends. A real
connection loss is not retried by the library either (it would resume from the position it started
at, not from ours): the thread ends with the error, and the loop starts a new one from the position
stored in Redis.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any

import pymysql  # type: ignore[import-untyped,unused-ignore]
from pymysqlreplication import BinLogStreamReader  # type: ignore[import-untyped]
from pymysqlreplication.event import (  # type: ignore[import-untyped]
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.row_event import (  # type: ignore[import-untyped]
    DeleteRowsEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from orchestrator.cdc.binlog_position import BinlogPosition, TxnPosition
from orchestrator.cdc.db import json_value
from orchestrator.cdc.model import Change
from orchestrator.cdc.settings import MySQLParams

logger = logging.getLogger(__name__)

_EVENTS = [MariadbGtidEvent, GtidEvent, QueryEvent, XidEvent, RotateEvent, HeartbeatLogEvent]
_EVENTS += [WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent]
# error codes pymysql raises for a lost connection
_LOST = 2013


class Stopped(Exception):
    """The loop asked the reader to stop."""


@dataclass(frozen=True)
class Txn:
    """One committed transaction: its rows (possibly none: DDL, other tables) and where it ends."""

    position: TxnPosition
    changes: list[Change]
    next_file: str | None  # the binlog file and offset right after it (file:pos resume)
    next_pos: int


class Streaming:
    """Handed over once the server streams (its first event arrived): the position was accepted."""


STREAMING = Streaming()
Item = Txn | Streaming | BaseException


class Handoff:
    """A bounded hand-over of transactions from the reader thread to the loop.

    The thread blocks while `max_txns` wait (backpressure); it wakes the loop once per burst, not
    once per transaction (a `call_soon_threadsafe` only when the loop is not already due to look).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, max_txns: int) -> None:
        self._loop = loop
        self._items: collections.deque[Item] = collections.deque()
        self._cond = threading.Condition()
        self._ready = asyncio.Event()
        self._wake_due = False
        self.max_txns = max_txns

    # -- thread side --
    def put(self, item: Item, stop: threading.Event) -> None:
        with self._cond:
            while len(self._items) >= self.max_txns and isinstance(item, Txn):
                if stop.is_set():
                    raise Stopped
                self._cond.wait(0.2)
            self._items.append(item)
            if not self._wake_due:
                self._wake_due = True
                self._loop.call_soon_threadsafe(self._ready.set)

    # -- loop side --
    async def take(self, max_changes: int) -> list[Item]:
        """Whole transactions in commit order, up to `max_changes` rows (at least one transaction)."""
        while True:
            with self._cond:  # held for microseconds: the thread only appends under it
                self._wake_due = False
                out: list[Item] = []
                rows = 0
                while self._items:
                    head = self._items[0]
                    size = len(head.changes) if isinstance(head, Txn) else 0
                    if out and rows + size > max_changes:
                        break
                    out.append(self._items.popleft())
                    rows += size
                    if isinstance(head, BaseException):
                        break
                if out:
                    self._cond.notify_all()
                    return out
                self._ready.clear()
            await self._ready.wait()


class BinlogThread:
    """Reads the binlog from `start` in one thread, handing transactions of `tables` to `handoff`.

    Args:
        mysql: DATABASE_URL taken apart.
        server_id: this replica's id (unique among the server's replicas).
        start: where to resume; empty: from the server's current position (`current`).
        current: the server's position now (GTID state or file:pos), used when `start` is empty.
        tables: the `db.table` names of the binlog rules.
        is_mariadb: resume by MariaDB GTID (else by file:pos).
        heartbeat_s: the server sends a heartbeat after this much silence (the stop flag is seen then too).
    """

    def __init__(
        self,
        mysql: MySQLParams,
        *,
        server_id: int,
        start: BinlogPosition,
        current: BinlogPosition,
        tables: set[str],
        is_mariadb: bool,
        handoff: Handoff,
        heartbeat_s: float = 1.0,
    ) -> None:
        self.mysql = mysql
        self.server_id = server_id
        self.start_at = current if start.empty else start
        self.tables = tables
        self.is_mariadb = is_mariadb
        self.handoff = handoff
        self.heartbeat_s = heartbeat_s
        self.stop_flag = threading.Event()
        self.done = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._reader: Any = None
        self._stream_connects = 0
        self._thread = threading.Thread(target=self._main, name="orch-binlog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    async def stop(self) -> None:
        """Ask the thread to end, wake it from a blocking read, and wait for it."""
        self.stop_flag.set()
        reader = self._reader
        sock = getattr(getattr(reader, "_stream_connection", None), "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        await asyncio.shield(self.done.wait())
        self._thread.join()

    # -- the thread --
    def _connect(self, **kwargs: Any) -> pymysql.Connection[Any]:
        """The library's connect function: refuses once stopping, and refuses a stream reconnect
        (the library would resume from where it started, not from the last transaction handed over)."""
        if self.stop_flag.is_set():
            raise Stopped
        if "cursorclass" not in kwargs:  # the stream connection (the control one has a DictCursor)
            self._stream_connects += 1
            if self._stream_connects > 1:
                raise pymysql.err.OperationalError(_LOST, "lost the binlog stream connection")
        if "db" in kwargs:  # the library still uses pymysql's deprecated name
            kwargs["database"] = kwargs.pop("db")
        return pymysql.connect(**kwargs)

    def _main(self) -> None:
        try:
            self._read()
        except Stopped:
            pass
        except Exception as e:  # noqa: BLE001 - every failure goes to the loop, which reports and restarts
            if not self.stop_flag.is_set():
                with contextlib.suppress(Stopped):
                    self.handoff.put(e, self.stop_flag)
        finally:
            if self._reader is not None:
                with contextlib.suppress(Exception):
                    self._reader.close()
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                self._loop.call_soon_threadsafe(self.done.set)

    def _reader_args(self) -> dict[str, Any]:
        m = self.mysql
        settings: dict[str, Any] = {"host": m.host, "port": m.port, "user": m.user, "password": m.password}
        if m.unix_socket:
            settings["unix_socket"] = m.unix_socket
        schemas = sorted({t.split(".", 1)[0] for t in self.tables})
        names = sorted({t.split(".", 1)[1] for t in self.tables})
        args: dict[str, Any] = {
            "connection_settings": settings,
            "server_id": self.server_id,
            "blocking": True,
            "only_events": _EVENTS,
            "only_schemas": schemas,
            "only_tables": names,
            "slave_heartbeat": self.heartbeat_s,
            "is_mariadb": self.is_mariadb,
            "pymysql_wrapper": self._connect,
            "enable_logging": False,
        }
        start = self.start_at
        if self.is_mariadb:
            args["auto_position"] = start.gtid_state()
        elif start.file is not None:
            args.update(resume_stream=True, log_file=start.file, log_pos=start.pos)
        return args

    def _read(self) -> None:
        self._reader = reader = BinLogStreamReader(**self._reader_args())
        txn: TxnPosition | None = None
        changes: list[Change] = []
        streaming = False
        for event in reader:
            if self.stop_flag.is_set():
                raise Stopped
            if not streaming:
                streaming = True
                self.handoff.put(STREAMING, self.stop_flag)
            if isinstance(event, MariadbGtidEvent):
                txn, changes = TxnPosition(gtid=event.gtid), []
            elif isinstance(event, GtidEvent):  # MySQL: positions stay file:pos (documented)
                txn, changes = TxnPosition(file=reader.log_file, pos=_start_of(event)), []
            elif isinstance(event, WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent):
                if txn is None:  # no GTID (file:pos mode): the transaction starts at its first row event
                    txn = TxnPosition(file=reader.log_file, pos=_start_of(event))
                table = f"{event.schema}.{event.table}"
                if table in self.tables:
                    self._rows(event, table, txn, changes)
            elif isinstance(event, XidEvent) or (
                isinstance(event, QueryEvent) and event.query.strip().upper() != "BEGIN"
            ):
                # COMMIT, or a DDL (its own transaction): the transaction is whole
                if txn is None:
                    txn = TxnPosition(file=reader.log_file, pos=_start_of(event))
                self.handoff.put(Txn(txn, changes, reader.log_file, reader.log_pos), self.stop_flag)
                txn, changes = None, []

    def _rows(self, event: Any, table: str, txn: TxnPosition, changes: list[Change]) -> None:
        pk_cols = event.primary_key
        keys = [pk_cols] if isinstance(pk_cols, str) and pk_cols else list(pk_cols or ())
        for raw in event.rows:
            if isinstance(event, UpdateRowsEvent):
                op, before, after = "UPDATE", _row(raw["before_values"]), _row(raw["after_values"])
            elif isinstance(event, WriteRowsEvent):
                op, before, after = "INSERT", None, _row(raw["values"])
            else:
                op, before, after = "DELETE", _row(raw["values"]), None
            image = after if after is not None else before or {}
            index = len(changes)
            changes.append(
                Change(
                    change_id=txn.change_id(index),
                    seq=txn.version(index),
                    table=table,
                    operation=op,
                    primary_key={k: image.get(k) for k in keys},
                    row=after,
                    before=before,
                    changed_at=float(event.timestamp),
                )
            )


def _row(values: dict[str, Any]) -> dict[str, Any]:
    return {k: sorted(v) if isinstance(v, set) else json_value(v) for k, v in values.items()}


def _start_of(event: Any) -> int:
    """The offset where an event starts (its header holds where it ends)."""
    return int(event.packet.log_pos) - int(event.event_size)
