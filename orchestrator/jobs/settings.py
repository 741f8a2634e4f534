"""The jobs section of the settings: queues, time limits, retries, how long records are kept."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class QueueSettings(BaseModel):
    """One named queue."""

    model_config = ConfigDict(extra="forbid")

    concurrency: Annotated[int, Field(gt=0, le=1000)] = 4


def _default_queues() -> dict[str, QueueSettings]:
    return {
        "high": QueueSettings(concurrency=4),
        "default": QueueSettings(concurrency=4),
        "low": QueueSettings(concurrency=2),
    }


class JobSettings(BaseModel):
    """Queues and the defaults every job gets unless its manifest or trigger says otherwise."""

    queues: dict[str, QueueSettings] = Field(default_factory=_default_queues, validation_alias="ORCH_QUEUES")
    default_queue: str = Field(default="default", validation_alias="ORCH_DEFAULT_QUEUE")
    # the seed's hard time limit: 30 min
    job_timeout_s: Annotated[float, Field(gt=0)] = Field(default=1800.0, validation_alias="ORCH_JOB_TIMEOUT_S")
    max_retries: Annotated[int, Field(ge=0)] = Field(default=3, validation_alias="ORCH_MAX_RETRIES")
    # the seed's countdown=60
    retry_backoff_s: Annotated[float, Field(ge=0)] = Field(default=60.0, validation_alias="ORCH_RETRY_BACKOFF_S")
    result_ttl_s: Annotated[float, Field(gt=0)] = Field(default=7 * 24 * 3600.0, validation_alias="ORCH_RESULT_TTL_S")
    log_tail_bytes: Annotated[int, Field(ge=1024)] = Field(default=64 * 1024, validation_alias="ORCH_LOG_TAIL_BYTES")
    poll_delay_s: Annotated[float, Field(gt=0)] = Field(default=1.0, validation_alias="ORCH_POLL_DELAY_S")
    # SIGTERM: running jobs get this long to finish before their process groups are stopped
    shutdown_grace_s: Annotated[float, Field(ge=0)] = Field(default=30.0, validation_alias="ORCH_SHUTDOWN_GRACE_S")
    log_jobs: bool = Field(default=True, validation_alias="ORCH_LOG_JOBS")  # one INFO line per job start and end
    # When a trigger is acknowledged: only once this many Redis replicas hold the job (WAIT), so a
    # failover cannot lose it; 0: the primary alone (replication is asynchronous). README "What survives".
    redis_wait_replicas: Annotated[int, Field(ge=0)] = Field(default=0, validation_alias="ORCH_REDIS_WAIT_REPLICAS")
    redis_wait_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=1.0, validation_alias="ORCH_REDIS_WAIT_TIMEOUT_S"
    )

    def queue_concurrency(self) -> dict[str, int]:
        return {q: s.concurrency for q, s in self.queues.items()}

    @field_validator("default_queue", mode="after")
    @classmethod
    def _nonempty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _default_queue_is_configured(self) -> Self:
        if self.default_queue not in self.queues and "default_queue" not in self.model_fields_set:
            # Users list their named queues (warehouse, statistics, ...) as they had them in Celery;
            # jobs that name no queue still need one.
            self.queues[self.default_queue] = QueueSettings()
        if self.default_queue not in self.queues:
            msg = (
                f"default_queue {self.default_queue!r} is not a configured queue ({', '.join(self.queues)}); "
                f"add [queues.{self.default_queue}] or set default_queue"
            )
            raise ValueError(msg)
        return self
