"""The one shape every long-running part of `orchestrator run` has, and the health model they report.

A component has a name, `start()` (fallible set-up, in start order, before anything runs), `run()`
(until cancelled), `drain()` (stop taking new work; the app bounds it by `shutdown_grace_s` and
cancels `run()` afterwards), `close()` (after `run()`), `health()` and `status()`. The app builds
the list for its role and runs it generically; `/health` and `/status` are assembled from it.

A component with `leader_only = True` runs only while this instance holds the leader lease: the
app starts its `run()` when the lease is gained and cancels it when the lease is lost, and
publishes its `status()` to Redis so that every instance's `/status` shows it.

`status()` returns a TypedDict of the component's own package (a list of them for the
scheduler); the supervisor nests it under the component's `status_key` in `/status`, and the
monitor composes those types into the one type of the `/status` body (monitor/status.py).

This module sits below `jobs`, `cdc` and `monitor`, so each of them can implement the shape
without importing the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

HealthStatus = Literal["ok", "failing"]
# What a component's status() returns: a TypedDict of its package, or a list of them; JSON-ready.
StatusBlock = Mapping[str, object] | Sequence[Mapping[str, object]]


@dataclass(frozen=True)
class ComponentHealth:
    """What one component says about itself in `/health`.

    Args:
        status: `ok` or `failing` (a failing component turns `/health` 503).
        error: why it fails, one line.
        detail: extra fields shown next to the status (e.g. `{"role": "standby"}`).
    """

    status: HealthStatus = "ok"
    error: str | None = None
    detail: dict[str, Any] | None = None

    @classmethod
    def failing(cls, error: str, **detail: Any) -> ComponentHealth:
        return cls("failing", error=error, detail=detail or None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.error:
            out["error"] = self.error
        if self.detail:
            out.update(self.detail)
        return out


@runtime_checkable
class Component(Protocol):
    """A long-running part of `orchestrator run`.

    `run()` must not return while the component is meant to work (the app treats an early return
    or an exception as a failure of that component, reported in `/health`, while the rest keeps
    serving). Every task it starts belongs to a TaskGroup inside `run()`.
    """

    name: str
    leader_only: bool

    @property
    def status_key(self) -> str:
        """The key of `/status` its status() is shown under (its name, unless users know another)."""

    async def start(self) -> None:
        """Fallible set-up done in start order before any component runs (the HTTP server binds its
        port, the heartbeat registers): a failure here stops the start-up, not a running process."""
        ...

    async def run(self) -> None:
        """Work until cancelled."""
        ...

    async def drain(self) -> None:
        """Stop taking new work and let current work finish; returns when idle."""
        ...

    async def close(self) -> None:
        """Release what `start()` took, once `run()` has ended (or never ran)."""
        ...

    async def health(self) -> ComponentHealth: ...

    async def status(self) -> StatusBlock | None:
        """JSON-ready facts for `/status` under `status_key` (published to Redis for leader-only
        components); None: nothing to show."""
        ...


class BaseComponent:
    """Defaults for the optional parts of the shape: nothing to drain, healthy, no status."""

    name: str = "component"
    leader_only: bool = False

    @property
    def status_key(self) -> str:
        return self.name

    async def start(self) -> None:
        return None

    async def drain(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def health(self) -> ComponentHealth:
        return ComponentHealth()

    async def status(self) -> StatusBlock | None:
        return None
