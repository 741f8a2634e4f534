"""Fixtures of the job tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from orchestrator.config import Settings
from tests.jobs.helpers import RunProcess

StartRun = Callable[..., Awaitable[RunProcess]]


@pytest.fixture
async def start_run() -> AsyncIterator[StartRun]:
    """Start real `orchestrator run` children; any still running when the test ends (it failed
    before stopping them) is killed, so no worker or plugin outlives its test."""
    started: list[RunProcess] = []

    async def start(settings: Settings, log_path: Path, **env: str) -> RunProcess:
        proc = RunProcess(settings, log_path, **env)
        await proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc is not None and proc.proc.returncode is None:
            await proc.kill9()
