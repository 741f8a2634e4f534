"""A write on a connection that was closed under it is a ConnectionError, on uvloop too.

When a connection is closed while a task writes on it (the Sentinel pool drops every connection,
in-use ones too, when the primary moves; a peer reset), asyncio's transport raises an OSError,
which redis-py turns into its ConnectionError; uvloop's raises `RuntimeError: unable to perform
operation on <TCPTransport closed=True ...>; the handler is closed`, which redis-py passes on
untouched (the same class of leak as redis/redis-py#4287 on CPython 3.12+). Nothing treats a
RuntimeError as "Redis went away": a component's loop would crash and be restarted instead of
reconnecting. Mapped here, it takes the path every other lost connection takes.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError


class ClosedWriteIsConnectionError(AbstractConnection):
    """Mixed in front of a connection class; see the module docstring."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        try:
            await super().send_packed_command(command, check_health)
        except RuntimeError as e:  # redis-py has disconnected it already (its BaseException path)
            msg = f"Error while writing to socket: the connection was closed under the write ({e.__class__.__name__})"
            raise RedisConnectionError(msg) from e


def with_closed_write_as_connection_error(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """`connection_class` (plain, TLS, unix socket or Sentinel-managed) with the mapping above."""
    if issubclass(connection_class, ClosedWriteIsConnectionError):
        return connection_class
    return type(connection_class.__name__, (ClosedWriteIsConnectionError, connection_class), {})
