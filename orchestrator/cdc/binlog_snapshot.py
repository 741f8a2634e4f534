"""Binlog mode's snapshot: primary-key chunks handed over to the stream by watermarks (DBLog's scheme).

`cdc snapshot RULE` only stores a request; the leader's binlog capture takes the table while the
stream goes on. For each chunk it writes a LOW mark (a row of the watermark table, so the mark is a
binlog event like any other), SELECTs the next chunk by primary key, registers it, and writes a HIGH
mark. The stream, between the chunk's LOW and HIGH, strikes from the chunk every key a change touched
(the change comes from the stream itself, newer than the SELECT's copy); at HIGH it emits what is left
as INSERT changes, in that place of the stream, in the same atomic write as the transactions around it
and the chunk's progress. So every row ends with its newest state, and none is lost between the two:

- a change committed before LOW: the SELECT saw it, and the stream delivered it before the chunk;
- between LOW and HIGH: struck from the chunk, delivered by the stream;
- after HIGH: delivered by the stream after the chunk.

No lock is taken (each SELECT is one autocommit statement). The request (`snapshot-request:<rule>`
in the state hash) is written only by `cdc snapshot`; the progress (`snapshot:<rule>`, JSON) only
with a chunk's jobs: an interrupted snapshot resumes after the last chunk delivered. A replayed stream meets marks nobody registered (their chunk was never written) and
ignores them; the chunk is read again under new marks. Job ids are `s<snapshot id>-<key>`: a chunk
that was written is never read again, and a replay of its write enqueues nothing twice.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from asyncmy.errors import MySQLError  # type: ignore[import-untyped,unused-ignore]

from orchestrator.cdc.db import Connection, json_value, qualified, quote
from orchestrator.cdc.model import Change
from orchestrator.cdc.readers import after_clause
from orchestrator.cdc.rules import Rule

WATERMARK_TABLE = "orchestrator_watermarks"
# MariaDB error codes: no such table, a command denied to the user
_NO_TABLE = 1146
_DENIED = (1142, 1143)


def watermark_table(db: str | None, tables: list[str]) -> str:
    """`db.orchestrator_watermarks` in DATABASE_URL's database (else the first binlog rule's `db.table`'s)."""
    schema = db or (tables[0].split(".", 1)[0] if tables else "")
    return f"{schema}.{WATERMARK_TABLE}"


def _create(table: str) -> str:
    return f"CREATE TABLE {qualified(table)} (id VARCHAR(191) PRIMARY KEY, mark VARCHAR(191) NOT NULL)"


def watermark_fix(table: str, user: str) -> str:
    """What a DBA runs once so that binlog snapshots can write their marks (only INSERT/UPDATE there)."""
    return f"{_create(table)}; GRANT INSERT, UPDATE ON {qualified(table)} TO {user}"


async def create_watermark_table(conn: Connection, table: str) -> bool:
    """Creates the watermark table when it is missing and the user may; returns whether it exists now
    (when not, the mark write that follows fails and names what is missing)."""
    db, _, name = table.partition(".")
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s", (db, name)
        )
        ((count,),) = await cur.fetchall()
        if count:
            return True
        try:
            await cur.execute(_create(table).replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1))
        except MySQLError:
            return False
        return True


def watermark_problem(error: BaseException, table: str, user: str, *, missing: bool = False) -> str | None:
    """The one-line explanation of a failed mark write, or None when it is not about the table or grant.

    missing: the table is known not to exist (the server answers "denied" before "no such table").
    """
    code = error.args[0] if error.args else None
    if code == _NO_TABLE or (missing and code in _DENIED):
        return f"binlog snapshot: the watermark table {table} does not exist: {watermark_fix(table, user)}"
    if code in _DENIED:
        return f"binlog snapshot: user {user} cannot write {table}: {watermark_fix(table, user)}"
    return None


async def write_mark(conn: Connection, table: str, rule: str, nonce: str, kind: str) -> None:
    """One autocommit write of a watermark row (`<rule>.low` / `<rule>.high`, the mark `<nonce>:<kind>`):
    the stream sees it in commit order, as any other row change."""
    async with conn.cursor() as cur:
        await cur.execute(
            f"INSERT INTO {qualified(table)} (id, mark) VALUES (%s, %s) ON DUPLICATE KEY UPDATE mark = VALUES(mark)",  # noqa: S608  name quoted, values bound
            (f"{rule}.{kind}", f"{nonce}:{kind}"),
        )


def progress_field(rule: str) -> str:
    """The state hash's field of a binlog rule's snapshot progress (written only with a chunk's jobs)."""
    return f"snapshot:{rule}"


