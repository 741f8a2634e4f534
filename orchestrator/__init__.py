"""orchestrator: one asyncio process for jobs, schedules, change capture and plugins."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from orchestrator.errors import (
    ConfigError,
    JobError,
    ManifestError,
    NotFoundError,
    OrchestratorError,
    ParamsError,
    PluginError,
)
from orchestrator.version import __version__

if TYPE_CHECKING:
    from orchestrator.client import Client, Triggered
    from orchestrator.redis.connection import RedisOptions

# Loaded on first use (PEP 562): they bring in redis, arq and aiohttp, which `orchestrator health`
# (the container's health check, every 15 s) and most commands never need.
_LAZY = {
    "Client": "orchestrator.client",
    "Triggered": "orchestrator.client",
    "RedisOptions": "orchestrator.redis.connection",
}

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
