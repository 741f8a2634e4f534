"""Fencing: a write that carries the lease token it was made under, checked inside its own script.

The lease (cluster/lease.py) hands out a token that only grows; every leader-only write passes it,
and its Lua script refuses the write (lua/fence.lua) when the lease now holds another token
(`FencedError`). These primitives sit here, below both `jobs` (whose fenced bulk enqueue uses
them) and `cluster` (which issues the tokens), so neither has to import the other for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.exceptions import ResponseError

from orchestrator.errors import FencedError
from orchestrator.redis import scripts as lua

# The marker a fenced script's error reply starts with (lua/fence.lua).
FENCED_REPLY = "ORCH_FENCED"


def fence_lua() -> str:
    """The Lua function `fence_check(leader_key, token)` (lua/fence.lua), for a fenced script to
    include before its body (lua.script). Every fenced script takes the leader hash as KEYS[1] and
    the token as ARGV[1] ('' for a write that is not leader-only), and starts with the check.
    """
    return lua.script("orchestrator.redis", "fence.lua", constants={"FENCED_REPLY": FENCED_REPLY})


def raise_if_fenced(error: ResponseError) -> None:
    """Turn a fenced script's error reply into FencedError (re-raise anything else)."""
    if FENCED_REPLY in str(error):
        msg = f"refused a write of a stale leader: {error}"
        raise FencedError(msg) from error
    raise error


@dataclass(frozen=True)
class Fence:
    """The token a leader-only write was made under (see the module docstring)."""

    token: int

    @property
    def arg(self) -> str:
        return str(self.token)


def no_fence_arg(fence: Fence | None) -> str:
    return fence.arg if fence is not None else ""
