"""The monitor section of the settings: the status endpoint's address, token and limits, the loop-lag probe."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import NoDecode  # ORCH_HTTP_ALLOWED_HOSTS is comma-separated, like ES_HOSTS


class MonitorSettings(BaseModel):
    """ORCH_HTTP_HOST:ORCH_HTTP_PORT, ORCH_API_TOKEN, the HTTP limits, and when a stalled loop turns /health 503."""

    http_host: str = Field(default="127.0.0.1", validation_alias="ORCH_HTTP_HOST")
    http_port: Annotated[int, Field(ge=0, le=65535)] = Field(default=8080, validation_alias="ORCH_HTTP_PORT")
    api_token: SecretStr | None = Field(default=None, validation_alias="ORCH_API_TOKEN")
    # Host header names accepted besides localhost names and loopback addresses (a reverse proxy's
    # public name). On a loopback bind the check always runs (a DNS-rebinding page cannot read the
    # API); on another bind it runs only when this list is set.
    http_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="ORCH_HTTP_ALLOWED_HOSTS"
    )
    # A connection that sends no complete request (slow or no headers) or sits idle between
    # requests is closed after this long.
    http_idle_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=15.0, validation_alias="ORCH_HTTP_IDLE_TIMEOUT_S"
    )
    loop_lag_threshold_s: Annotated[float, Field(gt=0)] = Field(
        default=1.0, validation_alias="ORCH_LOOP_LAG_THRESHOLD_S"
    )
    loop_lag_window_s: Annotated[float, Field(gt=0)] = Field(default=30.0, validation_alias="ORCH_LOOP_LAG_WINDOW_S")

    @field_validator("http_allowed_hosts", mode="before")
    @classmethod
    def _split_allowed_hosts(cls, value: Any) -> Any:
        # not `_split_hosts`: Settings inherits every section, and IndexSettings has that name
        if isinstance(value, str):
            return [h.strip().lower() for h in value.split(",") if h.strip()]
        if isinstance(value, list):
            return [h.strip().lower() if isinstance(h, str) else h for h in value]
        return value
