"""What one command opens at most once: the plugins folder, a Redis connection, a client, the CDC admin.

Every command handler gets a `Command`; what it opened is closed when the command ends. A failure to
reach Redis anywhere in the command becomes one line naming the URL and the cause (redis/configured.py).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Self

from orchestrator.cli.render import Output
from orchestrator.config import Settings
from orchestrator.errors import ConfigError, StartupError

# What a command opens is imported when it opens it: redis, arq, the plugins and tracing cost a
# command that needs none of them (`orchestrator health`, the container's health check) ~0.3 s of imports.
if TYPE_CHECKING:
    from arq.connections import ArqRedis

    from orchestrator.cdc.admin import CdcAdmin
    from orchestrator.cli.local_plugins import LocalPlugins
    from orchestrator.client import Client
    from orchestrator.tracing.facade import Tracing


class Command:
    """The context of one CLI command.

    Args:
        settings: the effective settings.
        out: where the command writes (stdout for results, stderr for notes and errors).
    """

    def __init__(self, settings: Settings, out: Output) -> None:
        self.settings = settings
        self.out = out
        self._stack = contextlib.AsyncExitStack()
        self._plugins: LocalPlugins | None = None
        self._redis: tuple[ArqRedis, str] | None = None
        self._tracing: Tracing | None = None

    async def __aenter__(self) -> Self:
        await self._stack.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return await self._stack.__aexit__(kind, error, tb)

    async def plugins(self) -> LocalPlugins:
        """The local plugins folder, loaded once."""
        if self._plugins is None:
            from orchestrator.cli.local_plugins import LocalPlugins

            self._plugins = await LocalPlugins(self.settings).load()
        return self._plugins

    async def redis(self, *, write: bool = False) -> tuple[ArqRedis, str]:
        """(client, URL) of the configured Redis, opened once per command: a command that writes may
        start the embedded one (the first call decides; a command asks with the widest need first)."""
        if self._redis is None:
            from orchestrator.redis.configured import open_redis

            self._redis = await self._stack.enter_async_context(
                open_redis(self.settings, self.settings.state_dir, start_embedded=write)
            )
        return self._redis

    async def client(self, *, write: bool = False, local_plugins: bool = False) -> Client:
        """A client over this command's Redis; with `local_plugins`, triggers are validated against the
        local plugins folder (else against what running instances published)."""
        from orchestrator.client import Client

        redis, _ = await self.redis(write=write)
        registry = (await self.plugins()).registry if local_plugins else None
        client = Client.for_settings(self.settings, redis, registry, tracing=self.tracing())
        self._stack.push_async_callback(client.close)  # stops its result listener before Redis closes
        return client

    def tracing(self) -> Tracing:
        """Spans (`orchestrator trigger` opens a `trigger` span), built once; flushed when the command ends."""
        if self._tracing is None:
            from orchestrator.tracing import build as tracing

            self._tracing = tracing.build(self.settings)
            self._stack.push_async_callback(self._tracing.aclose)
        return self._tracing

    async def enabled_flags(self) -> dict[str, bool]:
        """Enable/disable flags as every instance sees them (Redis), if a Redis is reachable (never starts one)."""
        from redis.exceptions import RedisError

        try:
            return await (await self.client()).enabled_flags()
        except (ConfigError, StartupError, RedisError, OSError):  # listing plugins must work without Redis
            return {}

    async def cdc_admin(self, *, write: bool = False, validates: bool = False) -> CdcAdmin:
        """Change capture for `orchestrator cdc ...`; `validates`: jobs are checked against the local plugins."""
        from orchestrator.cdc.admin import CdcAdmin  # asyncmy: only for the commands that reach MySQL

        # Validate against the local plugins folder when there is one, else what instances published.
        local = validates and bool((await self.plugins()).all())
        client = await self.client(write=write, local_plugins=local)
        return CdcAdmin(self.settings, client.redis, await client.submitter())


Handler = Callable[[argparse.Namespace, Command], Awaitable[int]]
"""A command's body: its parsed arguments and its context in, its exit code out (cli/exit_codes.py)."""


async def run_command(handler: Handler, args: argparse.Namespace, cmd: Command) -> int:
    """Run one command inside its context, which closes whatever the command opened."""
    async with cmd:
        return await handler(args, cmd)
