"""The harness itself: the session Redis and MariaDB are real, answer, and can go away and come back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncmy
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.services import MariaDBServer, RedisServer


async def test_redis_answers(redis_url: str, redis_server: RedisServer) -> None:
    assert redis_url == redis_server.url == f"redis://{redis_server.host}:{redis_server.port}/0"
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert await client.ping() is True
        assert await client.dbsize() == 0  # flushed for this test
        await client.set("greeting", "hello")
        assert await client.get("greeting") == "hello"
    finally:
        await client.aclose()


@pytest.fixture
async def dirty_redis(redis_server: RedisServer) -> None:
    """Leaves a key behind; requested before redis_url, it runs first."""
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await client.set("left-over", "1")
    finally:
        await client.aclose()


async def test_redis_url_starts_empty(dirty_redis: None, redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.dbsize() == 0
    finally:
        await client.aclose()


async def test_redis_stop_and_start_on_the_same_port(redis_url: str, redis_server: RedisServer) -> None:
    port, url = redis_server.port, redis_server.url
    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=1)
    try:
        await client.set("k", "v")
        redis_server.stop()
        assert not redis_server.running
        with pytest.raises(RedisConnectionError):
            await client.ping()
        redis_server.start()
        assert (redis_server.port, redis_server.url) == (port, url)
        assert await client.ping() is True  # the client reconnects by itself
        assert await client.get("k") is None  # --save '': nothing survives a restart
    finally:
        await client.aclose()
        redis_server.start()


async def test_mariadb_answers_with_binlog_on(mysql_url: str, mariadb_server: MariaDBServer) -> None:
    assert mysql_url == mariadb_server.url
    assert mysql_url.startswith("mysql://") and mysql_url.endswith("/testdb")
    conn = await asyncmy.connect(
        host=mariadb_server.host,
        port=mariadb_server.port,
        user=mariadb_server.user,
        password=mariadb_server.password,
        db=mariadb_server.db,
        autocommit=True,
    )
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT VERSION()")
            (version,) = await cur.fetchone()
            assert "MariaDB" in version
            await cur.execute("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20))")
            await cur.execute("INSERT INTO t VALUES (%s, %s), (%s, %s)", (1, "one", 2, "two"))
            await cur.execute("SELECT id, name FROM t ORDER BY id")
            assert list(await cur.fetchall()) == [(1, "one"), (2, "two")]
            await cur.execute(
                "SHOW VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', 'binlog_row_metadata')"
            )
            assert dict(await cur.fetchall()) == {
                "log_bin": "ON",
                "binlog_format": "ROW",
                "binlog_row_metadata": "FULL",
            }
    finally:
        await conn.ensure_closed()


@pytest.fixture
async def dirty_mariadb(mariadb_server: MariaDBServer) -> AsyncIterator[None]:
    """Leaves a table behind and an idle connection on testdb; requested before mysql_url, it runs first."""
    if not mariadb_server.running:
        mariadb_server.start()
    conn = await asyncmy.connect(**mariadb_server.connect_kwargs)
    try:
        async with conn.cursor() as cur:
            await cur.execute("CREATE TABLE IF NOT EXISTS left_over (id INT)")
            await cur.execute("INSERT INTO left_over VALUES (1)")  # an open transaction holds a metadata lock
        yield
    finally:
        await conn.ensure_closed()


async def test_mysql_url_starts_with_an_empty_testdb(
    dirty_mariadb: None, mysql_url: str, mariadb_server: MariaDBServer
) -> None:
    # to drop testdb, mysql_url had to kill the connection whose transaction holds a lock on it
    conn = await asyncmy.connect(**mariadb_server.connect_kwargs)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SHOW TABLES")
            assert list(await cur.fetchall()) == []
    finally:
        await conn.ensure_closed()


async def test_mariadb_stop_and_start_keeps_data(mysql_url: str, mariadb_server: MariaDBServer) -> None:
    async def query(sql: str) -> object:
        conn = await asyncmy.connect(**mariadb_server.connect_kwargs, autocommit=True, connect_timeout=2)
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql)
                return await cur.fetchall()
        finally:
            await conn.ensure_closed()

    await query("CREATE TABLE kept (id INT PRIMARY KEY)")
    await query("INSERT INTO kept VALUES (7)")
    port = mariadb_server.port
    try:
        mariadb_server.stop()
        with pytest.raises(asyncmy.errors.OperationalError):
            await query("SELECT 1")
        mariadb_server.start()
        assert mariadb_server.port == port
        assert await query("SELECT id FROM kept") == ((7,),)
    finally:
        mariadb_server.start()
