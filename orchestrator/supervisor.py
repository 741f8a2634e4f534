"""Runs the app's components in one TaskGroup: starts, restarts, gates on the lease, drains, reports.

- A component whose `run()` raises is logged, shown as failing in `/health` (naming it, with the
  error) and started again after a backoff; the other components and the probes keep serving.
- A leader-only component runs only while the lease is held: started when it is gained,
  cancelled when it is lost. While it runs, its `status()` is published to Redis under the lease's
  fence, so `/status` on every instance shows it.
- `/status` shows each component's `status()` under its `status_key`, and every component's state
  under `components`; a status() that raises leaves its key out and says why there.
- Start-up calls every component's `start()` in order (a failure stops the start-up); shutdown
  drains in reverse order of start (the HTTP server, started first, answers probes until the
  end), then cancels every `run()` and calls `close()` in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Literal, NotRequired

from redis.exceptions import RedisError
from typing_extensions import TypedDict

from orchestrator.cluster.lease import LeaderLease
from orchestrator.cluster.status import Published
from orchestrator.components import Component, ComponentHealth, StatusBlock
from orchestrator.errors import FencedError

logger = logging.getLogger(__name__)

_RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
_PUBLISH_EVERY_S = 2.0
_REPUBLISH_S = 30.0


SlotState = Literal["starting", "running", "failed", "standby", "stopped"]


class SlotStatus(TypedDict):
    """`/status` `components.<name>`: how the supervisor sees one component."""

    state: SlotState
    """`standby`: a leader-only component on an instance that does not lead now."""
    restarts: int
    error: str | None
    """Why its run() failed last."""
    status_error: NotRequired[str]
    """Why its status() raised, when it did (its own key is left out of `/status` then)."""


@dataclass
class Slot:
    """One component and what the supervisor knows of it."""

    component: Component
    state: SlotState = "starting"
    error: str | None = None
    restarts: int = 0
    status_error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def to_json(self) -> SlotStatus:
        out: SlotStatus = {"state": self.state, "restarts": self.restarts, "error": self.error}
        if self.status_error is not None:
            out["status_error"] = self.status_error
        return out


class Supervisor:
    """Owns the components' tasks.

    Args:
        components: in start order.
        lease: decides when leader-only components run, and fences their published status.
    """

    def __init__(self, components: list[Component], lease: LeaderLease) -> None:
        for what, values in (
            ("names", [c.name for c in components]),
            ("status keys", [c.status_key for c in components]),
        ):
            if len(set(values)) != len(values):
                msg = f"component {what} must be unique: {values}"
                raise ValueError(msg)
        self.slots = [Slot(c) for c in components]
        self.lease = lease
        self._stopping = False
        self._started: list[Component] = []  # whose start() returned, in start order

    def get(self, name: str) -> Component | None:
        return next((s.component for s in self.slots if s.component.name == name), None)

    async def start(self) -> None:
        """Each component's `start()`, in start order (the HTTP port is bound first, then the heartbeat
        registers). A failure closes what had started and propagates: the start-up fails as a whole."""
        for slot in self.slots:
            try:
                await slot.component.start()
            except BaseException:
                await self._close(self._started)
                raise
            self._started.append(slot.component)

    async def run(self, stop: asyncio.Event, *, drain_timeout_s: float) -> None:
        """Run every component (after `start()`) until `stop` is set, then drain, cancel and close them."""
        try:
            async with asyncio.TaskGroup() as tg:
                for slot in self.slots:
                    runner = self._lead(slot) if slot.component.leader_only else self._keep_running(slot)
                    slot.task = tg.create_task(runner, name=slot.component.name)
                await stop.wait()
                await self._drain(drain_timeout_s)
                for slot in self.slots:
                    assert slot.task is not None  # noqa: S101  every slot has its task once started
                    slot.task.cancel()
        finally:
            await self._close(self._started)

    async def _close(self, components: list[Component]) -> None:
        for component in reversed(components):
            try:
                await component.close()
            except Exception:
                logger.exception("component %s: close failed", component.name)
        components.clear()

    async def _keep_running(self, slot: Slot) -> None:
        """Run, and run again after a failure (with backoff): one broken part never stops the process."""
        name = slot.component.name
        while True:
            slot.state = "running"
            try:
                await slot.component.run()
                if self._stopping:  # drained: a component may end its work once drained
                    return
                msg = "run() returned"
                raise RuntimeError(msg)
            except Exception as e:
                slot.state, slot.error = "failed", f"{type(e).__name__}: {e}"
                delay = _RESTART_BACKOFF_S[min(slot.restarts, len(_RESTART_BACKOFF_S) - 1)]
                slot.restarts += 1
                logger.exception("component %s failed; restarting in %.0fs", name, delay)
                await asyncio.sleep(delay)

    async def _lead(self, slot: Slot) -> None:
        """A leader-only component: run while the lease is held, publish its status meanwhile."""
        while True:
            slot.state = "standby"
            await self.lease.wait_gained()
            async with asyncio.TaskGroup() as tg:
                work = tg.create_task(self._keep_running(slot))
                publish = tg.create_task(self._publish(slot))
                await self.lease.wait_lost()
                work.cancel()
                publish.cancel()

    async def _publish(self, slot: Slot) -> None:
        """Publish when the status changed (checked every 2 s), and at least every 30 s."""
        loop = asyncio.get_running_loop()
        last, last_at = "", 0.0
        while True:
            fence = self.lease.fence()
            status = await self._status_of(slot) if fence is not None else None
            if fence is not None and status is not None:
                text = json.dumps(status, sort_keys=True, default=str)
                if text != last or loop.time() - last_at >= _REPUBLISH_S:
                    try:
                        await self.lease.publish(slot.component.name, {slot.component.status_key: status}, fence)
                        last, last_at = text, loop.time()
                    except (RedisError, OSError, FencedError) as e:
                        logger.debug("status of %s not published: %s", slot.component.name, e)
            await asyncio.sleep(_PUBLISH_EVERY_S)

    async def _drain(self, timeout_s: float) -> None:
        self._stopping = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                for slot in reversed(self.slots):
                    if slot.state in {"running", "failed"}:
                        try:
                            await slot.component.drain()
                        except Exception:
                            logger.exception("component %s: drain failed", slot.component.name)
                    slot.state = "stopped"

    async def _status_of(self, slot: Slot) -> StatusBlock | None:
        try:
            status = await slot.component.status()
        except Exception as e:  # a component's bug must not break /status or the leader's publishing
            logger.exception("component %s: status() failed", slot.component.name)
            slot.status_error = f"status() failed: {type(e).__name__}: {e}"
            return None
        slot.status_error = None
        return status

    # -- what the monitor reads --
    async def health(self) -> dict[str, ComponentHealth]:
        out: dict[str, ComponentHealth] = {}
        for slot in self.slots:
            if slot.state == "failed":
                out[slot.component.name] = ComponentHealth.failing(
                    f"{slot.component.name} failed: {slot.error}", restarts=slot.restarts
                )
            elif slot.state == "standby":
                out[slot.component.name] = ComponentHealth(detail={"state": "standby (runs on the leader)"})
            else:
                try:
                    out[slot.component.name] = await slot.component.health()
                except Exception as e:  # a component's bug must not hide the others' health
                    logger.exception("component %s: health() failed", slot.component.name)
                    out[slot.component.name] = ComponentHealth.failing(f"health() failed: {type(e).__name__}: {e}")
        return out

    async def status(self) -> dict[str, object]:
        """Each component's status under its status key (leader-only ones as the leader published
        them), and `components`: the monitor reads it as its ProcessStatus (monitor/status.py)."""
        body: dict[str, object] = {}
        published: dict[str, Published] | None = None
        for slot in self.slots:
            status: StatusBlock | None
            if slot.component.leader_only and slot.state == "standby":
                if published is None:
                    published = await self.lease.published()
                entry = published.get(slot.component.name)
                status = entry["status"].get(slot.component.status_key) if entry is not None else None
            else:
                status = await self._status_of(slot)
            if status is not None:
                body[slot.component.status_key] = status
        body["components"] = {s.component.name: s.to_json() for s in self.slots}
        return body
