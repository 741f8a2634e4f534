"""Waiting for the ends of the jobs a Client triggered, on one pub/sub connection it keeps.

Waiting by job (`orch:done:<id>`) costs a pub/sub connection per wait: a TCP connect and redis-py's
handshake, SUBSCRIBE, and a read of the record in case it ended first, all before the first
message. A Client that has waited once keeps a `ResultListener` instead: one connection subscribed
to a channel of its own (`Keys.client_done_channel`), and every job it triggers from then on names
that channel in its record (`notify`); the scripts that end a job publish the final record there
too, after the job's id and a newline (lua/finish.lua, cancel.lua, workflow.lua), so that the
listener files it by id and decodes it only when asked for it. Waiting for such a job then costs
no command at all: the record arrives by itself, usually before the caller asks.

Nothing is lost to a dropped connection: the listener stops, the jobs it was told about go back to
the per-job wait (which reads the record first), and the next wait starts a new listener. A client
that stops waiting (no wait for `idle_s`) stops listening at the next message, so a producer that
waited once and then only triggers does not read the end of every job it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import OrderedDict
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from orchestrator.jobs.model import TERMINAL, JobRecord, Keys

logger = logging.getLogger(__name__)


def record_from_message(data: bytes) -> dict[str, Any] | None:
    """A done message carries the final record as a flat JSON list (see JobStore's scripts)."""
    try:
        flat = json.loads(data)
    except ValueError:
        return None
    if not isinstance(flat, list) or len(flat) % 2:
        return None
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    job_id = fields.get("job_id")
    if not isinstance(job_id, str) or "plugin" not in fields or "queue" not in fields:
        return None
    record = JobRecord.from_hash(fields, job_id=job_id)
    return record.to_json() if record.state in TERMINAL else None


class ResultListener:
    """The ends of the jobs one Client triggered (see the module docstring).

    Args:
        redis: the Client's connection pool (the listener holds one of its connections while live).
        idle_s: stop listening when no wait has started for this long.
        max_tracked: at most this many jobs are remembered (told-about and ended-unread, each);
            the oldest beyond it go back to the per-job wait.
    """

    def __init__(self, redis: Redis, *, idle_s: float = 60.0, max_tracked: int = 10_000) -> None:
        self.redis = redis
        self.channel = Keys.client_done_channel(uuid.uuid4().hex)
        self.idle_s = idle_s
        self.max_tracked = max_tracked
        self._expected: OrderedDict[str, None] = OrderedDict()  # triggered naming the channel, end not seen
        # ended, not asked for yet: the record as the message carried it, decoded only when asked
        # for (a producer that triggers many jobs and waits for few pays no decoding for the rest)
        self._ended: OrderedDict[str, bytes] = OrderedDict()
        self._waiters: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._live = False
        self._last_wait = time.monotonic()

    @property
    def live(self) -> bool:
        """Subscribed: a job triggered now may name the channel (its end will be heard)."""
        return self._live

    def start(self) -> None:
        """Start listening (if not yet), without waiting: jobs triggered once it is `live` name the channel.

        The task is the listener's own; `close()` (the Client's) cancels it and waits for it.
        """
        self._last_wait = time.monotonic()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name="client:results")

    def expect(self, job_id: str) -> None:
        """`job_id` is about to be enqueued naming the channel (before the write: its end may come
        back before the write's reply does)."""
        self._ended.pop(job_id, None)  # a job id used again after a delete: forget the old end
        self._expected[job_id] = None
        if len(self._expected) > self.max_tracked:
            self._expected.popitem(last=False)

    def forget(self, job_id: str) -> None:
        """The enqueue `expect` announced did not create the job (its id existed, or it failed)."""
        self._expected.pop(job_id, None)

    def expects(self, job_id: str) -> bool:
        """Its end will be (or was) heard here."""
        return job_id in self._ended or (self._live and job_id in self._expected)

    async def wait(self, job_id: str, *, within_s: float) -> dict[str, Any] | None:
        """The final record; None when not heard within `within_s`, or when listening stopped meanwhile."""
        self._last_wait = time.monotonic()
        if (body := self._ended.pop(job_id, None)) is not None:
            return record_from_message(body)
        if not self._live:
            return None  # stopped since the caller asked `expects`: nobody would set the future
        future = self._waiters.get(job_id)
        if future is None:
            future = self._waiters[job_id] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(within_s):
                return await asyncio.shield(future)
        except TimeoutError:
            return None
        finally:
            if future.done() or not self._live:
                self._waiters.pop(job_id, None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            async for message in pubsub.listen():
                if message["type"] == "subscribe":
                    # Only now may a trigger name the channel: its end cannot be published before.
                    self._live = True
                elif message["type"] == "message" and not self._on_end(message["data"]):
                    return
        except (RedisError, OSError) as e:
            logger.debug("client result listener stopped: %s", e)
        finally:
            self._live = False
            self._expected.clear()
            for future in self._waiters.values():
                if not future.done():
                    future.set_result(None)  # back to the per-job wait, which reads the record first
            self._waiters.clear()
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _on_end(self, data: bytes) -> bool:
        """Hand the record to its waiter or keep it for a later wait; False: stop listening (idle).

        A message is the job id, a newline and the record (the scripts that end a job): the id is
        read without decoding the record, which waits until somebody asks for that job. A record
        alone (what the previous version publishes) is read whole for its id.
        """
        raw_id, newline, body = data.partition(b"\n")
        if newline:
            job_id = raw_id.decode(errors="replace")
        else:  # the previous version's scripts publish the record alone (a rolling upgrade)
            body = data
            if (final := record_from_message(data)) is None:
                return True
            job_id = final["job_id"]
        self._expected.pop(job_id, None)
        future = self._waiters.pop(job_id, None)
        if future is not None and not future.done():
            future.set_result(record_from_message(body))
            return True
        self._ended[job_id] = body
        if len(self._ended) > self.max_tracked:
            self._ended.popitem(last=False)
        return bool(self._waiters) or time.monotonic() - self._last_wait < self.idle_s
