"""The plugins section of the settings: where plugins and their virtualenvs live, how children run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from orchestrator.plugins.throttle import Throttle


class PluginConfig(BaseModel):
    """`[plugins.NAME]`: what the deployment says about one plugin, over its manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    throttle: Throttle | None = None


class PluginSettings(BaseModel):
    """PLUGINS_DIR and PLUGIN_VENV_DIR (seed names), and the launcher's knobs."""

    plugins_dir: Path = Field(default=Path("plugins"), validation_alias=AliasChoices("ORCH_PLUGINS_DIR", "PLUGINS_DIR"))
    # unset: <state dir>/venvs (config.py resolves it: `Settings.venv_dir`)
    plugin_venv_dir: Path | None = Field(
        default=None, validation_alias=AliasChoices("ORCH_PLUGIN_VENV_DIR", "PLUGIN_VENV_DIR")
    )
    kill_grace_s: Annotated[float, Field(ge=0)] = Field(default=5.0, validation_alias="ORCH_KILL_GRACE_S")
    # A `process` plugin that ran within plugin_spare_idle_s has its next child started ahead.
    plugin_prestart: bool = Field(default=True, validation_alias="ORCH_PLUGIN_PRESTART")
    plugin_spare_idle_s: Annotated[float, Field(gt=0)] = Field(
        default=15.0, validation_alias="ORCH_PLUGIN_SPARE_IDLE_S"
    )
    plugins_watch: bool = Field(default=False, validation_alias="ORCH_PLUGINS_WATCH")  # reload when plugin files change
    # Run plugin children as this user (name or uid), with its HOME: they cannot read the state
    # directory, the embedded Redis or our environment. Needs root (plugins/user.py). Unset: our user.
    plugin_user: str | None = Field(default=None, validation_alias="ORCH_PLUGIN_USER")
    # [plugins.NAME.throttle] and the like (ORCH_PLUGINS as JSON): config over each manifest's own
    plugins: dict[str, PluginConfig] = Field(default_factory=dict, validation_alias="ORCH_PLUGINS")

    def throttles(self) -> dict[str, Throttle]:
        """`[plugins.NAME.throttle]` of every plugin that has one."""
        return {name: c.throttle for name, c in self.plugins.items() if c.throttle is not None}
