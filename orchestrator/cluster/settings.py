"""The cluster section of the settings: this instance's identity, its heartbeat and the leader lease."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field


class ClusterSettings(BaseModel):
    """How instances see each other (README "Running")."""

    instance_id: str | None = Field(default=None, validation_alias="ORCH_INSTANCE_ID")  # unset: a new id per process
    heartbeat_interval_s: Annotated[float, Field(gt=0)] = Field(
        default=2.0, validation_alias="ORCH_HEARTBEAT_INTERVAL_S"
    )
    instance_ttl_s: Annotated[float, Field(gt=0)] = Field(default=10.0, validation_alias="ORCH_INSTANCE_TTL_S")
    # The leader lease (scheduler, change capture, housekeeping): a dead leader is replaced within
    # about leader_ttl_s * 4/3.
    leader_ttl_s: Annotated[float, Field(ge=1)] = Field(default=10.0, validation_alias="ORCH_LEADER_TTL_S")
