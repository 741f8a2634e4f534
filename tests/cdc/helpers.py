"""Helpers of the change-capture tests: a recorder plugin, SQL on the test MariaDB, a poller rig."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncmy  # type: ignore[import-untyped,unused-ignore]
from redis.asyncio import Redis

from orchestrator.cdc import build as cdc
from orchestrator.cdc.admin import CdcAdmin
from orchestrator.cdc.poller import ChangePoller
from orchestrator.client import Client, connect_redis
from orchestrator.cluster.lease import LeaderLease
from orchestrator.config import Settings
from orchestrator.jobs.model import Keys
from orchestrator.jobs.shared import Identity, make_shared
from orchestrator.jobs.store import JobStore
from orchestrator.plugins.build import build_registry
from orchestrator.plugins.launcher import Launcher
from tests.jobs.helpers import RunProcess, make_plugin, make_settings, wait_for

# Appends every change event it receives (as the `change_event` keyword) to the file `record`.
RECORDER_MAIN = """
import json

def run(record=None, tag="x", change_event=None, **ctx):
    with open(record, "a") as fh:
        fh.write(json.dumps({"job": ctx["job_id"], "tag": tag, "change_event": change_event}) + "\\n")
    return {"tag": tag}
"""

RECORDER_PARAMS = {
    "record": {"type": "string", "required": False},
    "tag": {"type": "string", "required": False, "default": "x"},
}


def make_recorder(plugins_dir: Path, name: str = "recorder") -> Path:
    folder = make_plugin(plugins_dir, name, parameters=RECORDER_PARAMS)
    (folder / "main.py").write_text(RECORDER_MAIN)
    return folder


def cdc_settings(tmp_path: Path, redis_url: str, mysql_url: str, rules: list[dict[str, Any]], **cdc: Any) -> Settings:
    make_recorder(tmp_path / "plugins")
    make_recorder(tmp_path / "plugins", "other")
    return make_settings(
        tmp_path,
        redis_url,
        database_url=mysql_url,
        db_change_polling_interval_s=0.05,
        leader_ttl_s=2,
        cdc={"rules": rules, **cdc},
    )


async def db_connect(settings: Settings, **kwargs: Any) -> Any:
    params = settings.mysql_params()
    assert params is not None
    return await asyncmy.connect(
        host=params.host, port=params.port, user=params.user, password=params.password, db=params.db, **kwargs
    )


async def sql(settings: Settings, *statements: str | tuple[str, Sequence[Any]]) -> list[Any]:
    """Run statements in autocommit; returns the rows of the last one."""
    conn = await db_connect(settings, autocommit=True)
    try:
        rows: list[Any] = []
        async with conn.cursor() as cur:
            for statement in statements:
                if isinstance(statement, tuple):
                    await cur.execute(statement[0], statement[1])
                else:
                    await cur.execute(statement)
                rows = list(await cur.fetchall() or [])
        return rows
    finally:
        conn.close()


async def cdc_admin(settings: Settings, redis: Redis) -> CdcAdmin:
    """The `orchestrator cdc ...` side, as the CLI builds it (validating against published plugins)."""
    return CdcAdmin(settings, redis, await Client.for_settings(settings, redis).submitter())


async def install(settings: Settings) -> None:
    """`orchestrator cdc install`, in process."""
    redis = connect_redis(settings.redis_url or "")
    try:
        admin = await cdc_admin(settings, redis)
        steps = await admin.install(dry_run=False)
        assert not [s for s in steps if s["action"] == "error"], steps
    finally:
        await redis.aclose()


@dataclass
class Rig:
    poller: ChangePoller
    store: JobStore
    lease: LeaderLease

    async def settle(self) -> None:
        """Return after two whole polls that started after this call (so every committed change was read)."""
        target = self.poller.rounds + 2
        self.poller.poke()
        await wait_for(lambda: self.poller.rounds >= target or self._poke_again(), timeout_s=20, interval_s=0.01)

    def _poke_again(self) -> bool:
        self.poller.poke()
        return False

    async def jobs(self) -> dict[str, dict[str, Any]]:
        """Every cdc job in Redis: id -> record."""
        ids = [i.decode() for i in await self.store.redis.zrange(Keys.all_jobs, 0, -1)]
        ids = [i for i in ids if i.startswith("cdc:")]
        records = await self.store.get_many(ids)
        return {i: dataclasses.asdict(r) for i, r in zip(ids, records, strict=True) if r is not None}

    async def events(self, plugin: str | None = None) -> list[dict[str, Any]]:
        """The change events of the cdc jobs (of one plugin), by change id order."""
        jobs = await self.jobs()
        out = [r["context"]["change_event"] for r in jobs.values() if plugin is None or r["plugin"] == plugin]
        return sorted(out, key=lambda e: (len(e["change_id"]), e["change_id"]))


@contextlib.asynccontextmanager
async def capture(settings: Settings) -> AsyncIterator[Rig]:
    """A ChangePoller holding a real lease on the test Redis, running until the block ends."""
    redis = connect_redis(settings.redis_url or "")
    registry = build_registry(settings, settings.venv_dir)
    await registry.load()
    identity = Identity("cdc-test", "leader", "test", served_queues={})
    shared = make_shared(settings, redis, identity, registry, Launcher())  # the launcher is never used here
    store = shared.store
    lease = LeaderLease(redis, "cdc-test", ttl_s=settings.leader_ttl_s)
    [poller] = cdc.build(settings, shared, lease=lease)  # as `run` builds it
    assert isinstance(poller, ChangePoller), poller
    lease_task = asyncio.create_task(lease.run())
    task: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(lease.wait_gained(), 10)
        task = asyncio.create_task(poller.run())
        await wait_for(lambda: poller.rounds > 0 or poller.last_error, timeout_s=20)
        yield Rig(poller, store, lease)
    finally:
        for t in (task, lease_task):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        await redis.aclose()


class LeaderRun(RunProcess):
    """A real `orchestrator run --role leader` (no workers: the jobs stay queued to be counted)."""

    async def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "orchestrator", "run", "--role", "leader", env=self.env, stdout=log, stderr=log,
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        log.close()


def run_env(settings: Settings) -> dict[str, str]:
    """What a real `orchestrator run` needs beyond cli_env for change capture."""
    assert settings.database_url is not None
    return {
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "DB_CHANGE_POLLING_INTERVAL": str(settings.db_change_polling_interval_s),
        "ORCH_LEADER_TTL_S": str(settings.leader_ttl_s),
        "ORCH_CDC": json.dumps(settings.cdc.model_dump(mode="json", include={"rules"})),
    }
