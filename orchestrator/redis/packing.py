"""Redis commands packed by hiredis, in C, instead of redis-py's asyncio packer.

redis-py's asyncio connections pack every command in Python (one `encode` and a few `bytes`
joins per argument); its sync connections already use `hiredis.pack_command`, which gives the
same bytes. A job's enqueue script carries about 50 arguments, so this was the largest single
cost of a `trigger()` call (about 100 us of its 200 us) and a good share of a worker's CPU per
job. Anything hiredis does not take (a bool, None, a bytearray) goes to redis-py's packer, which
raises its usual DataError.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection


class HiredisPacking(AbstractConnection):
    """Mixed in front of a connection class; see the module docstring."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        # 'CLIENT SETINFO'-style names: the server wants the words as separate arguments
        if (isinstance(first, str) and " " in first) or (isinstance(first, bytes) and b" " in first):
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return super().pack_command(*args)


def with_hiredis_packing(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """`connection_class` (plain, TLS, unix socket or Sentinel-managed) packing with hiredis."""
    if issubclass(connection_class, HiredisPacking):
        return connection_class
    return type(connection_class.__name__, (HiredisPacking, connection_class), {})
