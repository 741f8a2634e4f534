"""The monitor section of the settings: the status endpoint's address and token, the loop-lag probe."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, SecretStr

from orchestrator.sections import env_alias


class MonitorSettings(BaseModel):
    """ORCH_HTTP_HOST:ORCH_HTTP_PORT, ORCH_API_TOKEN, and when a stalled loop turns /health 503."""

    http_host: str = env_alias("ORCH_HTTP_HOST", default="127.0.0.1")
    http_port: Annotated[int, Field(ge=0, le=65535)] = env_alias("ORCH_HTTP_PORT", default=8080)
    api_token: SecretStr | None = env_alias("ORCH_API_TOKEN")
    loop_lag_threshold_s: Annotated[float, Field(gt=0)] = env_alias("ORCH_LOOP_LAG_THRESHOLD_S", default=1.0)
    loop_lag_window_s: Annotated[float, Field(gt=0)] = env_alias("ORCH_LOOP_LAG_WINDOW_S", default=30.0)
