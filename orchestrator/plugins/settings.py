"""The plugins section of the settings: where plugins and their virtualenvs live, how children run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field

from orchestrator.sections import env_alias


class PluginSettings(BaseModel):
    """PLUGINS_DIR and PLUGIN_VENV_DIR (seed names), and the launcher's knobs."""

    plugins_dir: Path = env_alias("ORCH_PLUGINS_DIR", "PLUGINS_DIR", default=Path("plugins"))
    # unset: <state dir>/venvs (config.py resolves it: `Settings.venv_dir`)
    plugin_venv_dir: Path | None = env_alias("ORCH_PLUGIN_VENV_DIR", "PLUGIN_VENV_DIR")
    kill_grace_s: Annotated[float, Field(ge=0)] = env_alias("ORCH_KILL_GRACE_S", default=5.0)
    # A `process` plugin that ran within plugin_spare_idle_s has its next child started ahead.
    plugin_prestart: bool = env_alias("ORCH_PLUGIN_PRESTART", default=True)
    plugin_spare_idle_s: Annotated[float, Field(gt=0)] = env_alias("ORCH_PLUGIN_SPARE_IDLE_S", default=15.0)
    plugins_watch: bool = env_alias("ORCH_PLUGINS_WATCH", default=False)  # reload when plugin files change
