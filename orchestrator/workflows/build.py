"""What the other packages build from the workflows section: the named workflows, ready to start."""

from __future__ import annotations

from orchestrator.jobs.shared import Shared
from orchestrator.workflows.named import NamedWorkflows
from orchestrator.workflows.settings import WorkflowSettings
from orchestrator.workflows.store import WorkflowStore


def build(section: WorkflowSettings, shared: Shared) -> NamedWorkflows:
    """No component of its own: a workflow advances inside the job scripts (jobs/lua/workflow.lua)."""
    store = WorkflowStore(shared.redis, result_ttl_s=shared.store.ttl_ms / 1000)
    return NamedWorkflows(section, shared.submitter, store)
