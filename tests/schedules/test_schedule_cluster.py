"""Real `orchestrator run` processes on one Redis with an `every = "1s"` config schedule: one job per
slot with two instances, a SIGKILLed leader handing scheduling over, a schedule added through the
API of the non-leader, and a restart of the only instance.

"Accounted for" below: every slot between the first and the last one seen has exactly one job
`sched:<id>:<slot>`, or lies in a range the history records as skipped (a leader change takes
longer than one slot: the newest missed slot still fires, older ones are skipped, never a burst).
"""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from orchestrator.client import Client, connect_redis
from orchestrator.config import Settings
from orchestrator.jobs.model import Keys
from tests.jobs.conftest import StartRun
from tests.jobs.helpers import RunProcess, make_plugin, make_settings, wait_for
from tests.services import free_port

pytestmark = pytest.mark.slow

TTL_S = 2.0
TOKEN = "t0ken"
BEAT = {"id": "beat", "plugin": "probe", "every": "1s", "overlap": "allow"}


class Instance:
    def __init__(self, name: str, proc: RunProcess, port: int) -> None:
        self.name, self.proc, self.port = name, proc, port

    async def up(self) -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.port}/live") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False


async def _start(start_run: StartRun, settings: Settings, tmp_path: Path, name: str, **env: str) -> Instance:
    port = free_port()
    env = {
        "ORCH_INSTANCE_ID": name,
        "ORCH_HTTP_PORT": str(port),
        "ORCH_LEADER_TTL_S": str(TTL_S),
        "ORCH_INSTANCE_TTL_S": str(TTL_S),
        "ORCH_API_TOKEN": TOKEN,
        **env,
    }
    # started through the fixture: a failing test still kills it
    proc = await start_run(settings, tmp_path / f"{name}.log", **env)
    instance = Instance(name, proc, port)
    await wait_for(instance.up, timeout_s=30, interval_s=0.1)
    return instance


@pytest.fixture
async def client(tmp_path: Path, redis_url: str) -> Any:
    make_plugin(tmp_path / "plugins")
    redis = connect_redis(redis_url)
    yield Client(redis)
    await redis.aclose()


