"""The event-loop lag probe: everything in this process shares one loop, so a blocked loop (a sync
call, a CPU-bound parse) stalls every job, probe and lease renewal at once. This makes it visible."""

from __future__ import annotations

import asyncio

from typing_extensions import TypedDict

from orchestrator.components import BaseComponent, ComponentHealth
from orchestrator.jobs.observer import Histogram

LAG_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LoopStatus(TypedDict):
    lag_s: float
    """How late the last probe woke up."""
    stalled: bool
    """A stall past the threshold happened within the window (`/health` says `loop` fails)."""


class LoopMonitor(BaseComponent):
    """Sleeps `interval_s` again and again and measures how late it wakes up.

    Args:
        threshold_s: a wake-up this late turns `/health` 503 naming `loop`.
        window_s: for how long after such a stall `/health` keeps saying so (a probe cannot be
            answered during the stall itself).
        interval_s: how often it measures.
    """

    name = "loop"

    def __init__(self, *, threshold_s: float, window_s: float, interval_s: float = 0.1) -> None:
        self.threshold_s = threshold_s
        self.window_s = window_s
        self.interval_s = interval_s
        self.current_s = 0.0
        self.worst_s = 0.0  # the worst stall inside the current window
        self.histogram = Histogram(LAG_BUCKETS)
        self._stalled_until = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval_s)
            self.record(max(loop.time() - before - self.interval_s, 0.0))

    def record(self, lag_s: float) -> None:
        loop = asyncio.get_running_loop()
        self.current_s = lag_s
        self.histogram.observe(lag_s)
        if lag_s >= self.threshold_s:
            self.worst_s = max(lag_s, self.worst_s if loop.time() < self._stalled_until else 0.0)
            self._stalled_until = loop.time() + self.window_s

    def stalled(self) -> bool:
        return asyncio.get_running_loop().time() < self._stalled_until

    async def health(self) -> ComponentHealth:
        if self.stalled():
            return ComponentHealth.failing(
                f"the event loop stalled for {self.worst_s:.1f}s (threshold {self.threshold_s:g}s)",
                lag_s=round(self.current_s, 4),
            )
        return ComponentHealth(detail={"lag_s": round(self.current_s, 4)})

    async def status(self) -> LoopStatus:
        return {"lag_s": round(self.current_s, 4), "stalled": self.stalled()}
