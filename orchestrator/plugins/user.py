"""`plugin_user`: plugin children run as another user, so they cannot read what the orchestrator's
user can (the state directory, the embedded Redis's socket and password, its environment).

The switch happens in the child (shim.py `--user`), right after it starts and before anything of
the plugin is read: it needs root, or CAP_SETUID and CAP_SETGID handed to children as ambient
capabilities (systemd `AmbientCapabilities=`) plus CAP_KILL to stop them. README "Trust boundary".
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import ConfigError

_CAP_KILL, _CAP_SETGID, _CAP_SETUID = 5, 6, 7


@dataclass(frozen=True)
class PluginUser:
    """The account plugin children run as: ids, and the HOME they get."""

    name: str
    uid: int
    gid: int
    home: str

    def shim_arg(self, *, site: bool) -> str:
        """The shim's `--user` value; `site`: add the virtualenv's site-packages after the switch."""
        return f"{self.uid}:{self.gid}:{int(site)}"


def resolve_plugin_user(spec: str) -> PluginUser:
    """The user named (or numbered) by the `plugin_user` setting, once it is known we can switch to it.

    Raises:
        ConfigError: no such user, root itself, or this process may not switch users.
    """
    try:
        entry = pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
    except KeyError:
        msg = f"plugin_user: no such user {spec!r}"
        raise ConfigError(msg) from None
    if entry.pw_uid == 0:
        raise ConfigError("plugin_user: must not be root (plugins would reach everything)")
    if not _may_switch_users():
        msg = (
            f"plugin_user: running plugins as {entry.pw_name!r} needs root, or CAP_SETUID and CAP_SETGID as "
            "ambient capabilities and CAP_KILL (this process has neither)"
        )
        raise ConfigError(msg)
    return PluginUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def _may_switch_users() -> bool:
    if os.geteuid() == 0:
        return True
    caps = _capabilities()
    ambient, effective = caps.get("CapAmb", 0), caps.get("CapEff", 0)
    return all(ambient >> c & 1 for c in (_CAP_SETUID, _CAP_SETGID)) and bool(effective >> _CAP_KILL & 1)


def _capabilities() -> dict[str, int]:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return {}
    return {k: int(v, 16) for k, _, v in (line.partition(":\t") for line in text.splitlines()) if k.startswith("Cap")}