def _slot(job_id: str) -> float:
    return datetime.strptime(job_id.rsplit(":", 1)[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def _fired(client: Client, schedule_id: str = "beat") -> list[float]:
    rows = await client.list(limit=10_000)
    return sorted(_slot(r["job_id"]) for r in rows if r["job_id"].startswith(f"sched:{schedule_id}:"))


async def _assert_accounted(client: Client, schedule_id: str = "beat") -> tuple[list[float], list[dict[str, Any]]]:
    fired = await _fired(client, schedule_id)
    history = await client.schedule_history(schedule_id, limit=200)
    assert not [h for h in history if h["kind"] == "duplicate"], "a scheduler tried to fire a slot twice"
    skipped: set[float] = set()
    for h in history:
        if h["kind"] == "skipped":
            first, last = _ts(h["slot"]), _ts(h["last_slot"])
            assert h["count"] == int(last - first) + 1
            skipped.update(first + i for i in range(h["count"]))
    assert not skipped & set(fired), "a slot was both fired and skipped"
    expected = set(range(int(fired[0]), int(fired[-1]) + 1))
    assert {int(s) for s in fired} | {int(s) for s in skipped if fired[0] <= s <= fired[-1]} == expected
    # every fire the history recorded is a job, once
    recorded = [_ts(h["slot"]) for h in history if h["kind"] == "fired"]
    assert len(recorded) == len(set(recorded)) and set(recorded) <= set(fired)
    return fired, history


async def _count_at_least(client: Client, n: int) -> bool:
    return len(await _fired(client)) >= n


async def test_two_instances_enqueue_exactly_one_job_per_slot(
    tmp_path: Path, redis_url: str, client: Client, start_run: StartRun
) -> None:
    settings = make_settings(tmp_path, redis_url)
    config = {"ORCH_SCHEDULES": json.dumps([BEAT])}
    a = await _start(start_run, settings, tmp_path, "a", **config)
    b = await _start(start_run, settings, tmp_path, "b", **config)
    await wait_for(lambda: _count_at_least(client, 6), timeout_s=30)
    for inst in (a, b):
        assert await inst.proc.signal_and_wait(signal.SIGTERM) == 0
    fired, history = await _assert_accounted(client)
    assert len(fired) >= 6
    assert not [h for h in history if h["kind"] == "skipped"]  # one steady leader: nothing missed
    # the scheduler ran on one of them only
    leading = [i.name for i in (a, b) if "schedule(s) enabled" in i.proc.log()]
    assert len(leading) == 1, leading


async def test_killing_the_leader_hands_scheduling_over(
    tmp_path: Path, redis_url: str, client: Client, start_run: StartRun
) -> None:
    settings = make_settings(tmp_path, redis_url)
    config = {"ORCH_SCHEDULES": json.dumps([BEAT])}
    a = await _start(start_run, settings, tmp_path, "a", **config)
    b = await _start(start_run, settings, tmp_path, "b", **config)
    await wait_for(lambda: _count_at_least(client, 3), timeout_s=30)
    holder = (await client.redis.hget(Keys.leader, "instance")).decode()
    leader, other = (a, b) if holder == "a" else (b, a)

    await leader.proc.kill9()
    before = len(await _fired(client))
    # the lease expires (TTL) and the other instance takes it at its next step (TTL / 3): the
    # scheduler starts with it and fires the newest missed slot at once
    await wait_for(lambda: _count_at_least(client, before + 1), timeout_s=TTL_S * 3)
    await wait_for(lambda: _count_at_least(client, before + 3), timeout_s=10)
    assert await other.proc.signal_and_wait(signal.SIGTERM) == 0

    fired, _ = await _assert_accounted(client)
    assert "schedule(s) enabled" in other.proc.log()
    assert len(fired) >= before + 3


async def test_a_schedule_added_through_the_api_of_a_standby_fires_on_the_leader(
    tmp_path: Path, redis_url: str, client: Client, start_run: StartRun
) -> None:
    settings = make_settings(tmp_path, redis_url)
    a = await _start(start_run, settings, tmp_path, "a")
    await wait_for(lambda: client.redis.hget(Keys.leader, "instance"), timeout_s=10)
    b = await _start(start_run, settings, tmp_path, "b")
    assert (await client.redis.hget(Keys.leader, "instance")) == b"a"

    body = {**BEAT, "id": "added"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{b.port}/api/schedules", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as r,
    ):
        assert r.status == 201, await r.text()
    await wait_for(lambda: _fired(client, "added"), timeout_s=10)

    # b's /status shows what the leader published about it
    async def shown() -> Any:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{b.port}/status") as r:
            rows = {s["id"]: s for s in (await r.json()).get("schedules", [])}
        return rows.get("added", {}).get("last_job_id")

    assert (await wait_for(shown, timeout_s=10)).startswith("sched:added:")
    assert "schedule(s) enabled" not in b.proc.log()  # b never led: it only answered the API
    # b first: stopping the leader first would hand b the lease (and the scheduler) on its way out
    for inst in (b, a):
        assert await inst.proc.signal_and_wait(signal.SIGTERM) == 0


async def test_a_restart_of_the_only_instance_fires_no_slot_twice(
    tmp_path: Path, redis_url: str, client: Client, start_run: StartRun
) -> None:
    settings = make_settings(tmp_path, redis_url)
    config = {"ORCH_SCHEDULES": json.dumps([BEAT])}
    first = await _start(start_run, settings, tmp_path, "only", **config)
    await wait_for(lambda: _count_at_least(client, 3), timeout_s=30)
    assert await first.proc.signal_and_wait(signal.SIGTERM) == 0
    before = len(await _fired(client))
    again = await _start(start_run, settings, tmp_path, "only", **config)
    await wait_for(lambda: _count_at_least(client, before + 3), timeout_s=30)
    assert await again.proc.signal_and_wait(signal.SIGTERM) == 0
    await _assert_accounted(client)
