"""Fencing: a write that carries the lease token it was made under, checked inside its own script.

The lease (cluster/lease.py) hands out a token that only grows; every leader-only write passes it,
and its Lua script refuses the write when the lease now holds another token (`FencedError`). These
primitives sit here, below both `jobs` (whose fenced bulk enqueue uses them) and `cluster` (which
issues the tokens), so neither has to import the other for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.exceptions import ResponseError

from orchestrator.errors import FencedError

# The marker a fenced script's error reply starts with (see fence_check()).
FENCED_REPLY = "ORCH_FENCED"


def fence_check(key_index: int, token_index: int) -> str:
    """A Lua prologue that refuses the script unless ARGV[token_index] is the lease's current token.

    KEYS[key_index] must be `Keys.leader`. An empty token means "not a leader-only write".
    """
    return (
        f"if ARGV[{token_index}] ~= '' and redis.call('HGET', KEYS[{key_index}], 'token') ~= ARGV[{token_index}] "
        f"then return redis.error_reply('{FENCED_REPLY} stale leader token ' .. ARGV[{token_index}]) end\n"
    )


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
