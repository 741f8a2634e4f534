"""The Redis section of the settings: the URL and how every connection is made (a leaf: pydantic only).

config.py composes this section into `Settings`; the redis package receives it and never imports config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator

REDIS_SCHEMES = {"redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel"}


class RedisSettings(BaseModel):
    """REDIS_URL (unset: the embedded Redis) and the connection options (README "Production Redis")."""

    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("ORCH_REDIS_URL", "REDIS_URL"))
    # TLS (rediss://): the CA that signs the server's certificate (default: the system's CAs), a
    # client certificate and key when the server asks for one, and whether the certificate must
    # name the URL's host.
    redis_ca_file: Path | None = Field(default=None, validation_alias="ORCH_REDIS_CA_FILE")
    redis_cert_file: Path | None = Field(default=None, validation_alias="ORCH_REDIS_CERT_FILE")
    redis_key_file: Path | None = Field(default=None, validation_alias="ORCH_REDIS_KEY_FILE")
    redis_check_hostname: bool = Field(default=True, validation_alias="ORCH_REDIS_CHECK_HOSTNAME")
    # redis+sentinel://: the sentinels' own password, when they have one (the URL's is the data nodes').
    sentinel_password: SecretStr | None = Field(default=None, validation_alias="ORCH_SENTINEL_PASSWORD")
    # The pool's bound per process (workers, pub/sub, heartbeat, lease, HTTP share it; README "Connection budget").
    redis_max_connections: Annotated[int, Field(ge=4, le=10000)] = Field(
        default=32, validation_alias="ORCH_REDIS_MAX_CONNECTIONS"
    )
    # How long `run` waits for Redis at start-up before it gives up (exit 1); unset: forever.
    redis_connect_timeout_s: Annotated[float, Field(gt=0)] | None = Field(
        default=None, validation_alias="ORCH_REDIS_CONNECT_TIMEOUT_S"
    )

    @field_validator("redis_url", mode="after")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        scheme = parts.scheme
        if scheme not in REDIS_SCHEMES:
            msg = f"scheme {scheme!r} is not Redis; expected redis://, rediss://, unix:// or redis+sentinel://"
            raise ValueError(msg)
        # A raw '#', '?' or '/' in the password ends the URL's host part early: say so here, in one
        # line that shows no part of the URL, rather than let redis-py's parser quote a piece of it.
        try:
            if parts.fragment:
                raise ValueError
            if not scheme.endswith("sentinel"):  # a sentinel URL lists several host:port pairs
                _ = parts.port  # ValueError when the port is not a number
        except ValueError:
            msg = (
                "cannot be read as host:port: a '#', '?', '/' or '@' in the user name or password must be "
                "percent-encoded (e.g. '#' as %23)"
            )
            raise ValueError(msg) from None
        return value
