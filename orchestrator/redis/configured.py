"""The Redis the settings name: REDIS_URL, or the embedded server of the state directory."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from orchestrator.errors import ConfigError
from orchestrator.redis.connection import RedisOptions, connect, explain, is_connection_error
from orchestrator.redis.embedded import EmbeddedRedis
from orchestrator.redis.settings import RedisSettings


@contextlib.asynccontextmanager
async def open_redis(
    section: RedisSettings, state_dir: Path, *, start_embedded: bool = True
) -> AsyncIterator[tuple[ArqRedis, str]]:
    """The configured Redis, or the embedded one (started if needed and allowed): (client, URL).

    A failure to reach Redis inside the block (refused, TLS, password) leaves it as one line naming
    the URL and the cause (connection.explain): RedisUnavailable (exit 1) or ConfigError (exit 2).
    """
    url = section.redis_url
    if url is None:
        embedded = EmbeddedRedis(state_dir)
        if not await embedded.ensure(start=start_embedded):
            msg = f"redis_url: not set and no embedded Redis is running under {state_dir}"
            raise ConfigError(msg)
        url = embedded.url
    options = RedisOptions.from_settings(section)
    redis = connect(url, options)
    try:
        try:
            yield redis, url
        except (RedisError, OSError) as e:
            if is_connection_error(e):
                raise explain(e, url, options) from e
            raise
    finally:
        await redis.aclose()
