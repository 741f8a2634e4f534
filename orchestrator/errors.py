"""The project's exception tree: shallow on purpose, each class says when it is raised."""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base class of every error the orchestrator raises on purpose."""


class ConfigError(OrchestratorError):
    """A setting is missing or has a bad value; the message names the key."""


class PluginError(OrchestratorError):
    """Something about one plugin is wrong; other plugins are unaffected."""


class ManifestError(PluginError):
    """A plugin.json cannot be read or does not validate."""


class ParamsError(PluginError):
    """Job parameters do not match the plugin's declared parameters.

    Args:
        problems: one human-readable line per bad parameter.
    """

    def __init__(self, plugin: str, problems: list[str]) -> None:
        self.plugin = plugin
        self.problems = problems
        super().__init__(f"invalid parameters for plugin {plugin!r}: " + "; ".join(problems))


class PluginEnvError(PluginError):
    """A plugin's virtualenv cannot be built (bad dependency, unsupported python_version)."""


class PluginStartError(PluginError):
    """A plugin's child process could not be started."""


class JobError(OrchestratorError):
    """A job request was refused (unknown plugin, disabled plugin, unknown queue, ...)."""


class NotFoundError(OrchestratorError):
    """A job, batch, schedule or plugin does not exist."""


class ConflictError(OrchestratorError):
    """The thing exists but its state does not allow the request (deleting a running job)."""


class StartupError(OrchestratorError):
    """`orchestrator run` cannot start a component (a port in use, Redis unreachable)."""


class FencedError(OrchestratorError):
    """A leader-only write carried a lease token that is no longer current: this instance lost the
    lease (it stalled, or Redis was away) and another leads now. Nothing was written."""


class ChangeFeedError(OrchestratorError):
    """The MySQL change feed cannot be read."""


class QueueFull(OrchestratorError):
    """A trigger would put more jobs waiting than the plugin's throttle `max_queued` allows (for its
    key). Nothing was written: a batch is refused whole. HTTP 429, CLI exit 1.

    Args:
        plugin: the plugin.
        key: the throttle key the cap is counted under ('user_id=42'), or '' for the whole plugin.
        cap: the plugin's max_queued.
        waiting: how many were waiting when it was refused.
    """

    def __init__(self, plugin: str, key: str, cap: int, waiting: int) -> None:
        self.plugin, self.key, self.cap, self.waiting = plugin, key, cap, waiting
        where = f" for {key}" if key else ""
        super().__init__(f"queue full: plugin {plugin!r} has {waiting} job(s) waiting{where} (max_queued {cap})")
