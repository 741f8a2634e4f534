"""Suite-wide fixtures: real Redis and MariaDB servers, and a clean environment for every test.

- `redis_server` (session): a RedisServer (`.url`, `.host`, `.port`, `.stop()`, `.start()`).
- `redis_url` (function): its URL, after FLUSHALL.
- `mariadb_server` (session, started lazily on first use): a MariaDBServer (`.url`, `.host`, `.port`,
  `.user`, `.password`, `.db`, `.socket`, `.connect_kwargs`, `.stop()`, `.start()`).
- `mysql_url` (function): its URL, after `testdb` is dropped and created again.
- `repo_root`: the checkout, for tests that need the example plugins.

Every test runs in its own tmp dir as cwd, with the product's env names removed (see `_clean_env`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.services import MariaDBServer, RedisServer

REPO_ROOT = Path(__file__).resolve().parent.parent

# The names orchestrator/config.py reads besides ORCH_*; ORCH_TEST_* (the suite's own) are kept.
PRODUCT_ENV_NAMES = frozenset(
    {
        "REDIS_URL",
        "DATABASE_URL",
        "ES_HOSTS",
        "ES_USERNAME",
        "ES_PASSWORD",
        "ES_TIMEOUT",
        "PLUGINS_DIR",
        "PLUGIN_VENV_DIR",
        "DB_CHANGE_POLLING_INTERVAL",
    }
)


def _settings_env_names() -> set[str]:
    """Every name Settings may take from the environment (its aliases, upper-cased), best effort."""
    try:
        from orchestrator.config import Settings
    except ImportError:  # a missing config.py must fail its own tests, not every test's setup
        return set()
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        names.add(name.upper())
        choices = getattr(field.validation_alias, "choices", None) or []
        names.update(c.upper() for c in choices if isinstance(c, str))
    return names


_ENV_NAMES = PRODUCT_ENV_NAMES | _settings_env_names()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No product setting leaks in from the shell, a stray .env or an orchestrator.toml in the repo."""
    for name in list(os.environ):
        upper = name.upper()
        if upper in _ENV_NAMES or (upper.startswith("ORCH_") and not upper.startswith("ORCH_TEST_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout (the example plugins live in `repo_root / "plugins"`)."""
    return REPO_ROOT


# -- Redis --


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer.from_env_or_start(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        if not server.external:
            server.stop()


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> str:
    """The session Redis, running (restarted if a test stopped it) and empty."""
    if not redis_server.running:
        redis_server.start()
    from orchestrator.client import connect_redis  # imported late: see _settings_env_names

    client = connect_redis(redis_server.url)  # through orchestrator.redis.connection, like the product
    try:
        await client.flushall()
    finally:
        await client.aclose()
    return redis_server.url


# -- MariaDB --


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    server = MariaDBServer.from_env_or_start(tmp_path_factory.mktemp("mariadb"))
    try:
        yield server
    finally:
        if not server.external:
            server.stop()


@pytest.fixture
async def mysql_url(mariadb_server: MariaDBServer) -> str:
    """The session MariaDB, running (restarted if a test stopped it) and with an empty `testdb`."""
    if not mariadb_server.running:
        mariadb_server.start()
    await mariadb_server.recreate_db()
    return mariadb_server.url


# -- real `orchestrator run` children --


@pytest.fixture
async def start_run() -> AsyncIterator[Any]:
    """Start real `orchestrator run` children (`await start_run(settings, log_path, **env)`); any
    still running when the test ends (it failed before stopping them) is killed, so no worker or
    plugin outlives its test. Typed as tests.jobs.conftest.StartRun."""
    from tests.jobs.helpers import RunProcess  # imports the product: not at collection time

    started: list[RunProcess] = []

    async def start(settings: Any, log_path: Path, **env: str) -> RunProcess:
        proc = RunProcess(settings, log_path, **env)
        await proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc is not None and proc.proc.returncode is None:
            await proc.kill9()
