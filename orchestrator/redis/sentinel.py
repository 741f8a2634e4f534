"""Redis Sentinel: the `redis+sentinel://` URL, a bounded pool that follows the primary, and the
watch that tells /health about a failover (see orchestrator/redis/connection.py for the rest).

redis-py asks the sentinels only when it opens a connection, and a connection to a demoted primary
fails only once a sentinel has reconfigured that server as a replica: after a manual or planned
failover the old primary stays up and writable until then, up to 10 s later (Sentinel's INFO
period for replicas), and what it acknowledged meanwhile is discarded. So the pool here asks again
at most once a second as it hands out connections, and drops every connection when the primary
moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from redis.asyncio import Redis
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import RedisError

from orchestrator.errors import ConfigError
from orchestrator.logs import mask_url

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SentinelTarget:
    """A `redis+sentinel://` URL taken apart."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int
    username: str | None
    password: str | None
    tls: bool


def parse_sentinel_url(url: str) -> SentinelTarget:
    """`redis+sentinel://[user:password@]h1:p1[,h2:p2...]/service[/db]`.

    Raises:
        ConfigError: the URL lacks a sentinel address or the service name.
    """
    scheme, _, rest = url.partition("://")
    userinfo, _, hostpart = rest.rpartition("@")
    hosts, _, path = hostpart.partition("/")
    username = password = None
    if userinfo:
        user, _, pw = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(pw) or None
    sentinels: list[tuple[str, int]] = []
    for item in filter(None, hosts.split(",")):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "26379")
        try:
            sentinels.append((host.strip("[]"), int(port)))
        except ValueError:
            msg = f"redis_url: bad sentinel address {item!r} in {mask_url(url)} (host:port expected)"
            raise ConfigError(msg) from None
    parts = [p for p in path.split("?")[0].split("/") if p]
    if not sentinels or not parts:
        msg = f"redis_url: {mask_url(url)} needs host:port[,host:port...]/service_name[/db]"
        raise ConfigError(msg)
    try:
        db = int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        msg = f"redis_url: the db in {mask_url(url)} is not a number"
        raise ConfigError(msg) from None
    return SentinelTarget(sentinels, unquote(parts[0]), db, username, password, tls=scheme == "rediss+sentinel")


class SentinelBlockingPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's primary discovery with the blocking pool's bound (redis-py has no such class),
    and a pool that follows the primary by itself.

    redis-py asks the sentinels only when it opens a connection, and a connection to a demoted
    primary fails only once that server has been reconfigured as a replica: after a manual or
    planned failover the old primary stays up and writable until a sentinel does so, up to 10 s
    later (Sentinel's INFO period for replicas), and what it acknowledged meanwhile is discarded.
    So, at most once per `recheck_s`, taking a connection first asks the sentinels; when the
    primary moved, every pooled connection (in-use ones too: a pub/sub listener) is dropped and
    reconnects to the new primary at its next command. This covers the process, the CLI and the
    Python client alike, with no background task.
    """

    recheck_s = 1.0

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self.checked_at = 0.0
        self.failovers = 0
        self.last_failover: dict[str, Any] | None = None

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        now_s = asyncio.get_running_loop().time()
        if self.master_address is not None and now_s - self.checked_at >= self.recheck_s:
            self.checked_at = now_s
            with contextlib.suppress(RedisError, OSError):  # sentinels away: keep the primary we know
                await self.follow_primary()
        return await super().get_connection(*args, **kwargs)

    async def follow_primary(self) -> bool:
        """Ask the sentinels; True when the primary moved (and every connection was dropped)."""
        address = await self.sentinel_manager.discover_master(self.service_name)
        known = self.master_address
        if known is None or known == address:
            self.master_address = address
            return False
        old, new = "%s:%s" % known, "%s:%s" % address  # noqa: UP031
        logger.warning(
            "redis: the sentinels moved the primary of %s from %s to %s; reconnecting", self.service_name, old, new
        )
        self.master_address = address
        self.failovers += 1
        self.last_failover = {"from": old, "to": new, "at": time.time()}
        # The primary's connections only (the pool's own disconnect, not ours below): the connections
        # to the sentinels did not move, and another task may be asking them right now; closing one
        # under it failed that task (a worker's claim crashed with uvloop's closed-transport error).
        await super().disconnect(inuse_connections=True)
        return True

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        # redis-py never closes its connections to the sentinels themselves: close them with the pool
        # (closing the client closes the pool; after a failover they reconnect at the next question).
        for sentinel in self.sentinel_manager.sentinels:
            await sentinel.connection_pool.disconnect()


class PrimaryWatch:
    """Sentinel mode: asks the sentinels every `every_s` even when the process is idle (the pool
    also does it as connections are taken: see SentinelBlockingPool), and tells /health about a
    failover: `moving` holds (old, new) from the switch until the new primary answered and
    `settle_s` passed, so probes that poll every few seconds see it.

    Args:
        redis: a client made by `connect` (nothing to do unless its pool is a Sentinel one).
    """

    def __init__(self, redis: Redis, *, every_s: float = 1.0, settle_s: float = 2.0) -> None:
        self.redis = redis
        self.every_s = every_s
        self.settle_s = settle_s
        self.moving: tuple[str, str] | None = None
        self._seen = 0
        self._moved_at = 0.0

    @property
    def pool(self) -> SentinelBlockingPool | None:
        pool = self.redis.connection_pool
        return pool if isinstance(pool, SentinelBlockingPool) else None

    @property
    def active(self) -> bool:
        return self.pool is not None

    @property
    def failovers(self) -> int:
        return self.pool.failovers if self.pool is not None else 0

    @property
    def last_failover(self) -> dict[str, Any] | None:
        return self.pool.last_failover if self.pool is not None else None

    async def run(self) -> None:
        """Until cancelled; idle unless the pool is a Sentinel one."""
        pool = self.pool
        if pool is None:
            await asyncio.Event().wait()
            return
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(RedisError, OSError):
                await pool.follow_primary()
            if pool.failovers != self._seen and pool.last_failover is not None:
                self._seen = pool.failovers
                self.moving, self._moved_at = (pool.last_failover["from"], pool.last_failover["to"]), loop.time()
            if self.moving is not None and loop.time() - self._moved_at >= self.settle_s:
                with contextlib.suppress(RedisError, OSError):
                    await self.redis.ping()
                    logger.info("redis: the new primary %s answers", self.moving[1])
                    self.moving = None
            await asyncio.sleep(self.every_s)
