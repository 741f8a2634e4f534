"""A write on a connection closed under it is redis-py's ConnectionError on uvloop too (the loop
`orchestrator run` uses), so the components reconnect instead of crashing (redis/closed.py).

On uvloop the plain connection raises RuntimeError ("the handler is closed"): the first test shows
that this is what the mapping is for, the second that our connections raise ConnectionError."""

from __future__ import annotations

import asyncio

import pytest
import uvloop
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError

from orchestrator.redis.closed import ClosedWriteIsConnectionError
from orchestrator.redis.connection import connect


async def _write_after_close(connection: Connection) -> None:
    await connection.connect()
    assert connection._writer is not None
    connection._writer.transport.close()  # closed under the writer, as a pool's disconnect does
    for _ in range(3):  # the handle closes on the loop's next turns
        await asyncio.sleep(0)
    await connection.send_command("PING")


def _host_port(redis_url: str) -> tuple[str, int]:
    host, port = redis_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    return host, int(port)


def test_uvloop_raises_runtime_error_on_a_plain_connection(redis_url: str) -> None:
    host, port = _host_port(redis_url)
    with pytest.raises(RuntimeError, match="closed"):
        uvloop.run(_write_after_close(Connection(host=host, port=port)))


def test_our_connections_raise_connection_error_instead(redis_url: str) -> None:
    pool = connect(redis_url).connection_pool  # what every component and the Client get
    assert issubclass(pool.connection_class, ClosedWriteIsConnectionError)
    with pytest.raises(RedisConnectionError, match="closed under the write"):
        uvloop.run(_write_after_close(pool.make_connection()))
