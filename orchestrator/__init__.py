"""orchestrator: one asyncio process for jobs, schedules, change capture and plugins."""

from __future__ import annotations

from orchestrator.client import Client, Triggered
from orchestrator.errors import (
    ConfigError,
    JobError,
    ManifestError,
    NotFoundError,
    OrchestratorError,
    ParamsError,
    PluginError,
)
from orchestrator.redis.connection import RedisOptions
from orchestrator.version import __version__

__all__ = [
    "Client",
    "ConfigError",
    "JobError",
    "ManifestError",
    "NotFoundError",
    "OrchestratorError",
    "ParamsError",
    "PluginError",
    "RedisOptions",
    "Triggered",
    "__version__",
]
