"""The tracing section of the settings: the standard OpenTelemetry variables, nothing of our own.

Tracing is on when an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
`OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`), `OTEL_TRACES_EXPORTER` is `otlp` (its default) and
`OTEL_SDK_DISABLED` is not true. The sampler (`OTEL_TRACES_SAMPLER`, `..._ARG`), the batch
processor (`OTEL_BSP_*`), headers and resource attributes are read by the SDK itself.
"""

from __future__ import annotations

import os
from typing import Self

from pydantic import BaseModel, ConfigDict, Field


class TracingSettings(BaseModel):
    """Where traces go (OTLP over HTTP/protobuf) and the service name they carry."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    otel_exporter_otlp_endpoint: str | None = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    otel_traces_exporter: str = Field(default="otlp", validation_alias="OTEL_TRACES_EXPORTER")
    otel_sdk_disabled: bool = Field(default=False, validation_alias="OTEL_SDK_DISABLED")
    otel_service_name: str | None = Field(default=None, validation_alias="OTEL_SERVICE_NAME")

    @classmethod
    def from_environ(cls) -> Self:
        """For a Client used as a library, where no Settings object is loaded."""
        return cls.model_validate(dict(os.environ))

    def traces_endpoint(self) -> str | None:
        """The URL spans are posted to, or None when tracing is off."""
        if self.otel_sdk_disabled or self.otel_traces_exporter.strip().lower() != "otlp":
            return None
        if self.otel_exporter_otlp_traces_endpoint:
            return self.otel_exporter_otlp_traces_endpoint
        if self.otel_exporter_otlp_endpoint:
            return self.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
        return None
