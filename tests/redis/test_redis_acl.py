"""An ACL user with only the documented permissions (redis_conn.ACL_RULES, README "Redis ACL")
runs the whole job path: trigger, claim, run, outcome, a cancel, the lease, the heartbeat, the
reaper and housekeeping; and it can touch nothing else."""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.exceptions import NoPermissionError

from orchestrator.client import Client, connect_redis
from orchestrator.jobs.model import Keys
from orchestrator.jobs.store import JobStore
from orchestrator.redis.connection import acl_setuser
from tests.conftest import REPO_ROOT
from tests.jobs.helpers import make_plugin, make_settings, read_events, run_app, wait_for

USER, PASSWORD = "orchestrator", "acl-test-pw"


@pytest.fixture
async def acl_url(redis_url: str) -> AsyncIterator[str]:
    admin = connect_redis(redis_url)
    await admin.execute_command(*shlex.split(acl_setuser(USER, PASSWORD)))
    try:
        yield redis_url.replace("redis://", f"redis://{USER}:{PASSWORD}@")
    finally:
        await admin.execute_command("ACL", "DELUSER", USER)
        await admin.aclose()


def test_the_readme_shows_the_exact_acl_line() -> None:
    assert acl_setuser(USER, "<password>").replace(USER, "orchestrator") in (REPO_ROOT / "README.md").read_text()


async def test_an_acl_user_runs_the_whole_job_path(tmp_path: Path, acl_url: str, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    settings = make_settings(tmp_path, acl_url, instance_ttl_s=1.0, heartbeat_interval_s=0.3)
    record = tmp_path / "events.jsonl"
    async with run_app(settings) as app, Client(connect_redis(acl_url), owns_redis=True) as client:
        # trigger -> claim -> run -> outcome (woken by pub/sub, result through the done channel)
        job = await client.trigger("probe", {"name": "acl"})
        assert (await client.result(job.job_id, timeout_s=30))["state"] == "succeeded"
        # a deferred job and a cancel of a running one (arq's abort set, the cancel channel)
        later = await client.trigger("probe", {"name": "later"}, defer_s=0.3)
        running = await client.trigger("probe", {"sleep": 30, "record": str(record)})
        await wait_for(lambda: any(e["event"] == "start" for e in read_events(record)))
        assert await client.cancel(running.job_id, wait_s=20) == "cancelled"
        assert (await client.result(later.job_id, timeout_s=30))["state"] == "succeeded"
        # the lease and the heartbeat, as this user
        assert app.supervisor is not None
        health = await app.supervisor.health()
        assert {name: h.status for name, h in health.items() if h.status != "ok"} == {}
        assert await client.redis.hexists(Keys.instances, app.identity.instance_id)
        assert (await client.redis.hget(Keys.leader, "instance")) == app.identity.instance_id.encode()
        # the reaper (a dead instance's jobs) and housekeeping (SCAN over the indexes)
        store = JobStore(client.redis, result_ttl_s=60)
        await client.redis.hset(Keys.instances, "ghost", "{}")
        assert await store.release_instance("ghost") == []
        assert await store.trim_indexes() >= 0
        assert (await client.stats())["states"]["succeeded"] == 2

    # ...and nothing else
    limited = connect_redis(acl_url)
    try:
        for command in (("SET", "other:key", "1"), ("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*")):
            with pytest.raises(NoPermissionError):
                await limited.execute_command(*command)
        with pytest.raises(NoPermissionError):
            await limited.publish("other-channel", "x")
    finally:
        await limited.aclose()
