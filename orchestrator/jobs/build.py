"""The jobs package's components for `orchestrator run`: the workers of the queues this process serves."""

from __future__ import annotations

from orchestrator.jobs.runner import JobRunner
from orchestrator.jobs.settings import JobSettings
from orchestrator.jobs.shared import Shared
from orchestrator.jobs.workers import WorkerPool


def build(section: JobSettings, shared: Shared) -> list[WorkerPool]:
    """One WorkerPool (an arq-layout worker per served queue), or none for `--role leader`."""
    queues = shared.identity.served_queues
    if not queues:
        return []
    runner = JobRunner(
        shared.store,
        shared.registry,
        shared.launcher,
        instance_id=shared.identity.instance_id,
        log_tail_bytes=section.log_tail_bytes,
        observer=shared.observer,
        tracing=shared.tracing,
    )
    return [
        WorkerPool(
            shared.redis,
            queues,
            runner,
            shared.store,
            instance_id=shared.identity.instance_id,
            poll_delay_s=section.poll_delay_s,
            shutdown_grace_s=section.shutdown_grace_s,
        )
    ]
