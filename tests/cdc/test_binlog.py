"""Binlog mode against a real MariaDB (binlog on, ROW, FULL image and metadata) and Redis."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tests.cdc.binlog_helpers import binlog_capture
from tests.cdc.helpers import cdc_settings, db_connect, sql
from tests.jobs.helpers import wait_for

ORDERS = "CREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, status VARCHAR(20), total DECIMAL(10,2))"


def binlog_rules(**extra: Any) -> list[dict[str, Any]]:
    return [{"name": "all", "table": "orders", "plugins": ["recorder"], "mode": "binlog", **extra}]


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "orch-binlog"]


async def test_insert_update_delete_with_before_and_after_images(tmp_path: Path, redis_url: str, mysql_url: str) -> None:
    settings = cdc_settings(tmp_path, redis_url, mysql_url, binlog_rules())
    await sql(settings, ORDERS)
    async with binlog_capture(settings) as rig:
        await sql(
            settings,
            "INSERT INTO orders (status, total) VALUES ('new', 10.50)",
            "UPDATE orders SET status = 'paid' WHERE id = 1",
            "DELETE FROM orders WHERE id = 1",
        )
        await rig.settle()
        events = await rig.events()
        assert len(reader_threads()) == 1
    assert not reader_threads()  # the reader thread ended with the component
    insert, update, delete = sorted(events, key=lambda e: int(e["change_id"].split("-")[2].split(".")[0]))
    assert insert["operation"] == "INSERT" and insert["table"] == "testdb.orders" and insert["before"] is None
    assert insert["row"] == {"id": 1, "status": "new", "total": 10.5} and insert["primary_key"] == {"id": 1}
    assert update["operation"] == "UPDATE"
    assert (update["before"]["status"], update["row"]["status"]) == ("new", "paid")
    assert delete["operation"] == "DELETE" and delete["row"] is None and delete["before"]["status"] == "paid"
    gtid = insert["change_id"].rsplit(".", 1)[0]
    assert insert["change_id"] == f"{gtid}.0" and gtid.count("-") == 2  # domain-server-seq . row


async def test_a_multi_row_transaction_arrives_whole_and_in_order(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    settings = cdc_settings(tmp_path, redis_url, mysql_url, binlog_rules(), batch_size=7)
    await sql(settings, ORDERS)
    async with binlog_capture(settings) as rig:
        conn = await db_connect(settings)
        try:
            async with conn.cursor() as cur:
                await cur.execute("BEGIN")
                for i in range(50):
                    await cur.execute("INSERT INTO orders (status, total) VALUES (%s, %s)", (f"s{i}", i))
                await cur.execute("UPDATE orders SET total = total + 1 WHERE id <= 10")
                await conn.commit()
        finally:
            conn.close()
        await rig.settle()
        jobs = await rig.jobs()
        rounds = rig.capture.rounds
    events = sorted((r["context"]["change_event"] for r in jobs.values()), key=lambda e: int(e["change_id"].rsplit(".", 1)[1]))
    assert len(events) == 60 and len({e["change_id"].rsplit(".", 1)[0] for e in events}) == 1  # one transaction
    assert [e["row"]["status"] for e in events[:50]] == [f"s{i}" for i in range(50)]
    assert all(e["operation"] == "UPDATE" for e in events[50:])
    # one atomic write for the whole transaction, though batch_size is 7: never half of it
    assert rounds == 1
    scores = sorted(jobs, key=lambda j: jobs[j]["context"]["change_event"]["change_id"].rsplit(".", 1)[1].zfill(4))
    assert len(scores) == 60
