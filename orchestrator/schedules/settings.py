"""The schedules section of the settings: `[[schedules]]` (or ORCH_SCHEDULES as a JSON list)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from orchestrator.schedules.model import ScheduleSpec


class ScheduleSettings(BaseModel):
    """Config schedules: re-read by the leader at every start (README "Schedules")."""

    schedules: list[ScheduleSpec] = Field(default_factory=list, validation_alias="ORCH_SCHEDULES")

    @field_validator("schedules", mode="after")
    @classmethod
    def _config_schedules(cls, value: list[ScheduleSpec]) -> list[ScheduleSpec]:
        ids = [s.id for s in value]
        if dupes := sorted({i for i in ids if ids.count(i) > 1}):
            msg = f"schedule id(s) given twice: {', '.join(dupes)}"
            raise ValueError(msg)
        return [s.model_copy(update={"origin": "config"}) for s in value]
