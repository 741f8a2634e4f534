"""The monitor section of the settings: the status endpoint's address and token, the loop-lag probe."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, SecretStr


class MonitorSettings(BaseModel):
    """ORCH_HTTP_HOST:ORCH_HTTP_PORT, ORCH_API_TOKEN, and when a stalled loop turns /health 503."""

    http_host: str = Field(default="127.0.0.1", validation_alias="ORCH_HTTP_HOST")
    http_port: Annotated[int, Field(ge=0, le=65535)] = Field(default=8080, validation_alias="ORCH_HTTP_PORT")
    api_token: SecretStr | None = Field(default=None, validation_alias="ORCH_API_TOKEN")
    loop_lag_threshold_s: Annotated[float, Field(gt=0)] = Field(
        default=1.0, validation_alias="ORCH_LOOP_LAG_THRESHOLD_S"
    )
    loop_lag_window_s: Annotated[float, Field(gt=0)] = Field(default=30.0, validation_alias="ORCH_LOOP_LAG_WINDOW_S")
