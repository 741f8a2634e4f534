"""What every package builds its components from: one of each per process, made once by app.py.

`Shared` is the small typed object of DESIGN.md's `build(section, shared)`: the Redis pool, the job
store, the submitter every job source goes through, the plugin catalog as this process loaded it, the
launcher, the job observer, the instance's identity and the tracing facade. It lives in `jobs` because jobs is the lowest
package that knows all of them (plugins sits below and never sees it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from arq.connections import ArqRedis

from orchestrator.jobs.catalog import CatalogPublisher, RegistryCatalog
from orchestrator.jobs.observer import JobObserver
from orchestrator.jobs.settings import JobSettings
from orchestrator.jobs.store import JobStore
from orchestrator.jobs.submit import JobDefaults, Submitter
from orchestrator.plugins.launcher import Launcher
from orchestrator.plugins.registry import PluginRegistry
from orchestrator.plugins.throttle import Throttle
from orchestrator.tracing.facade import Tracing


@dataclass(frozen=True)
class Identity:
    """This process as other instances and /status see it.

    Args:
        instance_id: unique per process (or the fixed ORCH_INSTANCE_ID).
        role: `all`, `worker` or `leader`.
        version: the package version.
        served_queues: queue -> concurrency of the workers this process runs (empty for `--role leader`).
        started_at: epoch seconds.
    """

    instance_id: str
    role: str
    version: str
    served_queues: dict[str, int]
    started_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Shared:
    """The objects components are built from (see the module docstring)."""

    redis: ArqRedis
    identity: Identity
    store: JobStore
    submitter: Submitter
    registry: PluginRegistry
    launcher: Launcher
    observer: JobObserver
    publisher: CatalogPublisher
    tracing: Tracing = field(default_factory=Tracing)  # spans, or the no-op (tracing/build.py)


def make_shared(
    section: JobSettings,
    redis: ArqRedis,
    identity: Identity,
    registry: PluginRegistry,
    launcher: Launcher,
    throttles: Mapping[str, Throttle] | None = None,
    reread_throttles: Callable[[], Mapping[str, Throttle]] | None = None,
    tracing: Tracing | None = None,
) -> Shared:
    store = JobStore(redis, result_ttl_s=section.result_ttl_s)
    submitter = Submitter(
        store, RegistryCatalog(registry, store), set(section.queues), JobDefaults.from_section(section)
    )
    publisher = CatalogPublisher(store, registry, section.queue_concurrency(), throttles, reread_throttles)
    observer = JobObserver(log_jobs=section.log_jobs)
    return Shared(redis, identity, store, submitter, registry, launcher, observer, publisher, tracing or Tracing())
