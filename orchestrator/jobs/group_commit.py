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
script call whole, so when a shared call is refused, the jobs of the plugin and key it names are
sent again one per call (only those past the cap are refused) and the others again together. An
error of the call itself (Redis gone, timed out) is every waiting trigger's, as it would have been
had each sent its own; a record that does not encode fails its own trigger before it joins.
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
        cap_key: the (plugin, throttle key) an item counts under, as QueueFull names them.
        max_group: jobs per call at most.
    """

    def __init__(
        self,
        send: Callable[[Sequence[Item], BacklogMode], Awaitable[list[int]]],
        cap_key: Callable[[Item], tuple[str, str]],
        *,
        max_group: int = MAX_GROUP,
    ) -> None:
        self._send = send
        self._cap_key = cap_key
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
        """Answer every future of `group` (or cancel them, when this task is cancelled)."""
        try:
            # a shared call refused is sent again below: only the one-job calls count a refusal
            outcomes = await self._send([item for item, _ in group], "refuse" if len(group) == 1 else "try")
            answers = list(zip(group, outcomes, strict=True))
        except QueueFull as full:
            if len(group) == 1:
                _answer(group, full)
                return
            capped = [one for one in group if self._cap_key(one[0]) == (full.plugin, full.key)]
            rest = [one for one in group if self._cap_key(one[0]) != (full.plugin, full.key)]
            if not capped:  # (a cap none of them counts under: each alone, never the same call again)
                capped, rest = group, []
            await self._one_by_one(capped, then=rest)
            return
        except Exception as e:  # noqa: BLE001 - Redis gone or timed out: every caller's, as alone
            # (a record that does not encode fails its own caller before it joins: JobStore.enqueue)
            _answer(group, e)
            return
        except BaseException:
            _cancel(group)
            raise
        for (_, future), outcome in answers:
            if not future.done():
                future.set_result(outcome)

    async def _one_by_one(
        self, singles: list[tuple[Item, asyncio.Future[int]]], *, then: list[tuple[Item, asyncio.Future[int]]]
    ) -> None:
        """Each of `singles` in a call of its own, then `then` together."""
        for i, one in enumerate(singles):
            try:
                await self._send_group([one])
            except BaseException:
                _cancel(singles[i + 1 :] + then)
                raise
        if then:
            await self._send_group(then)


def _answer(group: list[tuple[Item, asyncio.Future[int]]], error: Exception) -> None:
    for _, future in group:
        if not future.done():
            future.set_exception(error)


def _cancel(group: list[tuple[Item, asyncio.Future[int]]]) -> None:
    for _, future in group:
        future.cancel()
