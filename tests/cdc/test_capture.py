"""The change poller against a real MariaDB and Redis: delivery, filters, gap safety, failures."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from tests.cdc.helpers import capture, cdc_settings, db_connect, install, sql
from tests.jobs.helpers import wait_for

ORDERS = (
    "CREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, status VARCHAR(20), total DECIMAL(10,2), "
    "note VARCHAR(50), updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), "
    "KEY ts (updated_at, id))"
)


async def test_insert_update_delete_reach_the_right_plugin_with_before_and_after(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    rules = [
        {"name": "all", "table": "orders", "plugins": ["recorder"], "params": {"tag": "all"}},
        {"name": "deletes", "table": "testdb.orders", "operations": ["DELETE"], "triggers": ["other"]},
    ]
    settings = cdc_settings(tmp_path, redis_url, mysql_url, rules)
    await sql(settings, ORDERS)
    await install(settings)
    async with capture(settings) as rig:
        await sql(
            settings,
            "INSERT INTO orders (status, total) VALUES ('new', 10.50)",
            "UPDATE orders SET status = 'paid' WHERE id = 1",
            "DELETE FROM orders WHERE id = 1",
        )
        await rig.settle()
        jobs = await rig.jobs()
    assert sorted(jobs) == ["cdc:all:1:recorder", "cdc:all:2:recorder", "cdc:all:3:recorder", "cdc:deletes:3:other"]
    events = {j: r["context"]["change_event"] for j, r in jobs.items()}
    insert, update, delete = (events[f"cdc:all:{i}:recorder"] for i in (1, 2, 3))
    assert insert["operation"] == "INSERT" and insert["table"] == "testdb.orders"
    assert insert["row"]["status"] == "new" and insert["row"]["total"] == 10.5 and insert["before"] is None
    assert insert["primary_key"] == {"id": 1} and insert["change_id"] == "1" and insert["commit_time"]
    assert update["operation"] == "UPDATE"
    assert (update["before"]["status"], update["row"]["status"]) == ("new", "paid")
    assert delete["operation"] == "DELETE" and delete["row"] is None and delete["before"]["status"] == "paid"
    assert events["cdc:deletes:3:other"]["before"]["status"] == "paid"
    assert jobs["cdc:all:1:recorder"]["params"] == {"tag": "all"} and jobs["cdc:all:1:recorder"]["source"] == "cdc"


async def test_conditions_and_operations_filter(tmp_path: Path, redis_url: str, mysql_url: str) -> None:
    rules = [
        {"name": "paid", "table": "orders", "plugins": ["recorder"], "conditions": {"status": "paid"}},
        {
            "name": "moved",
            "table": "orders",
            "plugins": ["recorder"],
            "operations": ["UPDATE"],
            "conditions": {"status": {"changed": True}, "note": {"not": "skip"}},
        },
        {"name": "big", "table": "orders", "plugins": ["recorder"], "conditions": {"total": {"in": [100, 200]}}},
    ]
    settings = cdc_settings(tmp_path, redis_url, mysql_url, rules)
    await sql(settings, ORDERS)
    await install(settings)
    async with capture(settings) as rig:
        await sql(
            settings,
            "INSERT INTO orders (status, total) VALUES ('new', 100)",  # 1: big
            "INSERT INTO orders (status, total) VALUES ('paid', 5)",  # 2: paid
            "UPDATE orders SET status = 'paid' WHERE id = 1",  # 3: paid, moved, big
            "UPDATE orders SET total = 7 WHERE id = 2",  # 4: paid (status unchanged: not moved)
            "UPDATE orders SET status = 'done', note = 'skip' WHERE id = 2",  # 5: status changed but note = skip
        )
        await rig.settle()
        jobs = sorted(await rig.jobs())
    assert jobs == [
        "cdc:big:1:recorder",
        "cdc:big:3:recorder",
        "cdc:moved:3:recorder",
        "cdc:paid:2:recorder",
        "cdc:paid:3:recorder",
        "cdc:paid:4:recorder",
    ]


async def test_out_of_order_commits_lose_nothing_in_changelog_mode(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    settings = cdc_settings(
        tmp_path, redis_url, mysql_url, [{"name": "all", "table": "orders", "plugins": ["recorder"]}]
    )
    await sql(settings, ORDERS)
    await install(settings)
    slow = await db_connect(settings, autocommit=False)
    try:
        async with capture(settings) as rig:
            async with slow.cursor() as cur:
                await cur.execute("INSERT INTO orders (status) VALUES ('slow')")  # changelog id 1, not committed
            await sql(settings, "INSERT INTO orders (status) VALUES ('fast')")  # changelog id 2, committed
            await rig.settle()
            assert sorted(await rig.jobs()) == ["cdc:all:2:recorder"]
            assert rig.poller.cursor.holes and rig.poller.cursor.low == 0  # id 1 is a hole, not skipped
            await slow.commit()
            await rig.settle()
            assert sorted(await rig.jobs()) == ["cdc:all:1:recorder", "cdc:all:2:recorder"]
            assert not rig.poller.cursor.holes and rig.poller.cursor.low == 2
            # A rolled-back insert burns an id: its hole closes once no older transaction is open.
            async with slow.cursor() as cur:
                await cur.execute("INSERT INTO orders (status) VALUES ('rolled back')")  # id 3
            await sql(settings, "INSERT INTO orders (status) VALUES ('after')")  # id 4
            await rig.settle()
            assert rig.poller.cursor.low == 2
            await slow.rollback()
            await wait_for(lambda: rig.poller.cursor.low == 4)
            assert not rig.poller.cursor.holes and rig.poller.closed_ids == 1
            assert sorted(await rig.jobs()) == [f"cdc:all:{i}:recorder" for i in (1, 2, 4)]
    finally:
        slow.close()


async def test_out_of_order_commits_lose_nothing_in_timestamp_mode(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    rule = {"name": "ts", "table": "orders", "plugins": ["recorder"], "mode": "timestamp"}
    settings = cdc_settings(tmp_path, redis_url, mysql_url, [rule])
    await sql(settings, ORDERS)
    slow = await db_connect(settings, autocommit=False)
    try:
        async with capture(settings) as rig:
            async with slow.cursor() as cur:
                # takes its updated_at now, commits after a later row was read
                await cur.execute("INSERT INTO orders (status) VALUES ('slow')")
            await sql(settings, "DO SLEEP(0.01)", "INSERT INTO orders (status) VALUES ('fast')")
            await rig.settle()
            events = await rig.events()
            assert [e["row"]["status"] for e in events] == ["fast"]
            await slow.commit()
            await rig.settle()
            events = await rig.events()
            assert sorted(e["row"]["status"] for e in events) == ["fast", "slow"]
            assert all(e["operation"] == "UPDATE" and e["before"] is None for e in events)
            # A re-read (the rows stay above the safe point for a while) enqueues nothing twice.
            await rig.settle()
            assert len(await rig.jobs()) == 2
            assert rig.poller.states[0].delivered == 2
    finally:
        slow.close()


async def test_a_rule_on_a_missing_table_is_reported_and_the_others_run(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    rules = [
        {"name": "good", "table": "orders", "plugins": ["recorder"]},
        {"name": "ghost", "table": "nowhere", "plugins": ["recorder"]},
        {"name": "ghost_ts", "table": "nowhere_ts", "plugins": ["recorder"], "mode": "timestamp"},
    ]
    settings = cdc_settings(tmp_path, redis_url, mysql_url, rules)
    await sql(settings, ORDERS)
    from orchestrator.client import connect_redis
    from tests.cdc.helpers import cdc_admin

    redis = connect_redis(redis_url)
    try:
        steps = await (await cdc_admin(settings, redis)).install(dry_run=False)
    finally:
        await redis.aclose()
    assert {s["target"]: s["action"] for s in steps}["testdb.nowhere"] == "error"
    async with capture(settings) as rig:
        await sql(settings, "INSERT INTO orders (status) VALUES ('x')")
        await rig.settle()
        assert sorted(await rig.jobs()) == ["cdc:good:1:recorder"]
        status = {r["name"]: r for r in (await rig.poller.status())["rules"]}
    assert status["good"]["last_error"] is None and status["good"]["delivered"] == 1
    assert "nowhere does not exist" in status["ghost"]["last_error"]
    assert "nowhere_ts does not exist" in status["ghost_ts"]["last_error"]


async def test_a_dropped_watched_column_is_reported_per_rule(tmp_path: Path, redis_url: str, mysql_url: str) -> None:
    rules = [
        {"name": "by_note", "table": "orders", "plugins": ["recorder"], "conditions": {"note": "x"}},
        {"name": "ts", "table": "items", "plugins": ["recorder"], "mode": "timestamp"},
    ]
    settings = cdc_settings(tmp_path, redis_url, mysql_url, rules)
    await sql(settings, ORDERS, ORDERS.replace("orders", "items"))
    await install(settings)
    async with capture(settings) as rig:
        await sql(settings, "ALTER TABLE orders DROP COLUMN note", "INSERT INTO items (status) VALUES ('a')")
        rig.poller._schema_checked_at = -1e9  # the schema is re-checked every few seconds: now
        await rig.settle()
        status = {r["name"]: r for r in (await rig.poller.status())["rules"]}
        assert "note" in status["by_note"]["last_error"]
        assert status["ts"]["last_error"] is None
        assert [e["row"]["status"] for e in await rig.events()] == ["a"]


async def test_mariadb_restarted_mid_stream_the_poller_reconnects_and_loses_nothing(
    tmp_path: Path, redis_url: str, mysql_url: str, mariadb_server: object
) -> None:
    from tests.services import MariaDBServer

    assert isinstance(mariadb_server, MariaDBServer)
    settings = cdc_settings(
        tmp_path, redis_url, mysql_url, [{"name": "all", "table": "orders", "plugins": ["recorder"]}]
    )
    await sql(settings, ORDERS)
    await install(settings)
    async with capture(settings) as rig:
        for i in range(50):
            await sql(settings, f"INSERT INTO orders (status) VALUES ('before {i}')")
        mariadb_server.stop()
        await wait_for(lambda: rig.poller.last_error is not None)
        health = await rig.poller.health()
        assert health.status == "failing"
        mariadb_server.start()
        for i in range(50):
            await sql(settings, f"INSERT INTO orders (status) VALUES ('after {i}')")
        await wait_for(lambda: rig.poller.last_error is None and rig.poller.connected)
        await rig.settle()
        jobs = await rig.jobs()
    assert sorted(jobs) == sorted(f"cdc:all:{i}:recorder" for i in range(1, 101))


async def test_delivered_changelog_rows_are_trimmed_after_the_retention(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    rules = [{"name": "all", "table": "orders", "plugins": ["recorder"]}]
    settings = cdc_settings(tmp_path, redis_url, mysql_url, rules, retention_s=0)
    await sql(settings, ORDERS)
    await install(settings)
    slow = await db_connect(settings, autocommit=False)
    try:
        async with capture(settings) as rig:
            await sql(settings, "INSERT INTO orders (status) VALUES ('a')", "INSERT INTO orders (status) VALUES ('b')")
            async with slow.cursor() as cur:
                await cur.execute("INSERT INTO orders (status) VALUES ('open')")  # id 3: a hole while open
            await sql(settings, "INSERT INTO orders (status) VALUES ('c')")  # id 4
            await rig.settle()
            rig.poller._trimmed_at = -1e9  # trimming runs every 30 s: now
            await rig.settle()
            # delivered rows below the lowest hole are gone; the hole and what follows it are kept
            assert [r[0] for r in await sql(settings, "SELECT id FROM orch_changelog ORDER BY id")] == [4]
            await slow.commit()
            await rig.settle()
            assert sorted(await rig.jobs()) == [f"cdc:all:{i}:recorder" for i in (1, 2, 3, 4)]
    finally:
        slow.close()


async def test_without_the_process_privilege_a_hole_is_given_up_after_the_timeout(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    settings = cdc_settings(
        tmp_path, redis_url, mysql_url, [{"name": "all", "table": "orders", "plugins": ["recorder"]}]
    )
    await sql(settings, ORDERS)
    await install(settings)
    await sql(
        settings,
        "CREATE USER IF NOT EXISTS 'cdc_limited'@'%' IDENTIFIED BY 'pw'",
        "GRANT SELECT, DELETE ON testdb.* TO 'cdc_limited'@'%'",
    )
    limited_url = mysql_url.replace("root@", "cdc_limited:pw@")
    limited = settings.model_copy(update={"database_url": SecretStr(limited_url)})
    limited.cdc.hole_timeout_s = 1.0
    slow = await db_connect(settings, autocommit=False)
    try:
        async with capture(limited) as rig:
            async with slow.cursor() as cur:
                await cur.execute("INSERT INTO orders (status) VALUES ('rolled back')")  # id 1
            await sql(settings, "INSERT INTO orders (status) VALUES ('b')")  # id 2
            await rig.settle()
            assert rig.poller.cursor.low == 0
            await slow.rollback()
            await wait_for(lambda: rig.poller.cursor.low == 2)
            assert rig.poller.probe.visible is False and rig.poller.closed_ids == 1
            assert sorted(await rig.jobs()) == ["cdc:all:2:recorder"]
    finally:
        slow.close()
        await sql(settings, "DROP USER IF EXISTS 'cdc_limited'@'%'")


async def test_a_changelog_created_again_continues_above_the_delivered_position(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    from orchestrator.client import connect_redis
    from tests.cdc.helpers import cdc_admin

    settings = cdc_settings(
        tmp_path, redis_url, mysql_url, [{"name": "all", "table": "orders", "plugins": ["recorder"]}]
    )
    await sql(settings, ORDERS)
    await install(settings)
    async with capture(settings) as rig:
        await sql(settings, "INSERT INTO orders (status) VALUES ('a')", "INSERT INTO orders (status) VALUES ('b')")
        await rig.settle()
    redis = connect_redis(redis_url)
    try:
        admin = await cdc_admin(settings, redis)
        await admin.uninstall(dry_run=False, drop_changelog=True)
        await admin.install(dry_run=False)
    finally:
        await redis.aclose()
    async with capture(settings) as rig:
        await sql(settings, "INSERT INTO orders (status) VALUES ('c')")
        await rig.settle()
        assert sorted(await rig.jobs()) == [f"cdc:all:{i}:recorder" for i in (1, 2, 3)]
        assert (await rig.poller.status())["rules"][0]["last_error"] is None
        # created again by hand, without `cdc install`: reported, not silently skipped
        await sql(settings, "DROP TABLE orch_changelog")
        await install(settings.model_copy(update={"redis_url": redis_url}))
        await sql(settings, "ALTER TABLE orch_changelog AUTO_INCREMENT = 1")
        rig.poller._schema_checked_at = -1e9
        await rig.settle()
        assert "created again" in ((await rig.poller.status())["rules"][0]["last_error"] or "")
