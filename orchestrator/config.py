"""One typed Settings object: defaults < orchestrator.toml (or --config) < .env < environment.

`Settings` is composed of the packages' own sections (each a leaf module of pydantic models:
redis/settings.py, plugins/settings.py, jobs/settings.py, cluster/settings.py, monitor/settings.py,
schedules/settings.py, cdc/settings.py, index/settings.py, tracing/settings.py, workflows/settings.py). It inherits them, so every key stays a
top-level TOML key with its documented environment name, and a package's code receives `Settings`
typed as its own section and never imports this module.

The seed names (REDIS_URL, DATABASE_URL, ES_*, PLUGINS_DIR, PLUGIN_VENV_DIR,
DB_CHANGE_POLLING_INTERVAL) keep working unchanged; everything else is ORCH_* or a TOML key.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from orchestrator.cdc.settings import DatabaseSettings
from orchestrator.cluster.settings import ClusterSettings
from orchestrator.config_keys import unknown_keys
from orchestrator.errors import ConfigError
from orchestrator.index.settings import IndexSettings
from orchestrator.jobs.settings import JobSettings
from orchestrator.logs import mask_url
from orchestrator.monitor.settings import MonitorSettings
from orchestrator.plugins.settings import PluginSettings
from orchestrator.plugins.throttle import Throttle
from orchestrator.redis.settings import RedisSettings
from orchestrator.schedules.settings import ScheduleSettings
from orchestrator.tracing.settings import TracingSettings
from orchestrator.workflows.settings import WorkflowSettings

DEFAULT_CONFIG_FILE = Path("orchestrator.toml")


# Fields come in reverse order of the bases: `orchestrator config` lists Redis first, schedules last.
class Settings(
    BaseSettings,
    TracingSettings,
    WorkflowSettings,
    ScheduleSettings,
    MonitorSettings,
    ClusterSettings,
    JobSettings,
    PluginSettings,
    IndexSettings,
    DatabaseSettings,
    RedisSettings,
):
    """Every setting of the process: the process's own keys, and every package's section. Durations end in `_s`."""

    model_config = SettingsConfigDict(
        env_prefix="ORCH_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
    )

    state_dir: Path = Field(default=Path(".orchestrator"), validation_alias="ORCH_STATE_DIR")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", validation_alias="ORCH_LOG_LEVEL")
    log_format: Literal["auto", "console", "json"] = Field(default="auto", validation_alias="ORCH_LOG_FORMAT")
    # the file load_settings read (None: none), so a plugin reload can re-read what may change at run time
    _config_path: Path | None = PrivateAttr(default=None)

    def reread_throttles(self) -> dict[str, Throttle]:
        """`[plugins.NAME.throttle]` as the config file and the environment say now (blocking file I/O).

        Raises:
            ConfigError: the file no longer validates (the message names the key).
        """
        if self._config_path is None:  # no file: nothing can have changed (the environment is fixed)
            return self.throttles()
        return load_settings(self._config_path).throttles()

    @model_validator(mode="after")
    def _sentinel_confirms_triggers(self) -> Self:
        # A user who configures Sentinel has asked for high availability: by default a trigger
        # returns only once a replica holds the job, so a failover loses no acknowledged job.
        # An explicit 0 (the fast, lossy choice) stays 0.
        sentinel = bool(self.redis_url) and urlsplit(self.redis_url or "").scheme.endswith("+sentinel")
        if sentinel and "redis_wait_replicas" not in self.model_fields_set:
            self.redis_wait_replicas = 1
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

    def masked(self) -> dict[str, Any]:
        """The effective settings, safe to print: URL passwords and secrets are masked."""
        data = self.model_dump(mode="json")
        data["database_url"] = mask_url(self.database_url.get_secret_value()) if self.database_url else None
        data["redis_url"] = mask_url(self.redis_url) if self.redis_url else None
        data["es_hosts"] = [mask_url(h) for h in self.es_hosts]
        for key in ("otel_exporter_otlp_endpoint", "otel_exporter_otlp_traces_endpoint"):
            data[key] = mask_url(data[key]) if data[key] else None
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
        if unknown := list(unknown_keys(data, Settings)):
            msg = f"config file {path}: " + "; ".join(unknown)
            raise ConfigError(msg)
    data.update(overrides)
    try:
        settings = Settings(**data)
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
    settings._config_path = path
    return settings
