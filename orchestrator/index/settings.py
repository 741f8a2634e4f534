"""The search-index section of the settings: ES_* (seed names) and the sink's batching and retries."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import NoDecode  # ES_HOSTS is comma-separated, not JSON


class IndexSettings(BaseModel):
    """Elasticsearch: the sink and the probe run when ES_HOSTS is set (README "Search index")."""

    es_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("ORCH_ES_HOSTS", "ES_HOSTS")
    )
    es_username: str | None = Field(default=None, validation_alias=AliasChoices("ORCH_ES_USERNAME", "ES_USERNAME"))
    es_password: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ORCH_ES_PASSWORD", "ES_PASSWORD")
    )
    es_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=30.0, validation_alias=AliasChoices("ORCH_ES_TIMEOUT", "ES_TIMEOUT")
    )
    es_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ORCH_ES_API_KEY", "ES_API_KEY")
    )  # instead of username/password
    es_ca_file: Path | None = Field(
        default=None, validation_alias=AliasChoices("ORCH_ES_CA_FILE", "ES_CA_FILE")
    )  # CA bundle for https:// hosts
    es_verify_certs: bool = Field(
        default=True, validation_alias=AliasChoices("ORCH_ES_VERIFY_CERTS", "ES_VERIFY_CERTS")
    )
    es_bulk_max_actions: Annotated[int, Field(gt=0)] = Field(default=500, validation_alias="ORCH_ES_BULK_MAX_ACTIONS")
    es_bulk_max_wait_s: Annotated[float, Field(ge=0)] = Field(default=0.2, validation_alias="ORCH_ES_BULK_MAX_WAIT_S")
    es_retry_max_backoff_s: Annotated[float, Field(gt=0)] = Field(
        default=10.0, validation_alias="ORCH_ES_RETRY_MAX_BACKOFF_S"
    )

    @field_validator("es_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        # ES_HOSTS is written "http://a:9200,http://b:9200" in the seed .env, not as JSON.
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value
