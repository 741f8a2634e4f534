"""The schedules package's component: the scheduler (leader-only), with the config's schedules."""

from __future__ import annotations

from orchestrator.cluster.lease import LeaderLease
from orchestrator.components import Component
from orchestrator.jobs.shared import Shared
from orchestrator.jobs.submit import Submitter
from orchestrator.schedules.scheduler import Scheduler
from orchestrator.schedules.settings import ScheduleSettings
from orchestrator.schedules.store import ScheduleStore
from orchestrator.workflows.named import NamedWorkflows


def build(
    section: ScheduleSettings, shared: Shared, *, lease: LeaderLease, workflows: NamedWorkflows | None = None
) -> list[Component]:
    async def submitter() -> Submitter:
        return shared.submitter

    return [
        Scheduler(
            ScheduleStore(shared.redis),
            submitter,
            lease,
            config=section.schedules,
            tracing=shared.tracing,
            workflows=workflows,
        )
    ]
