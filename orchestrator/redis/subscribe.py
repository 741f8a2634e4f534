"""A Redis pub/sub subscription that outlives Redis restarts, failovers and dropped connections."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

_RESUBSCRIBE_S = 1.0


async def listen_forever(
    redis: Redis,
    channels: Sequence[str],
    on_message: Callable[[str, bytes], Awaitable[None] | None],
    *,
    name: str,
    on_subscribed: Callable[[], None] | None = None,
) -> None:
    """Call `on_message(channel, data)` for every message, until cancelled.

    A lost connection is logged and the subscription made again after a second. Messages published
    meanwhile are lost (pub/sub keeps none), so `on_subscribed` runs after every (re)subscription:
    the place to look at what may have been missed.
    """
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*channels)
            if on_subscribed is not None:
                on_subscribed()
            async for message in pubsub.listen():
                handled = on_message(message["channel"].decode(), message["data"])
                if handled is not None:
                    await handled
        except (RedisError, OSError) as e:
            logger.warning("%s.pubsub_lost error=%s; resubscribing in %.0fs", name, e, _RESUBSCRIBE_S)
            await asyncio.sleep(_RESUBSCRIBE_S)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
