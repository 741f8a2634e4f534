"""Types of the job tests' fixtures (the fixtures themselves live in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tests.jobs.helpers import RunProcess

StartRun = Callable[..., Awaitable[RunProcess]]
