"""orchestrator: one asyncio process for jobs, schedules, change capture and plugins."""

from __future__ import annotations

import importlib.metadata

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

try:
    __version__ = importlib.metadata.version("orchestrator")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

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
