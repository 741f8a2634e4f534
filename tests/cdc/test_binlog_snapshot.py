"""Binlog mode's `cdc snapshot`: chunks between watermarks, against a real MariaDB with binlog and Redis.

The tests hold a chunk at its HIGH mark deterministically: a test transaction locks the rule's
`all.high` watermark row, so the leader's HIGH write waits (seen in the server's processlist) after
its SELECT, and whatever the test commits then falls between the chunk's read and its HIGH mark.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from orchestrator.cdc.binlog_snapshot import Progress, watermark_fix
from orchestrator.cdc.index_actions import index_stream
from orchestrator.client import connect_redis
from orchestrator.config import Settings
from orchestrator.errors import JobError
from tests.cdc.binlog_helpers import BinlogRig, binlog_capture
from tests.cdc.helpers import cdc_admin, cdc_settings, db_connect, sql
from tests.jobs.helpers import wait_for
from tests.services import MariaDBServer

ORDERS = "CREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, status VARCHAR(20), total INT)"
RULE = {"name": "all", "table": "orders", "plugins": ["recorder"], "mode": "binlog", "index": {"name": "orders"}}
HOLD = "SELECT * FROM orchestrator_watermarks WHERE id = 'all.high' FOR UPDATE"


async def prepare(settings: Settings, rows: int) -> None:
    create_table = watermark_fix("testdb.orchestrator_watermarks", "u").split("; GRANT", 1)[0]  # the documented one
    values = ", ".join(f"('s{i}', {i})" for i in range(rows))
    await sql(
        settings,
        ORDERS,
        f"INSERT INTO orders (status, total) VALUES {values}",
        create_table,
        "INSERT INTO orchestrator_watermarks VALUES ('all.high', 'none')",
    )


async def waiting(settings: Settings, like: str, n: int = 1) -> bool:
    """`n` statements matching `like` are running (waiting for the test's row lock)."""
    rows = await sql(settings, ("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE %s", (like,)))
    return int(rows[0][0]) >= n


class Holder:
    """A transaction holding the `all.high` watermark row (the leader's HIGH write waits for it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conn: Any = None

    async def hold(self) -> None:
        self.conn = await db_connect(self.settings)
        async with self.conn.cursor() as cur:
            await cur.execute("BEGIN")
            await cur.execute(HOLD)

    async def release(self) -> None:
        await self.conn.rollback()
        self.conn.close()


async def high_waits(settings: Settings) -> None:
    await wait_for(lambda: waiting(settings, "INSERT INTO %orchestrator_watermarks%all.high%"), timeout_s=20)


async def actions(rig: BinlogRig) -> list[dict[str, Any]]:
    """The index actions of the rule, in the order they were delivered."""
    entries = await rig.store.redis.xrange(index_stream("all"))
    return [json.loads(next(iter(fields.values()))) for _, fields in entries]


async def traffic(settings: Settings, stop: asyncio.Event, seed: int) -> int:
    """UPDATE/DELETE/INSERT on random rows until `stop`; returns the statements run."""
    rng = random.Random(seed)
    conn = await db_connect(settings, autocommit=True)
    n = 0
    try:
        async with conn.cursor() as cur:
            while not stop.is_set():
                k, n = rng.randint(1, 330), n + 1
                op = rng.random()
                if op < 0.6:
                    await cur.execute("UPDATE orders SET total = total + 1000, status = %s WHERE id = %s", (f"u{n}", k))
                elif op < 0.8:
                    await cur.execute("DELETE FROM orders WHERE id = %s", (k,))
                else:
                    await cur.execute("INSERT INTO orders (status, total) VALUES (%s, %s)", (f"i{n}", n))
    finally:
        conn.close()
    return n


async def test_a_snapshot_under_concurrent_writes_ends_with_every_rows_newest_state(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    settings = cdc_settings(tmp_path, redis_url, mysql_url, [RULE], snapshot_chunk_rows=50)
    await prepare(settings, 300)
    holder = Holder(settings)
    await holder.hold()
    redis = connect_redis(redis_url)
    stop = asyncio.Event()
    try:
        async with binlog_capture(settings) as rig:
            admin = await cdc_admin(settings, redis)
            await admin.snapshot("all", None, wait=False)
            await high_waits(settings)  # chunk 1 was read; its HIGH waits
            # committed after the chunk's SELECT, before its HIGH: the stream's state must win
            await sql(
                settings,
                "UPDATE orders SET status = 'late', total = -1 WHERE id <= 10",
                "DELETE FROM orders WHERE id BETWEEN 11 AND 15",
            )
            writer = asyncio.create_task(traffic(settings, stop, seed=7))
            await holder.release()
            progress = await rig.snapshot_done("all")
            stop.set()
            statements = await writer
            await rig.settle()
            delivered = await actions(rig)
    finally:
        stop.set()
        await redis.aclose()
    final = {r[0]: {"id": r[0], "status": r[1], "total": r[2]} for r in await sql(settings, "SELECT * FROM orders")}
    last: dict[str, dict[str, Any]] = {}
    for action in delivered:
        previous = last.get(action["id"])
        assert previous is None or previous["version"] < action["version"], (previous, action)  # newer each time
        last[action["id"]] = action
    for key, row in final.items():  # every row present, its newest state delivered last
        assert last[str(key)]["op"] == "index" and last[str(key)]["doc"] == row, (row, last.get(str(key)))
    gone = {k for k, a in last.items() if int(k) not in final}
    assert all(last[k]["op"] == "delete" for k in gone)
    assert progress.skipped >= 15 and progress.done and statements > 0
    snapshot_ids = {a["id"] for a in delivered if a["change_id"].startswith(f"s{progress.id}-")}
    assert not snapshot_ids & {str(i) for i in range(1, 16)}  # struck: they came from the stream


async def snapshot_jobs(rig: BinlogRig, progress: Progress) -> list[str]:
    return [j for j in await rig.jobs() if j.startswith(f"cdc:all:s{progress.id}-")]


async def test_an_interrupted_snapshot_resumes_from_its_stored_chunk(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    settings = cdc_settings(tmp_path, redis_url, mysql_url, [RULE], snapshot_chunk_rows=20)
    await prepare(settings, 200)
    first, second = Holder(settings), Holder(settings)
    await first.hold()
    redis = connect_redis(redis_url)
    try:
        async with binlog_capture(settings) as rig:
            admin = await cdc_admin(settings, redis)
            await admin.snapshot("all", None, wait=False)
            await high_waits(settings)  # chunk 1's HIGH waits for `first`
            queued = asyncio.create_task(second.hold())  # queues behind the leader's HIGH
            await wait_for(lambda: waiting(settings, "SELECT%FOR UPDATE"), timeout_s=20)
            await first.release()  # chunk 1 goes through; chunk 2's HIGH waits for `second`
            await queued
            await high_waits(settings)
            stopped_at = await rig.progress("all")
            before = await snapshot_jobs(rig, stopped_at)  # type: ignore[arg-type]
        await second.release()  # the stopped run's HIGH lands in the binlog: nobody waits for it now
        async with binlog_capture(settings) as rig:  # the leader takes the stored request again
            progress = await rig.snapshot_done("all")
            after = await snapshot_jobs(rig, progress)
            delivered = await actions(rig)
    finally:
        await redis.aclose()
    assert stopped_at is not None and (stopped_at.chunks, stopped_at.rows, stopped_at.done) == (1, 20, False)
    assert len(before) == 20  # chunk 1, delivered before the stop
    assert progress.id == stopped_at.id
    assert (progress.rows, progress.enqueued, progress.skipped) == (200, 200, 0)  # chunk 1 was not read again
    assert progress.chunks == 11  # 1 before the stop, 9 full ones after, and the empty last one
    assert sorted(after) == sorted(f"cdc:all:s{progress.id}-{i}:recorder" for i in range(1, 201))
    ids = [a["id"] for a in delivered]
    assert sorted(ids, key=int) == [str(i) for i in range(1, 201)]  # each row once


async def test_the_watermark_table_and_grant_are_named_with_their_fix(
    tmp_path: Path, redis_url: str, mysql_url: str, mariadb_server: MariaDBServer
) -> None:
    if mariadb_server.external:
        pytest.skip("creates a database user: only on a server the fixtures started")
    root = cdc_settings(tmp_path, redis_url, mysql_url, [RULE])
    await sql(root, ORDERS, "DROP USER IF EXISTS 'snap'@'%'", "CREATE USER 'snap'@'%' IDENTIFIED BY 'pw'")
    await sql(
        root, "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'snap'@'%'", "GRANT SELECT ON testdb.* TO 'snap'@'%'"
    )
    url = urlsplit(mysql_url)
    limited = cdc_settings(
        tmp_path, redis_url, urlunsplit(url._replace(netloc=f"snap:pw@{url.hostname}:{url.port}")), [RULE]
    )
    redis = connect_redis(redis_url)
    errors = []
    try:
        admin = await cdc_admin(limited, redis)
        for fix in (watermark_fix("testdb.orchestrator_watermarks", "root").split("; GRANT", 1)[0], None):
            with pytest.raises(JobError) as refused:
                await admin.snapshot("all", None)
            errors.append(str(refused.value))
            if fix is not None:
                await sql(root, fix)  # the DBA creates the table; the grant is still missing
        await sql(root, "GRANT INSERT, UPDATE ON testdb.orchestrator_watermarks TO 'snap'@'%'")
        requested = await admin.snapshot("all", None, wait=False)
    finally:
        await redis.aclose()
        await sql(root, "DROP USER 'snap'@'%'")
    grant = "GRANT INSERT, UPDATE ON `testdb`.`orchestrator_watermarks` TO 'snap'@'%'"
    create = "CREATE TABLE `testdb`.`orchestrator_watermarks` (id VARCHAR(191) PRIMARY KEY, mark VARCHAR(191) NOT NULL)"
    assert errors == [
        f"binlog snapshot: the watermark table testdb.orchestrator_watermarks does not exist: {create}; {grant}",
        f"binlog snapshot: user 'snap'@'%' cannot write testdb.orchestrator_watermarks: {create}; {grant}",
    ]
    assert requested["done"] is False and requested["resumed"] is False  # stored for the leader


async def test_a_restart_during_a_chunk_is_not_lost_to_that_chunks_write(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    settings = cdc_settings(tmp_path, redis_url, mysql_url, [RULE], snapshot_chunk_rows=20)
    await prepare(settings, 40)
    holder = Holder(settings)
    await holder.hold()
    redis = connect_redis(redis_url)
    try:
        async with binlog_capture(settings) as rig:
            admin = await cdc_admin(settings, redis)
            first = await admin.snapshot("all", None, wait=False)
            await high_waits(settings)  # the first snapshot's chunk 1 is in flight
            second = await admin.snapshot("all", None, restart=True, wait=False)
            await holder.release()  # chunk 1 of the first snapshot is written after the restart
            progress = await rig.snapshot_done("all")
            jobs = [j for j in await rig.jobs() if j.startswith("cdc:all:s")]
    finally:
        await redis.aclose()
    assert second["snapshot_id"] != first["snapshot_id"] and second["resumed"] is False
    assert progress.id == second["snapshot_id"] and progress.rows == 40
    assert len([j for j in jobs if j.startswith(f"cdc:all:s{second['snapshot_id']}-")]) == 40
