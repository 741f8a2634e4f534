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


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...


def children_of(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is `pid`."""
    found = set()
    for entry in Path("/proc").iterdir():
        fields = _stat_fields(int(entry.name)) if entry.name.isdigit() else None
        if fields and fields[0] not in {"Z", "X"} and int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def group_members(pgids: set[int]) -> set[int]:
    """Live processes in any of these process groups (a plugin's child and whatever it started)."""
    found = set()
    for entry in Path("/proc").iterdir():
        fields = _stat_fields(int(entry.name)) if entry.name.isdigit() else None
        if fields and fields[0] not in {"Z", "X"} and int(fields[2]) in pgids:
            found.add(int(entry.name))
    return found


async def gone(pids: list[int], timeout_s: float) -> list[int]:
    """Like wait_dead, but lets the event loop run meanwhile (the launcher's timers stop idle children)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return []
        await asyncio.sleep(0.05)
    return [p for p in pids if alive(p)]
