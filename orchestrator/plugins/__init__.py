"""Plugins: manifests, discovery, per-plugin virtualenvs and the subprocess launcher.

The shim (shim.py) is not imported here: it runs inside each plugin's own interpreter.
"""

from __future__ import annotations

from orchestrator.plugins.envs import VenvManager
from orchestrator.plugins.launcher import Launcher, RunResult
from orchestrator.plugins.manifest import (
    Limits,
    Manifest,
    ParamSpec,
    PoolOptions,
    coerce_cli_params,
    load_manifest,
    validate_params,
)
from orchestrator.plugins.registry import PluginInfo, PluginRegistry
from orchestrator.plugins.scaffold import create_plugin, manifest_template

__all__ = [
    "Launcher",
    "Limits",
    "Manifest",
    "ParamSpec",
    "PluginInfo",
    "PluginRegistry",
    "PoolOptions",
    "RunResult",
    "VenvManager",
    "coerce_cli_params",
    "create_plugin",
    "load_manifest",
    "manifest_template",
    "validate_params",
]
