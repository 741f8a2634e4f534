"""Reading changes: from the changelog (gap-aware id cursor) or by a (timestamp, pk) cursor.

Both are gap-safe: a row that becomes visible late (its transaction took an id or a timestamp below
what was already read, and committed after) is still read. The changelog reader re-reads its
holes (gaps.py); the timestamp reader never moves its persisted cursor past the oldest open
transaction, and re-reads what lies above it (job ids make a re-read enqueue nothing twice).
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asyncmy.errors import MySQLError  # type: ignore[import-untyped,unused-ignore]

from orchestrator.cdc.db import (
    ER_ACCESS_DENIED,
    Connection,
    error_code,
    fetchall,
    json_value,
    load_json,
    qualified,
    quote,
)
from orchestrator.cdc.gaps import GapCursor, Hole, TrxInfo
from orchestrator.cdc.model import Change
from orchestrator.errors import ChangeFeedError

# The oldest open transaction other than ours. INNODB_TRX needs the PROCESS privilege.
_TRX_SQL = (
    "SELECT UNIX_TIMESTAMP(NOW(6)), UNIX_TIMESTAMP(MIN(trx_started)) "
    "FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id <> CONNECTION_ID()"
)


class TrxProbe:
    """Asks the server for its clock and its oldest open transaction; remembers a missing privilege.

    InnoDB serves INNODB_TRX from a cache it refreshes only when the previous read is more than
    100 ms old, and every read counts as one: a client reading it more often than that never sees it
    refreshed again (found here with a 50 ms poll interval: a rolled-back transaction stayed "open"
    for as long as the polls went on). So the answer is reused for `min_interval_s`: an earlier
    answer is still a safe one (it only makes holes close later and cursors move later). Another
    client reading INNODB_TRX more than ten times a second would freeze the cache the same way.
    """

    def __init__(self, *, min_interval_s: float = 0.3) -> None:
        self.visible = True
        self.min_interval_s = min_interval_s
        self._last: tuple[float, TrxInfo] | None = None

    async def read(self, conn: Connection) -> TrxInfo:
        loop_now = asyncio.get_running_loop().time()
        if self._last is not None and loop_now - self._last[0] < self.min_interval_s:
            return self._last[1]
        info = await self._query(conn)
        self._last = (loop_now, info)
        return info

    def forget(self) -> None:
        """After a reconnect (the server may have restarted): ask again."""
        self._last = None

    async def _query(self, conn: Connection) -> TrxInfo:
        if self.visible:
            try:
                ((now, oldest),) = await fetchall(conn, _TRX_SQL)
                return TrxInfo(float(now), float(oldest) if oldest is not None else None)
            except MySQLError as e:
                if error_code(e) not in ER_ACCESS_DENIED:
                    raise
                self.visible = False  # no PROCESS privilege: fall back to hole_timeout_s
        ((now,),) = await fetchall(conn, "SELECT UNIX_TIMESTAMP(NOW(6))")
        return TrxInfo(float(now), None, visible=False)


@dataclass(frozen=True)
class ChangelogRead:
    changes: list[Change]
    full: bool  # the read hit its limit: more rows wait
    read_upto: int  # every id up to here (holes included) was covered by the read
    seen_at: float | None  # the DB clock after the read (only taken when the read found new holes)


class ChangelogReader:
    """Reads the changelog from a GapCursor: new ids above `high`, plus every open hole."""

    def __init__(self, changelog: str, *, read_size: int) -> None:
        self.changelog = changelog
        self.read_size = read_size
        self._select = (
            "SELECT id, tbl, op, pk, row_after, row_before, UNIX_TIMESTAMP(created_at) "  # noqa: S608  name quoted, values bound
            f"FROM {qualified(changelog)} WHERE "
        )

    async def read(self, conn: Connection, cursor: GapCursor, *, limit: int | None = None) -> ChangelogRead:
        ranges: tuple[Hole, ...] = cursor.read_ranges()
        where = " OR ".join(["id > %s"] + ["id BETWEEN %s AND %s"] * len(ranges))
        args: list[Any] = [cursor.high]
        for hole in ranges:
            args += [hole.lo, hole.hi]
        size = limit or self.read_size
        rows = await fetchall(conn, self._select + where + " ORDER BY id LIMIT %s", [*args, size])
        changes = [_changelog_change(row) for row in rows]
        full = len(rows) >= size
        read_upto = changes[-1].seq if full else (1 << 63)
        if len(ranges) < len(cursor.holes):
            # holes past the ones read this time must not be closed on this read's evidence
            read_upto = min(read_upto, ranges[-1].hi)
        seen_at = None
        expected = cursor.high + 1
        for change in changes:
            if change.seq > expected:
                # a new hole: its time must be taken after this read (see gaps.py)
                ((now,),) = await fetchall(conn, "SELECT UNIX_TIMESTAMP(NOW(6))")
                seen_at = float(now)
                break
            expected = max(expected, change.seq + 1)
        return ChangelogRead(changes, full, read_upto, seen_at)

    async def read_range(self, conn: Connection, first: int, last: int, *, limit: int) -> list[Change]:
        """Rows with first <= id <= last, for `cdc replay` (whatever trimming left)."""
        rows = await fetchall(conn, self._select + "id BETWEEN %s AND %s ORDER BY id LIMIT %s", (first, last, limit))
        return [_changelog_change(row) for row in rows]

    async def trim(self, conn: Connection, upto: int, retention_s: float, *, batch: int = 2000) -> int:
        """Delete delivered rows older than the retention, oldest first, in small batches.

        Rows are walked in id order (the changelog has no index on its time: every captured write
        would pay for one) and deleted up to the first one still inside the retention. The ids are
        read first (a plain consistent read) and deleted by primary key: a range DELETE would scan
        into the next row, and when that row belongs to a transaction still open (a hole just above
        the watermark) the DELETE would wait on its lock and stall the poller.
        """
        total = 0
        while True:
            rows = await fetchall(
                conn,
                f"SELECT id, created_at < NOW(6) - INTERVAL %s MICROSECOND FROM {qualified(self.changelog)} "  # noqa: S608  name quoted, values bound
                "WHERE id <= %s ORDER BY id LIMIT %s",
                (int(retention_s * 1_000_000), upto, batch),
            )
            ids = []
            for change_id, old in rows:
                if not old:
                    break
                ids.append(int(change_id))
            if ids:
                async with conn.cursor() as cur:
                    sql = f"DELETE FROM {qualified(self.changelog)} WHERE id IN %s"  # noqa: S608  name quoted, values bound
                    total += int(await cur.execute(sql, (tuple(ids),)))
            if len(ids) < batch:
                return total


def _changelog_change(row: tuple[Any, ...]) -> Change:
    change_id, table, op, pk, after, before, created = row
    return Change(
        change_id=str(change_id),
        seq=int(change_id),
        table=str(table),
        operation=str(op).strip(),
        primary_key=load_json(pk) or {},
        row=load_json(after),
        before=load_json(before),
        changed_at=float(created),
    )


# -- timestamp mode --


@dataclass(frozen=True)
class TsCursor:
    """(timestamp, primary key) of the last row at or below the safe point; None: from the start."""

    ts: datetime | None = None
    pk: tuple[Any, ...] | None = None

    def to_json(self) -> str:
        return json.dumps({"ts": self.ts.isoformat() if self.ts else None, "pk": list(self.pk or []) or None})

    @classmethod
    def from_json(cls, text: str | bytes | None) -> TsCursor:
        if not text:
            return cls()
        data = json.loads(text)
        ts = datetime.fromisoformat(data["ts"]) if data.get("ts") else None
        return cls(ts, tuple(data["pk"]) if data.get("pk") else None)

    def describe(self) -> str | None:
        if self.ts is None:
            return None
        return f"{self.ts.isoformat(sep=' ')}" + (f" / {','.join(map(str, self.pk))}" if self.pk else "")


def after_clause(columns: list[str], values: tuple[Any, ...]) -> tuple[str, list[Any]]:
    """`(a, b, c) > (x, y, z)` expanded: MariaDB 10.11 does not range-scan a row comparison
    (measured: ~100x slower at 200k rows than the expanded OR form with an index on (a, b, c))."""
    if len(columns) == 1:
        return f"{quote(columns[0])} > %s", [values[0]]
    rest_sql, rest_args = after_clause(columns[1:], values[1:])
    col = quote(columns[0])
    return f"({col} > %s OR ({col} = %s AND {rest_sql}))", [values[0], values[0], *rest_args]


def epoch(ts: datetime) -> float:
    """A UTC wall time (the session runs in +00:00) as epoch seconds."""
    return calendar.timegm(ts.timetuple()) + ts.microsecond / 1e6


class TimestampReader:
    """Rows of one table by (timestamp column, primary key).

    Args:
        table: `db.table`.
        ts_column / created_column: see Rule.
        primary_key: the key columns.
    """

    def __init__(self, table: str, ts_column: str, primary_key: list[str], created_column: str | None) -> None:
        self.table = table
        self.ts_column = ts_column
        self.primary_key = primary_key
        self.created_column = created_column
        self._order = ", ".join(quote(c) for c in [ts_column, *primary_key])

    async def safe_point(self, conn: Connection, probe: TrxProbe, *, margin_s: float, timeout_s: float) -> datetime:
        """No row with a timestamp below this can still become visible.

        A row's timestamp is its statement's start, which is no earlier than its transaction's
        start minus the moment between a statement starting and InnoDB starting its transaction
        (the margin); INNODB_TRX shows start times in whole seconds (rounded down, so on the safe side)
        from a cache up to 100 ms old (a transaction younger than that may be missing from it, but
        `now - margin` is already below its start when the margin is above 0.1 s).
        """
        info = await probe.read(conn)
        bound = info.now - margin_s if info.visible else info.now - timeout_s
        if info.visible and info.oldest_started is not None:
            bound = min(bound, info.oldest_started - margin_s)
        return datetime.fromtimestamp(bound, UTC).replace(tzinfo=None)  # naive UTC, as the session reads them

    async def read(self, conn: Connection, after: TsCursor, limit: int) -> list[tuple[TsCursor, Change]]:
        """Up to `limit` rows after `after`, in (timestamp, pk) order, with each row's own cursor."""
        sql = f"SELECT * FROM {qualified(self.table)}"  # noqa: S608  name quoted, values bound
        args: list[Any] = []
        if after.ts is not None:
            if after.pk is None:
                sql += f" WHERE {quote(self.ts_column)} >= %s"
                args = [after.ts]
            else:
                where, args = after_clause([self.ts_column, *self.primary_key], (after.ts, *after.pk))
                sql += f" WHERE {where}"
        sql += f" ORDER BY {self._order} LIMIT %s"
        async with conn.cursor() as cur:
            await cur.execute(sql, [*args, limit])
            names = [d[0] for d in cur.description]
            rows = await cur.fetchall()
        out = []
        for values in rows:
            raw = dict(zip(names, values, strict=True))
            out.append((self._cursor_of(raw), self._change(raw)))
        return out

    def _cursor_of(self, raw: dict[str, Any]) -> TsCursor:
        return TsCursor(raw[self.ts_column], tuple(raw[c] for c in self.primary_key))

    def _change(self, raw: dict[str, Any]) -> Change:
        ts = raw[self.ts_column]
        if not isinstance(ts, datetime):
            msg = f"{self.table}.{self.ts_column} must be a NOT NULL TIMESTAMP/DATETIME column (got {ts!r})"
            raise ChangeFeedError(msg)
        row = {k: json_value(v) for k, v in raw.items()}
        pk = {c: row[c] for c in self.primary_key}
        stamp = round(epoch(ts) * 1_000_000)
        op = "UPDATE"
        if self.created_column is not None and raw.get(self.created_column) == ts:
            op = "INSERT"
        key = ",".join(str(v) for v in pk.values())
        if len(key) > 64:  # job ids stay short: a long composite key is hashed
            key = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()
        return Change(f"t{stamp}-{key}", 0, self.table, op, pk, row, None, epoch(ts))
