"""The workflows named in config (`[workflows.NAME]`), started by name: by schedules and change
capture (`workflow = "nightly"`) and by `orchestrator workflow run NAME`."""

from __future__ import annotations

from typing import Any

from orchestrator.jobs.submit import Submitter
from orchestrator.workflows.settings import WorkflowSettings
from orchestrator.workflows.store import WorkflowStore
from orchestrator.workflows.submit import submit_workflow


class NamedWorkflows:
    """Args:
    section: the configured workflows.
    submitter: validates each step as any job is validated.
    store: where the workflow is created.
    """

    def __init__(self, section: WorkflowSettings, submitter: Submitter, store: WorkflowStore) -> None:
        self.section = section
        self.submitter = submitter
        self.store = store

    async def start(
        self, name: str, *, source: str, workflow_id: str | None = None, context: dict[str, Any] | None = None
    ) -> tuple[str, bool]:
        """(the workflow id, created). A `workflow_id` made from the cause (a change) starts it once:
        False when it existed. Raises WorkflowError (an unknown name, an invalid step)."""
        root = self.section.named_workflow(name)
        return await submit_workflow(
            self.submitter, self.store, root, name=name, source=source, context=context, workflow_id=workflow_id
        )
