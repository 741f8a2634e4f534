"""What the orchestrator process does about the code it runs (README "Trust boundary").

Plugins run as children of the same user unless `plugin_user` says otherwise. A same-user child
could read our environment (/proc/<pid>/environ holds DATABASE_URL, ES_PASSWORD, ORCH_API_TOKEN)
or ptrace us; marking the process non-dumpable makes the kernel refuse both to any process
without CAP_SYS_PTRACE. (Children get the flag back at their exec, so they stay debuggable.)
"""

from __future__ import annotations

import ctypes
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

_PR_SET_DUMPABLE = 4


def make_undumpable() -> bool:
    """prctl(PR_SET_DUMPABLE, 0) on Linux; returns whether it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        logger.warning("trust: cannot mark the process non-dumpable (errno %d)", ctypes.get_errno())
        return False
    return True


def protect_state_dir(state_dir: Path) -> None:
    """0711: other users (a `plugin_user`) may pass through to the virtualenvs inside, never list
    it; what is secret inside has its own 0700/0600 (the embedded Redis's data, socket, password)."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        state_dir.chmod(0o711)
    except OSError as e:  # e.g. a mounted folder of another owner: what needs it says so later
        logger.warning("trust: cannot make %s 0711 (%s)", state_dir, e.strerror)
