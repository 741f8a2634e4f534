"""Group commit for single enqueues: triggers that overlap share one enqueue script call.

A web application, a load generator or the HTTP API calls `trigger` from many tasks at once. On
its own, each call pays a whole script call: redis-py's pool and command packing, a socket write,
Redis's script set-up and its reply. Here a trigger joins a queue; while an enqueue call is in
flight, the triggers that arrive meanwhile wait, and the next call takes all of them as one
`enqueue_many` (one outcome each). A lone trigger is sent at the next loop turn, alone, so an
idle producer waits for nobody, and keeps the push to an idle worker (enqueue.lua pushes only a
call of one job). Databases call this group commit.

Nothing is weakened: every job is its own entry in the script (its id checked, its plugin's
enabled flag read, its record written), in arrival order. A throttle's `QueueFull` refuses a
script call whole, so a shared call that is refused is sent again one job per call: each trigger
gets its own answer, and only the one past the cap is refused. An error of the call itself (Redis
went away) is every waiting trigger's, as it would have been had each sent its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from orchestrator.errors import QueueFull
from orchestrator.jobs.throttle import BacklogMode

# Jobs one shared call carries at most: the script blocks Redis while it runs (about 30 µs a job).
MAX_GROUP = 100

# one job to enqueue (the store's EnqueueItem: this module needs nothing of it)
Item = TypeVar("Item")


class EnqueueGroup(Generic[Item]):
    """One queue of waiting triggers, drained by one task at a time.

    Args:
        send: enqueues items in one script call (push for a call of one), returns one outcome each;
            raises QueueFull when a throttle refuses the call ("try": the refusal is not counted).
        max_group: jobs per call at most.
    """

    def __init__(
        self, send: Callable[[Sequence[Item], BacklogMode], Awaitable[list[int]]], *, max_group: int = MAX_GROUP
    ) -> None:
        self._send = send
        self.max_group = max_group
        self._waiting: list[tuple[Item, asyncio.Future[int]]] = []
        # The drain is the shared part of the waiting triggers' calls, not a service of its own: it
        # exists only while one waits and ends when the queue is empty. It is a task so that a
        # caller that is cancelled (an HTTP client gone) does not cancel its neighbours' enqueue:
        # each caller waits on its own future through a shield.
        self._drain: asyncio.Task[None] | None = None

    async def enqueue(self, item: Item) -> int:
        """1 (enqueued), 0 (the id exists) or -1 (plugin disabled); raises what its call raised."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._drain is None:
            self._drain = asyncio.create_task(self._drain_all(), name="jobs:enqueue-group")
        return await asyncio.shield(future)

    async def wait_idle(self) -> None:
        """Until every enqueue queued so far has its answer (Client.close)."""
        while (drain := self._drain) is not None:
            await asyncio.shield(drain)

    async def _drain_all(self) -> None:
        try:
            while self._waiting:
                group = self._waiting[: self.max_group]
                del self._waiting[: self.max_group]
                await self._send_group(group)
        except BaseException:
            # cancelled with the loop: nobody is left to answer those still queued
            for _, future in self._waiting:
                future.cancel()
            self._waiting.clear()
            raise
        finally:
            self._drain = None

    async def _send_group(self, group: list[tuple[Item, asyncio.Future[int]]]) -> None:
        try:
            # a shared call refused is sent again job by job: only those refusals are counted
            outcomes = await self._send([item for item, _ in group], "refuse" if len(group) == 1 else "try")
        except QueueFull as full:
            if len(group) == 1:
                _answer(group, full)
                return
            # refused whole: each on its own, so that only the jobs past the cap are refused
            for one in group:
                await self._send_group([one])
            return
        except Exception as e:  # noqa: BLE001 - the callers' error, whatever it is
            _answer(group, e)
            return
        except BaseException:
            for _, future in group:
                future.cancel()
            raise
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)


def _answer(group: list[tuple[Item, asyncio.Future[int]]], error: Exception) -> None:
    for _, future in group:
        if not future.done():
            future.set_exception(error)