def request_field(rule: str) -> str:
    """The state hash's field of a binlog rule's snapshot request (written only by `cdc snapshot`, so a
    chunk's write can never overwrite a newer request)."""
    return f"snapshot-request:{rule}"


@dataclass
class Progress:
    """A binlog snapshot: the request, and how far it got (all of it moves with a chunk's jobs)."""

    id: str
    where: str = ""
    last_pk: list[Any] | None = None  # the last key of the last chunk delivered
    rows: int = 0  # rows read
    skipped: int = 0  # rows struck from a chunk: the stream delivered them, newer
    enqueued: int = 0  # jobs of the snapshot's rows
    chunks: int = 0
    done: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes | None) -> Progress | None:
        if not text:
            return None
        return cls(**json.loads(text))


def pending(request: Progress | None, progress: Progress | None) -> Progress | None:
    """The snapshot to go on with: the stored progress of the request, or the request from its start."""
    if request is None:
        return None
    if progress is not None and progress.id == request.id:
        return progress
    return Progress(id=request.id, where=request.where)


@dataclass
class Chunk:
    """One chunk between its marks: the rows read, the keys the stream touched meanwhile."""

    rule: Rule  # the rule as INSERT-only (a snapshot row is an INSERT event)
    table: str
    key_columns: list[str]
    rows: list[dict[str, Any]]
    after: Progress  # the progress once this chunk is delivered
    low_seen: bool = False
    struck: set[tuple[Any, ...]] = field(default_factory=set)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    delivered: bool = False  # set once the chunk's write landed (False: it must be read again)

    def key(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row.get(c) for c in self.key_columns)

    def emit(self, at: Change) -> list[Change]:
        """The rows the stream did not touch, as INSERT changes at the HIGH mark's place (and version)."""
        out = []
        for row in self.rows:
            key = self.key(row)
            if key in self.struck:
                continue
            values = {c: row[c] for c in self.key_columns}
            change_id = f"s{self.after.id}-" + ",".join(str(v) for v in values.values())
            out.append(Change(change_id, at.seq, self.table, "INSERT", values, row, None, at.changed_at))
        self.after.skipped += len(self.rows) - len(out)
        return out


class Watermarks:
    """The stream's side: which chunks wait between their marks (one instance per stream session)."""

    def __init__(self, table: str) -> None:
        self.table = table
        self._chunks: dict[str, Chunk] = {}  # mark nonce -> chunk

    def register(self, nonce: str, chunk: Chunk) -> None:
        self._chunks[nonce] = chunk

    def forget(self, nonce: str) -> None:
        self._chunks.pop(nonce, None)

    def strike(self, change: Change) -> None:
        """A stream change of a chunk's table after its LOW mark: that key comes from the stream."""
        for chunk in self._chunks.values():
            if chunk.low_seen and chunk.table == change.table:
                for image in (change.row, change.before):
                    if image is not None:
                        chunk.struck.add(chunk.key(image))

    def on_mark(self, change: Change) -> Chunk | None:
        """A write to the watermark table: opens a chunk's window (LOW), or returns the chunk (HIGH)."""
        mark = str((change.row or {}).get("mark") or "")
        nonce, _, kind = mark.partition(":")
        chunk = self._chunks.get(nonce)
        if chunk is None:  # another session's mark (a replay), or the CLI's check
            return None
        if kind == "low":
            chunk.low_seen = True
            return None
        del self._chunks[nonce]
        if not chunk.low_seen:  # cannot happen in commit order; read the chunk again rather than guess
            chunk.finished.set()
            return None
        return chunk


async def read_chunk(
    conn: Connection, table: str, key_columns: list[str], progress: Progress, limit: int
) -> list[dict[str, Any]]:
    """The next `limit` rows after `progress.last_pk` by primary key (one autocommit statement: no lock)."""
    clauses: list[str] = []
    args: list[Any] = []
    if progress.where:
        clauses.append(f"({progress.where})")
    if progress.last_pk is not None:
        sql, more = after_clause(key_columns, tuple(progress.last_pk))
        clauses.append(sql)
        args += more
    sql = f"SELECT * FROM {qualified(table)}"  # noqa: S608  name quoted, values bound; --where is the operator's own SQL
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += f" ORDER BY {', '.join(quote(c) for c in key_columns)} LIMIT %s"
    async with conn.cursor() as cur:
        await cur.execute(sql, [*args, limit])
        names = [d[0] for d in cur.description]
        return [{k: json_value(v) for k, v in zip(names, r, strict=True)} for r in await cur.fetchall()]


def new_nonce() -> str:
    return secrets.token_hex(8)
