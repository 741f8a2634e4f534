"""The workflows section of the settings: named workflows (`[workflows.NAME]` in orchestrator.toml)
that the CLI, schedules and change-capture rules start by name (`workflow = "nightly"`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

from orchestrator.workflows.model import Step, WorkflowError, parse_step


class WorkflowSettings(BaseModel):
    """`[workflows.nightly]` with `chain = [{plugin = "a"}, {group = [...]}, {plugin = "c"}]` (or `group`, or `plugin`)."""

    workflows: dict[str, dict[str, Any]] = Field(default_factory=dict, validation_alias="ORCH_WORKFLOWS")

    @field_validator("workflows")
    @classmethod
    def _steps_parse(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, steps in value.items():
            try:
                parse_step(steps, f"workflows.{name}")
            except WorkflowError as e:
                raise ValueError(str(e)) from None
        return value

    def named_workflow(self, name: str) -> Step:
        """The configured workflow `name`; WorkflowError naming the configured ones otherwise."""
        if name not in self.workflows:
            known = ", ".join(sorted(self.workflows)) or "none"
            msg = f"no workflow named {name!r} in [workflows] (configured: {known})"
            raise WorkflowError(msg)
        return parse_step(self.workflows[name], f"workflows.{name}")
