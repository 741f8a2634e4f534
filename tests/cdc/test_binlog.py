"""Binlog mode against a real MariaDB (binlog on, ROW, FULL image and metadata) and Redis."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from orchestrator.cdc.binlog_checks import ServerFacts, problems
from orchestrator.client import connect_redis
from orchestrator.config import Settings
from tests.cdc.binlog_helpers import binlog_capture
from tests.cdc.helpers import cdc_admin, cdc_settings, db_connect, sql
from tests.cdc.test_cli_cdc import cdc
from tests.jobs.helpers import wait_for
from tests.services import MariaDBServer

ORDERS = "CREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, status VARCHAR(20), total DECIMAL(10,2))"


def binlog_rules(**extra: Any) -> list[dict[str, Any]]:
    return [{"name": "all", "table": "orders", "plugins": ["recorder"], "mode": "binlog", **extra}]


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "orch-binlog"]


async def test_insert_update_delete_with_before_and_after_images(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    keyed = {"name": "keyed", "table": "orders", "plugins": ["other"], "mode": "binlog", "primary_key": ["status"]}
    settings = cdc_settings(tmp_path, redis_url, mysql_url, [*binlog_rules(), keyed])
    await sql(settings, ORDERS)
    async with binlog_capture(settings) as rig:
        await sql(
            settings,
            "INSERT INTO orders (status, total) VALUES ('new', 10.50)",
            "UPDATE orders SET status = 'paid' WHERE id = 1",
            "DELETE FROM orders WHERE id = 1",
        )
        await rig.settle()
        events = await rig.events("recorder")
        keyed_events = await rig.events("other")
        assert len(reader_threads()) == 1
    assert not reader_threads()  # the reader thread ended with the component
    insert, update, delete = sorted(events, key=lambda e: int(e["change_id"].split("-")[2].split(".")[0]))
    assert insert["operation"] == "INSERT" and insert["table"] == "testdb.orders" and insert["before"] is None
    assert insert["row"] == {"id": 1, "status": "new", "total": 10.5} and insert["primary_key"] == {"id": 1}
    assert update["operation"] == "UPDATE"
    assert (update["before"]["status"], update["row"]["status"]) == ("new", "paid")
    assert delete["operation"] == "DELETE" and delete["row"] is None and delete["before"]["status"] == "paid"
    assert sorted(e["primary_key"]["status"] for e in keyed_events) == ["new", "paid", "paid"]  # the rule's key
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
    events = sorted(
        (r["context"]["change_event"] for r in jobs.values()), key=lambda e: int(e["change_id"].rsplit(".", 1)[1])
    )
    assert len(events) == 60 and len({e["change_id"].rsplit(".", 1)[0] for e in events}) == 1  # one transaction
    assert [e["row"]["status"] for e in events[:50]] == [f"s{i}" for i in range(50)]
    assert all(e["operation"] == "UPDATE" for e in events[50:])
    # one atomic write for the whole transaction, though batch_size is 7: never half of it
    assert rounds == 1
    scores = sorted(jobs, key=lambda j: jobs[j]["context"]["change_event"]["change_id"].rsplit(".", 1)[1].zfill(4))
    assert len(scores) == 60


async def test_rows_keep_the_columns_they_were_written_with_across_alter_table(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    rules = [
        *binlog_rules(),
        {"name": "noted", "table": "orders", "plugins": ["other"], "mode": "binlog", "conditions": {"note": "x"}},
    ]
    settings = cdc_settings(tmp_path, redis_url, mysql_url, rules, batch_size=500)
    await sql(settings, ORDERS, "ALTER TABLE orders ADD COLUMN note VARCHAR(10)")
    async with binlog_capture(settings):
        pass  # the position is stored: what follows is read while the stream lags behind it
    rows = ", ".join(f"('a{i}', {i}, 'x')" for i in range(1000))
    await sql(
        settings,
        f"INSERT INTO orders (status, total, note) VALUES {rows}",
        "ALTER TABLE orders ADD COLUMN region VARCHAR(10) AFTER status",
        "INSERT INTO orders (status, region, total, note) VALUES ('b', 'eu', 1, 'x')",
        "ALTER TABLE orders DROP COLUMN note",
        "INSERT INTO orders (status, region, total) VALUES ('c', 'us', 2)",
    )
    async with binlog_capture(settings) as rig:
        await rig.settle()
        events = await rig.events("recorder")
        noted = await rig.events("other")
        state = {s.rule.name: s for s in rig.capture.states}
    by_status = {e["row"]["status"]: e["row"] for e in events}
    assert len(events) == 1002
    assert by_status["a999"] == {"id": 1000, "status": "a999", "total": 999, "note": "x"}  # before the ALTER
    assert by_status["b"] == {"id": 1001, "status": "b", "region": "eu", "total": 1, "note": "x"}
    assert by_status["c"] == {"id": 1002, "status": "c", "region": "us", "total": 2}  # note dropped
    assert len(noted) == 1001  # the rule on the dropped column took every row written with it
    assert "note" in (state["noted"].last_error or "") and state["all"].last_error is None


async def test_the_seed_monitored_tables_shape_in_binlog_mode(tmp_path: Path, redis_url: str, mysql_url: str) -> None:
    seed = {"testdb.orders": {"triggers": ["recorder"], "conditions": {"status": "paid"}, "operations": ["UPDATE"]}}
    settings = cdc_settings(tmp_path, redis_url, mysql_url, [], monitored_tables=seed, mode="binlog")
    await sql(settings, ORDERS)
    async with binlog_capture(settings) as rig:
        await sql(
            settings,
            "INSERT INTO orders (status, total) VALUES ('new', 1), ('new', 2)",
            "UPDATE orders SET status = 'paid' WHERE id = 2",
        )
        await rig.settle()
        events = await rig.events()
    assert [(e["rule"], e["operation"], e["primary_key"]) for e in events] == [("testdb_orders", "UPDATE", {"id": 2})]


async def test_each_missing_server_setting_is_named_with_its_fix_and_nothing_starts(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    settings = cdc_settings(tmp_path, redis_url, mysql_url, binlog_rules())
    await sql(settings, ORDERS)
    redis = connect_redis(redis_url)
    try:
        admin = await cdc_admin(settings, redis)
        assert (await admin.status())["server_checks"] == []
        await sql(
            settings,
            "SET GLOBAL binlog_format = 'STATEMENT'",
            "SET GLOBAL binlog_row_image = 'MINIMAL'",
            "SET GLOBAL binlog_row_metadata = 'MINIMAL'",
        )
        try:
            checks = (await admin.status())["server_checks"]
            async with binlog_capture(settings) as rig:
                refused = rig.capture.last_error
                connected = rig.capture.connected
        finally:
            await sql(
                settings,
                "SET GLOBAL binlog_format = 'ROW'",
                "SET GLOBAL binlog_row_image = 'FULL'",
                "SET GLOBAL binlog_row_metadata = 'FULL'",
            )
        # a user without the replication grants
        await sql(
            settings,
            "DROP USER IF EXISTS 'plain'@'%'",
            "CREATE USER 'plain'@'%' IDENTIFIED BY 'pw'",
            "GRANT SELECT ON testdb.* TO 'plain'@'%'",
        )
        plain = settings.model_copy(update={"database_url": SecretStr(mysql_url.replace("root@", "plain:pw@"))})
        grants = await (await cdc_admin(plain, redis)).binlog_checks()
    finally:
        await redis.aclose()
    assert checks == [
        "binlog_format is STATEMENT, needs ROW: SET GLOBAL binlog_format = 'ROW' (and binlog-format=ROW in the server's config)",
        "binlog_row_image is MINIMAL, needs FULL: SET GLOBAL binlog_row_image = 'FULL' (and binlog-row-image=FULL in the server's config)",
        "binlog_row_metadata is MINIMAL, needs FULL: SET GLOBAL binlog_row_metadata = 'FULL' (and binlog-row-metadata=FULL in the server's config)",
    ]  # fmt: skip
    assert not connected and refused is not None and "binlog_row_metadata is MINIMAL" in refused
    assert grants == [
        "user 'plain'@'%' lacks REPLICATION SLAVE: GRANT REPLICATION SLAVE ON *.* TO 'plain'@'%'",
        "user 'plain'@'%' lacks BINLOG MONITOR: GRANT BINLOG MONITOR ON *.* TO 'plain'@'%'",
    ]


def test_a_server_without_log_bin_or_with_our_server_id_is_named() -> None:
    facts = ServerFacts(
        False,
        "ROW",
        "FULL",
        "FULL",
        7,
        "10.11.9-MariaDB",
        "'root'@'localhost'",
        ["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost`"],
    )
    lines = problems(facts, replica_id=7)
    assert lines == [
        "log_bin is OFF: restart the server with --log-bin (and --server-id=N); it cannot be set at run time",
        "[cdc] binlog_server_id 7 is the server's own server_id: set binlog_server_id to an id no server or replica uses",
    ]  # fmt: skip


async def stored_then_purged(settings: Settings) -> None:
    """Store a position, then write a row ('lost') and purge the binlog holding it."""
    await sql(settings, ORDERS)
    async with binlog_capture(settings):
        pass  # the position is stored
    ((file, *_),) = await sql(
        settings, "INSERT INTO orders (status, total) VALUES ('lost', 1)", "FLUSH BINARY LOGS", "SHOW MASTER STATUS"
    )

    async def purged() -> bool:
        # MariaDB keeps a file until its binlog checkpoint is written: purge again until it is gone
        rows = await sql(settings, ("PURGE BINARY LOGS TO %s", (file,)), "SHOW BINARY LOGS")
        return bool(rows[0][0] == file)

    await wait_for(purged, timeout_s=30)


async def test_a_purged_position_is_a_clear_error_and_cdc_snapshot_brings_the_rule_back(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    settings = cdc_settings(tmp_path, redis_url, mysql_url, binlog_rules(), reconnect_max_s=0.5)
    await stored_then_purged(settings)
    redis = connect_redis(redis_url)
    try:
        async with binlog_capture(settings) as rig:
            capture = rig.capture
            status = await capture.status()
            rule_error = capture.states[0].last_error
            assert not capture.connected
            snapshot = await cdc(settings, "snapshot", "all", "--json")  # the real CLI
            assert snapshot.rc == 0, snapshot.err
            result = snapshot.json()
            await wait_for(lambda: capture.connected and capture.last_error is None, timeout_s=30)
            await sql(settings, "INSERT INTO orders (status, total) VALUES ('after', 2)")
            await rig.settle()
            events = await rig.events()
    finally:
        await redis.aclose()
    assert status["last_error"] == rule_error and rule_error is not None
    assert (
        "purged" in rule_error
        and "`orchestrator cdc snapshot all`" in rule_error
        and 'on_purged = "snapshot"' in rule_error
    )
    assert status["binlog"]["purged"] is True  # type: ignore[typeddict-item]
    assert result["rows"] == 1
    assert sorted((e["row"]["status"], e["change_id"][0] == "s") for e in events) == [("after", False), ("lost", True)]


async def test_a_server_without_log_bin_is_named_and_nothing_starts(tmp_path: Path, redis_url: str) -> None:
    (tmp_path / "no-binlog").mkdir()
    server = MariaDBServer.from_env_or_start(tmp_path / "no-binlog", binlog=False)  # its own private server
    try:
        settings = cdc_settings(tmp_path, redis_url, server.url, binlog_rules())
        await sql(settings, ORDERS)
        async with binlog_capture(settings) as rig:
            refused, connected = rig.capture.last_error, rig.capture.connected
    finally:
        server.stop()
    assert not connected and refused is not None
    assert "log_bin is OFF: restart the server with --log-bin (and --server-id=N)" in refused


async def test_on_purged_snapshot_takes_the_table_again_and_resumes(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    settings = cdc_settings(tmp_path, redis_url, mysql_url, binlog_rules(), on_purged="snapshot")
    await stored_then_purged(settings)
    async with binlog_capture(settings) as rig:
        await rig.snapshot_done("all")  # taken while the stream goes on
        await sql(settings, "INSERT INTO orders (status, total) VALUES ('after', 2)")
        await rig.settle()
        events = await rig.events()
    assert sorted((e["row"]["status"], e["change_id"][0] == "s") for e in events) == [("after", False), ("lost", True)]


async def test_a_mariadb_restart_resumes_from_the_stored_position(
    tmp_path: Path, redis_url: str, mysql_url: str, mariadb_server: MariaDBServer
) -> None:
    if mariadb_server.external:
        pytest.skip("restarts the server: only a server the fixtures started")
    settings = cdc_settings(tmp_path, redis_url, mysql_url, binlog_rules(), reconnect_max_s=0.5)
    await sql(settings, ORDERS)
    async with binlog_capture(settings) as rig:
        await sql(settings, "INSERT INTO orders (status, total) VALUES ('a', 1), ('b', 2)")
        await rig.settle()
        mariadb_server.stop()
        await wait_for(lambda: rig.capture.last_error, timeout_s=30)  # the loss is reported
        mariadb_server.start()
        await sql(settings, "INSERT INTO orders (status, total) VALUES ('c', 3)", "DELETE FROM orders WHERE id = 1")
        await wait_for(lambda: rig.capture.connected and rig.capture.last_error is None, timeout_s=30)
        await rig.settle()
        events = await rig.events()
    assert sorted((e["operation"], (e["row"] or e["before"])["status"]) for e in events) == [
        ("DELETE", "a"), ("INSERT", "a"), ("INSERT", "b"), ("INSERT", "c"),
    ]  # fmt: skip
