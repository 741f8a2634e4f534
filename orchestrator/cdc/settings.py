"""The change-capture section of the settings: DATABASE_URL, the polling interval, and `[cdc]`.

A leaf (pydantic only, plus the rule models of cdc/rules.py); config.py composes it into `Settings`.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator

from orchestrator.cdc.rules import CdcSettings

MYSQL_SCHEMES = {"mysql", "mysql+pymysql", "mysql+asyncmy", "mysql+aiomysql", "mariadb", "mariadb+pymysql"}


class MySQLParams(BaseModel):
    """DATABASE_URL taken apart, in the shape asyncmy.connect() wants."""

    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = ""
    db: str | None = None
    unix_socket: str | None = None


class DatabaseSettings(BaseModel):
    """DATABASE_URL and DB_CHANGE_POLLING_INTERVAL (seed names) and the `[cdc]` rules."""

    database_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ORCH_DATABASE_URL", "DATABASE_URL")
    )
    db_change_polling_interval_s: Annotated[float, Field(gt=0)] = Field(
        default=5.0, validation_alias=AliasChoices("ORCH_DB_CHANGE_POLLING_INTERVAL", "DB_CHANGE_POLLING_INTERVAL")
    )
    # [[cdc.rules]], [cdc.monitored_tables] (cdc/rules.py)
    cdc: CdcSettings = Field(default_factory=CdcSettings, validation_alias=AliasChoices("ORCH_CDC", "cdc"))

    @field_validator("database_url", mode="after")
    @classmethod
    def _check_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in MYSQL_SCHEMES:
            msg = f"scheme {parts.scheme!r} is not MySQL; expected one of {', '.join(sorted(MYSQL_SCHEMES))}"
            raise ValueError(msg)
        try:
            parts.port  # noqa: B018 - parsing it is the check
        except ValueError:
            # never echo the URL: it holds the password (an unencoded '#', '/' or '?' in it lands here too)
            raise ValueError("the port is not a number (percent-encode special characters in the password)") from None
        return value

    def mysql_params(self) -> MySQLParams | None:
        if self.database_url is None:
            return None
        parts = urlsplit(self.database_url.get_secret_value())
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        return MySQLParams(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            db=parts.path.lstrip("/") or None,
            unix_socket=query.get("unix_socket"),
        )
