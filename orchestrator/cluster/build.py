"""The cluster package's components: the lease, the heartbeat, plugin reloads, reconciliation, housekeeping."""

from __future__ import annotations

from orchestrator.cluster.heartbeat import Heartbeat, Housekeeping
from orchestrator.cluster.lease import LeaderLease
from orchestrator.cluster.plugin_reload import PluginReloader
from orchestrator.cluster.reconcile import Reconciler
from orchestrator.cluster.settings import ClusterSettings
from orchestrator.components import Component
from orchestrator.jobs.shared import Shared
from orchestrator.jobs.workers import WorkerPool
from orchestrator.plugins.builder import VenvBuilder


def build_lease(section: ClusterSettings, shared: Shared) -> LeaderLease:
    """The lease: built first, because the supervisor and the leader-only packages need it."""
    return LeaderLease(
        shared.redis,
        shared.identity.instance_id,
        ttl_s=section.leader_ttl_s,
        eligible=shared.identity.role in {"all", "leader"},
    )


def build(
    section: ClusterSettings,
    shared: Shared,
    *,
    lease: LeaderLease,
    workers: list[WorkerPool],
    venvs: list[VenvBuilder],
    watch_plugins: bool,
) -> list[Component]:
    """In start order; `workers` and `venvs` are what the jobs and plugins packages built (or nothing)."""
    identity = shared.identity
    pool = workers[0] if workers else None
    heartbeat = Heartbeat(
        shared.store,
        identity.instance_id,
        {
            "version": identity.version,
            "queues": identity.served_queues,
            "role": identity.role,
            "started_at": identity.started_at,
        },
        interval_s=section.heartbeat_interval_s,
        ttl_s=section.instance_ttl_s,
        on_evicted=pool.abandon_running if pool is not None else None,
    )

    async def reloaded() -> None:
        await shared.publisher.plugins()
        for builder in venvs:
            builder.request()  # a new plugin with dependencies gets its venv now, not at its first job

    components: list[Component] = [
        lease,
        heartbeat,
        PluginReloader(shared.redis, shared.registry, reloaded, watch=watch_plugins),
    ]
    if pool is not None:
        components.append(
            Reconciler(
                shared.store,
                identity.instance_id,
                pool.running_job_ids,
                every_s=section.instance_ttl_s,
                republish=shared.publisher.everything,
            )
        )
    components.append(Housekeeping(shared.store))  # leader-only
    return components
