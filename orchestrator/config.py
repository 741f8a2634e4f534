"""One typed Settings object: defaults < orchestrator.toml (or --config) < .env < environment.

The seed names (REDIS_URL, DATABASE_URL, ES_*, PLUGINS_DIR, PLUGIN_VENV_DIR,
DB_CHANGE_POLLING_INTERVAL) keep working unchanged; everything else is ORCH_* or a TOML key.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from orchestrator.cdc.rules import CdcSettings  # change capture: the [cdc] section (a leaf module)
from orchestrator.errors import ConfigError
from orchestrator.logs import mask_url
from orchestrator.schedules.model import ScheduleSpec  # schedules: a leaf module (pydantic + croniter)

DEFAULT_CONFIG_FILE = Path("orchestrator.toml")
MYSQL_SCHEMES = {"mysql", "mysql+pymysql", "mysql+asyncmy", "mysql+aiomysql", "mariadb", "mariadb+pymysql"}


def _alias(*names: str, default: Any = None) -> Any:
    """The env names of a field. The TOML key is the field name (populate_by_name), never an env name."""
    return Field(default=default, validation_alias=AliasChoices(*names))


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


class MySQLParams(BaseModel):
    """DATABASE_URL taken apart, in the shape asyncmy.connect() wants."""

    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = ""
    db: str | None = None
    unix_socket: str | None = None


class Settings(BaseSettings):
    """Every setting of the process. Durations end in `_s`."""

    model_config = SettingsConfigDict(
        env_prefix="ORCH_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
    )

    # -- seed names (REQUIREMENTS.md): must keep working unchanged --
    redis_url: str | None = _alias("ORCH_REDIS_URL", "REDIS_URL")
    database_url: SecretStr | None = _alias("ORCH_DATABASE_URL", "DATABASE_URL")
    es_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("ORCH_ES_HOSTS", "ES_HOSTS")
    )
    es_username: str | None = _alias("ORCH_ES_USERNAME", "ES_USERNAME")
    es_password: SecretStr | None = _alias("ORCH_ES_PASSWORD", "ES_PASSWORD")
    es_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=30.0, validation_alias=AliasChoices("ORCH_ES_TIMEOUT", "ES_TIMEOUT")
    )
    plugins_dir: Path = Field(default=Path("plugins"), validation_alias=AliasChoices("ORCH_PLUGINS_DIR", "PLUGINS_DIR"))
    plugin_venv_dir: Path | None = _alias("ORCH_PLUGIN_VENV_DIR", "PLUGIN_VENV_DIR")
    db_change_polling_interval_s: Annotated[float, Field(gt=0)] = Field(
        default=5.0,
        validation_alias=AliasChoices("ORCH_DB_CHANGE_POLLING_INTERVAL", "DB_CHANGE_POLLING_INTERVAL"),
    )

    # -- process --
    state_dir: Path = _alias("ORCH_STATE_DIR", default=Path(".orchestrator"))
    instance_id: str | None = _alias("ORCH_INSTANCE_ID")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _alias("ORCH_LOG_LEVEL", default="INFO")
    log_format: Literal["auto", "console", "json"] = _alias("ORCH_LOG_FORMAT", default="auto")
    shutdown_grace_s: Annotated[float, Field(ge=0)] = _alias("ORCH_SHUTDOWN_GRACE_S", default=30.0)

    # -- monitor --
    http_host: str = _alias("ORCH_HTTP_HOST", default="127.0.0.1")
    http_port: Annotated[int, Field(ge=0, le=65535)] = _alias("ORCH_HTTP_PORT", default=8080)
    api_token: SecretStr | None = _alias("ORCH_API_TOKEN")

    # -- jobs --
    queues: dict[str, QueueSettings] = Field(
        default_factory=_default_queues, validation_alias=AliasChoices("ORCH_QUEUES")
    )
    default_queue: str = _alias("ORCH_DEFAULT_QUEUE", default="default")
    # the seed's hard time limit: 30 min
    job_timeout_s: Annotated[float, Field(gt=0)] = _alias("ORCH_JOB_TIMEOUT_S", default=1800.0)
    kill_grace_s: Annotated[float, Field(ge=0)] = _alias("ORCH_KILL_GRACE_S", default=5.0)
    max_retries: Annotated[int, Field(ge=0)] = _alias("ORCH_MAX_RETRIES", default=3)
    # the seed's countdown=60
    retry_backoff_s: Annotated[float, Field(ge=0)] = _alias("ORCH_RETRY_BACKOFF_S", default=60.0)
    result_ttl_s: Annotated[float, Field(gt=0)] = _alias("ORCH_RESULT_TTL_S", default=7 * 24 * 3600.0)
    log_tail_bytes: Annotated[int, Field(ge=1024)] = _alias("ORCH_LOG_TAIL_BYTES", default=64 * 1024)
    heartbeat_interval_s: Annotated[float, Field(gt=0)] = _alias("ORCH_HEARTBEAT_INTERVAL_S", default=2.0)
    instance_ttl_s: Annotated[float, Field(gt=0)] = _alias("ORCH_INSTANCE_TTL_S", default=10.0)
    poll_delay_s: Annotated[float, Field(gt=0)] = _alias("ORCH_POLL_DELAY_S", default=1.0)
    # The leader lease (scheduler, change capture, housekeeping): a dead leader is replaced within
    # about leader_ttl_s * 4/3.
    leader_ttl_s: Annotated[float, Field(ge=1)] = _alias("ORCH_LEADER_TTL_S", default=10.0)

    # -- operations --
    log_jobs: bool = _alias("ORCH_LOG_JOBS", default=True)  # one INFO line per job start and end
    loop_lag_threshold_s: Annotated[float, Field(gt=0)] = _alias("ORCH_LOOP_LAG_THRESHOLD_S", default=1.0)
    loop_lag_window_s: Annotated[float, Field(gt=0)] = _alias("ORCH_LOOP_LAG_WINDOW_S", default=30.0)
    plugins_watch: bool = _alias("ORCH_PLUGINS_WATCH", default=False)  # reload when plugin files change

    # -- plugins --
    # A `process` plugin that ran within plugin_spare_idle_s has its next child started ahead.
    plugin_prestart: bool = _alias("ORCH_PLUGIN_PRESTART", default=True)
    plugin_spare_idle_s: Annotated[float, Field(gt=0)] = _alias("ORCH_PLUGIN_SPARE_IDLE_S", default=15.0)

    # -- schedules (begin) --
    # `[[schedules]]` in TOML (or ORCH_SCHEDULES as a JSON list): re-read at every start by the leader.
    schedules: list[ScheduleSpec] = Field(default_factory=list, validation_alias=AliasChoices("ORCH_SCHEDULES"))

    @field_validator("schedules", mode="after")
    @classmethod
    def _config_schedules(cls, value: list[ScheduleSpec]) -> list[ScheduleSpec]:
        ids = [s.id for s in value]
        if dupes := sorted({i for i in ids if ids.count(i) > 1}):
            msg = f"schedule id(s) given twice: {', '.join(dupes)}"
            raise ValueError(msg)
        return [s.model_copy(update={"origin": "config"}) for s in value]

    # -- schedules (end) --

    # -- redis connections (orchestrator/redis/connection.py) --
    # TLS (rediss://): the CA that signs the server's certificate (default: the system's CAs), a
    # client certificate and key when the server asks for one, and whether the certificate must
    # name the URL's host.
    redis_ca_file: Path | None = _alias("ORCH_REDIS_CA_FILE")
    redis_cert_file: Path | None = _alias("ORCH_REDIS_CERT_FILE")
    redis_key_file: Path | None = _alias("ORCH_REDIS_KEY_FILE")
    redis_check_hostname: bool = _alias("ORCH_REDIS_CHECK_HOSTNAME", default=True)
    # redis+sentinel://: the sentinels' own password, when they have one (the URL's is the data nodes').
    sentinel_password: SecretStr | None = _alias("ORCH_SENTINEL_PASSWORD")
    # The pool's bound per process (workers, pub/sub, heartbeat, lease, HTTP share it; README "Connection budget").
    redis_max_connections: Annotated[int, Field(ge=4, le=10000)] = _alias("ORCH_REDIS_MAX_CONNECTIONS", default=32)
    # A trigger returns only once this many replicas hold the job (WAIT), so a failover cannot lose
    # it; 0: acknowledged by the primary alone (replication is asynchronous). README "What survives".
    redis_wait_replicas: Annotated[int, Field(ge=0)] = _alias("ORCH_REDIS_WAIT_REPLICAS", default=0)
    redis_wait_timeout_s: Annotated[float, Field(gt=0)] = _alias("ORCH_REDIS_WAIT_TIMEOUT_S", default=1.0)
    # How long `run` waits for Redis at start-up before it gives up (exit 1); unset: forever.
    redis_connect_timeout_s: Annotated[float, Field(gt=0)] | None = _alias("ORCH_REDIS_CONNECT_TIMEOUT_S")

    # -- search index (index/): more Elasticsearch settings; the sink runs when ES_HOSTS is set --
    es_api_key: SecretStr | None = _alias("ORCH_ES_API_KEY", "ES_API_KEY")  # instead of username/password
    es_ca_file: Path | None = _alias("ORCH_ES_CA_FILE", "ES_CA_FILE")  # CA bundle for https:// hosts
    es_verify_certs: bool = _alias("ORCH_ES_VERIFY_CERTS", "ES_VERIFY_CERTS", default=True)
    es_bulk_max_actions: Annotated[int, Field(gt=0)] = _alias("ORCH_ES_BULK_MAX_ACTIONS", default=500)
    es_bulk_max_wait_s: Annotated[float, Field(ge=0)] = _alias("ORCH_ES_BULK_MAX_WAIT_S", default=0.2)
    es_retry_max_backoff_s: Annotated[float, Field(gt=0)] = _alias("ORCH_ES_RETRY_MAX_BACKOFF_S", default=10.0)
    # -- search index (end) --

    # -- change capture (cdc/rules.py): [[cdc.rules]], [cdc.monitored_tables] --
    cdc: CdcSettings = Field(default_factory=CdcSettings, validation_alias=AliasChoices("ORCH_CDC", "cdc"))

    @field_validator("es_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        # ES_HOSTS is written "http://a:9200,http://b:9200" in the seed .env, not as JSON.
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

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

    @field_validator("redis_url", mode="after")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        scheme = urlsplit(value).scheme
        if scheme not in {"redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel"}:
            msg = f"scheme {scheme!r} is not Redis; expected redis://, rediss://, unix:// or redis+sentinel://"
            raise ValueError(msg)
        return value

    @field_validator("default_queue", mode="after")
    @classmethod
    def _nonempty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _default_queue_is_configured(self) -> Settings:
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

    def __repr_args__(self) -> Any:
        # repr() must not leak secrets either (a Redis URL may carry a password)
        yield from self.masked().items()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs (see load_settings), so it must rank *below* the
        # environment: first source wins.
        return env_settings, dotenv_settings, init_settings

    # -- derived values --
    @property
    def venv_dir(self) -> Path:
        return self.plugin_venv_dir or self.state_dir / "venvs"

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

    def masked(self) -> dict[str, Any]:
        """The effective settings, safe to print: URL passwords and secrets are masked."""
        data = self.model_dump(mode="json")
        data["database_url"] = mask_url(self.database_url.get_secret_value()) if self.database_url else None
        data["redis_url"] = mask_url(self.redis_url) if self.redis_url else None
        data["es_hosts"] = [mask_url(h) for h in self.es_hosts]
        for key in ("es_password", "es_api_key", "api_token", "sentinel_password"):
            data[key] = "***" if getattr(self, key) else None
        return data


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as e:
        msg = f"config file {path}: {e.strerror}"
        raise ConfigError(msg) from e
    except tomllib.TOMLDecodeError as e:
        msg = f"config file {path}: {e}"
        raise ConfigError(msg) from e


def format_validation_error(error: ValidationError) -> str:
    """One line naming each bad key, never echoing the value (it may be a secret)."""
    problems = []
    for err in error.errors():
        key = ".".join(str(p) for p in err["loc"]) or "settings"
        problems.append(f"{key}: {err['msg']}")
    return "; ".join(problems)


def load_settings(config_path: Path | None = None, **overrides: Any) -> Settings:
    """Build the Settings: defaults < TOML < .env < environment; `overrides` rank above the TOML only.

    Raises:
        ConfigError: one line naming every bad key.
    """
    data: dict[str, Any] = {}
    from_env = os.environ.get("ORCH_CONFIG")  # containers often say where the file is in the environment
    path = config_path or (Path(from_env) if from_env else None)
    path = path or (DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None)
    if path is not None:
        data = _read_toml(path)
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as e:
        where = f" (in {path} or the environment)" if path else ""
        msg = f"bad setting{where}: {format_validation_error(e)}"
        raise ConfigError(msg) from e
    except SettingsError as e:
        # e.g. ORCH_QUEUES that is not JSON; the message names the field, not the value
        field = re.search(r'field "(\w+)"', str(e))
        name = f"ORCH_{field.group(1).upper()}" if field else "settings"
        msg = f"bad setting: {name}: cannot parse the value" + (f" ({e.__cause__})" if e.__cause__ else "")
        raise ConfigError(msg) from e
