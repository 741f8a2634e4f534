"""Helpers for the plugin tests: watching processes and marker files from the outside."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that may never reap it counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


def wait_dead(pids: list[int], timeout_s: float) -> list[int]:
    """Poll until every pid is gone; return those still alive after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


async def wait_for_file(path: Path, timeout_s: float = 10.0) -> dict[str, Any]:
    """Wait until a plugin has written its JSON marker file (e.g. its pid and its child's)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return dict(json.loads(await asyncio.to_thread(path.read_text)))
        except (FileNotFoundError, ValueError):
            await asyncio.sleep(0.02)
    raise AssertionError(f"{path} was not written within {timeout_s}s")
