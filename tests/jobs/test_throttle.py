"""Throttles across a cluster: three real `orchestrator run` processes on one Redis, started once for
the module, each test on plugins of its own (so their counts never mix).

What runs at once is read from the plugin side: every run writes a start and an end line with
its wall-clock time (one host: one clock), and the intervals are swept for the largest overlap,
which is exact where sampling would miss short peaks. Starts per window (the rate) are read from
the records' `started_at`, written by the claim script itself.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from orchestrator.client import Client, connect_redis
from orchestrator.errors import QueueFull
from orchestrator.jobs.submit import JobRequest
from orchestrator.jobs.throttle import PREFIX
from tests.jobs.helpers import cli, cli_env, make_plugin, make_settings, read_events, wait_for
from tests.services import RedisServer, free_port

TTL_S = 2.0
TOKEN = "throttle-test-token"
CONFIG = """
[plugins.lim2.throttle]
concurrency = 2            # over the manifest's 5: config wins

[plugins.rated.throttle]
rate = "20/s"

[plugins.live.throttle]
concurrency = 3
"""
# plugin -> its manifest's throttle (None: none)
PLUGINS: dict[str, dict[str, Any] | None] = {
    "lim2": {"concurrency": 5},
    "rated": None,
    "peruser": {"key": "{name}", "concurrency": 1},
    "hol": {"concurrency": 1},
    "free": None,
    "capped": {"key": "{name}", "max_queued": 5},
    "live": None,
    "crash": {"concurrency": 2},
    "reread": None,
}


class Cluster:
    def __init__(self, tmp: Path, url: str) -> None:
        self.tmp, self.url = tmp, url
        self.settings = make_settings(tmp, url, instance_ttl_s=TTL_S)
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, count: int) -> None:
        config = self.tmp / "orchestrator.toml"
        config.write_text(CONFIG)
        for i in range(count):
            port = free_port()
            env = cli_env(
                self.settings,
                ORCH_CONFIG=str(config),
                ORCH_INSTANCE_ID=f"i{i}",
                ORCH_HTTP_PORT=str(port),
                ORCH_INSTANCE_TTL_S=str(TTL_S),
                ORCH_LEADER_TTL_S=str(TTL_S),
                ORCH_POLL_DELAY_S="0.5",
                ORCH_API_TOKEN=TOKEN,
            )
            with (self.tmp / f"i{i}.log").open("ab") as log:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "orchestrator", "run"],
                        env=env,
                        stdout=log,
                        stderr=log,
                        stdin=subprocess.DEVNULL,
                    )
                )
            self.ports.append(port)
        deadline = time.monotonic() + 30
        for port in self.ports:
            while not _answers(port):
                assert time.monotonic() < deadline, "an instance did not come up"
                time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three instances for the whole module (a sync fixture: it starts processes, no event loop)."""
    if not redis_server.running:
        redis_server.start()
    subprocess.run(["redis-cli", "-u", redis_server.url, "flushall"], check=True, capture_output=True)
    tmp = tmp_path_factory.mktemp("throttle")
    for name, throttle in PLUGINS.items():
        make_plugin(tmp / "plugins", name, **({"throttle": throttle} if throttle else {}))
    c = Cluster(tmp, redis_server.url)
    try:
        c.start(3)
        yield c
    finally:
        c.stop()


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[Client]:
    c = Client(connect_redis(cluster.url), owns_redis=True)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def redis(cluster: Cluster) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(cluster.url)
    try:
        yield r
    finally:
        await r.aclose()


def _intervals(events: list[dict[str, Any]]) -> list[tuple[float, float, str]]:
    starts = {e["job"]: e for e in events if e["event"] == "start"}
    return [(starts[e["job"]]["t"], e["t"], e["name"]) for e in events if e["event"] == "end" and e["job"] in starts]


def _most_at_once(intervals: list[tuple[float, float, str]]) -> int:
    points = sorted([(s, 1) for s, _, _ in intervals] + [(e, -1) for _, e, _ in intervals], key=lambda p: (p[0], p[1]))
    most = now = 0
    for _, step in points:
        now += step
        most = max(most, now)
    return most


async def _trigger(client: Client, plugin: str, n: int, **params: Any) -> list[str]:
    return [(await client.trigger(plugin, params)).job_id for _ in range(n)]


async def _all_done(client: Client, ids: list[str]) -> bool:
    states = await client.store.states_of(ids)
    return all(s == "succeeded" for s in states)


async def test_a_limit_of_2_holds_across_three_instances_and_every_job_finishes(
    cluster: Cluster, client: Client
) -> None:
    record = cluster.tmp / "lim2.jsonl"
    ids = await _trigger(client, "lim2", 100, sleep=0.02, record=str(record))
    # a job held back says why, in its record
    waiting = await wait_for(lambda: _a_waiting_reason(client, ids), timeout_s=20)
    assert waiting == "waiting: concurrency limit 2/2"
    await wait_for(lambda: _all_done(client, ids), timeout_s=40, interval_s=0.2)
    intervals = _intervals(read_events(record))
    assert len(intervals) == 100
    assert _most_at_once(intervals) == 2  # never more, and the limit is used
    instances = {r.instance for r in await client.store.get_many(ids) if r is not None}
    assert len(instances) > 1, "the jobs were shared by the instances"


async def _a_waiting_reason(client: Client, ids: list[str]) -> str | None:
    for r in await client.store.get_many(ids):
        if r is not None and r.state == "queued" and r.waiting:
            return r.waiting
    return None


async def test_a_rate_of_20_per_second_across_three_instances(cluster: Cluster, client: Client) -> None:
    # one batch: every job is waiting before the first start, so arrivals never pace the starts
    ids = (await client.batch([{"plugin": "rated", "params": {}}] * 75))["job_ids"]
    await wait_for(lambda: _all_done(client, ids), timeout_s=20, interval_s=0.2)
    starts = sorted(r.started_at for r in await client.store.get_many(ids) if r is not None and r.started_at)
    window = [t for t in starts if t < starts[0] + 3.0]
    # 20/s for 3 s: 60, and one more for the half interval of credit the first start leaves
    gaps = [round((b - a) * 1000) for a, b in itertools.pairwise(starts)]
    assert 58 <= len(window) <= 62, (len(window), gaps)


async def test_per_key_limits_let_two_users_progress_in_parallel(cluster: Cluster, client: Client) -> None:
    record = cluster.tmp / "peruser.jsonl"
    ids = [(await client.trigger("peruser", {"name": u, "sleep": 0.3, "record": str(record)})).job_id for u in "ab" * 3]
    await wait_for(lambda: _all_done(client, ids), timeout_s=20, interval_s=0.1)
    intervals = _intervals(read_events(record))
    assert _most_at_once([i for i in intervals if i[2] == "a"]) == 1
    assert _most_at_once([i for i in intervals if i[2] == "b"]) == 1
    assert _most_at_once(intervals) == 2  # a's and b's ran side by side


async def test_held_jobs_block_nobody_behind_them(cluster: Cluster, client: Client) -> None:
    held = await _trigger(client, "hol", 60, sleep=0.3)  # one at a time: 18 s of work or more
    free = await _trigger(client, "free", 10)
    await wait_for(lambda: _all_done(client, free), timeout_s=20, interval_s=0.05)
    states = await client.store.states_of(held)
    # ordering, not timing: the ten were done while most of the held ones had not even started
    assert states.count("queued") >= 30, states
    for job_id in held:
        await client.cancel(job_id)


async def test_max_queued_refuses_the_sixth_per_key_and_a_batch_whole(
    cluster: Cluster, client: Client, redis: aioredis.Redis
) -> None:
    for _ in range(5):
        await client.trigger("capped", {"name": "a"}, defer_s=300)
    with pytest.raises(QueueFull) as refused:
        await client.trigger("capped", {"name": "a"}, defer_s=300)
    assert str(refused.value) == "queue full: plugin 'capped' has 5 job(s) waiting for name=a (max_queued 5)"
    await client.trigger("capped", {"name": "b"}, defer_s=300)  # the other key is not full
    # the CLI: exit 1, one line; HTTP: 429 with the same words
    res = await cli(cluster.settings, "trigger", "capped", "-p", "name=a", "--defer", "5m")
    assert (res.rc, res.err.strip().splitlines()) == (1, [f"error: {refused.value}"])
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{cluster.ports[0]}/api/jobs",
            json={"plugin": "capped", "params": {"name": "a"}},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as r,
    ):
        assert (r.status, (await r.json())["error"]) == (429, str(refused.value))
    # a batch that would cross the cap for one key writes nothing, not even its other key's jobs
    before = await redis.dbsize()
    with pytest.raises(QueueFull):
        await client.batch(
            [{"plugin": "capped", "params": {"name": "c"}}] + [{"plugin": "capped", "params": {"name": "b"}}] * 5
        )
    assert await redis.dbsize() == before
    assert await redis.zcard(f"{PREFIX}wait:capped:name=c") == 0
    # schedules and change capture are never refused: past the cap, queued and counted
    submitter = await client.submitter()
    job = await submitter.prepare(JobRequest("capped", {"name": "a"}, defer_s=300, source="schedule"))
    assert await submitter.write_many([job]) == [1]
    use = (await client.throttles())["capped"]
    assert (use["refused"], use["over_cap"]) >= (2, 1)


async def test_a_limit_lowered_at_run_time_lets_running_jobs_finish(
    cluster: Cluster, client: Client, redis: aioredis.Redis
) -> None:
    record = cluster.tmp / "live.jsonl"
    first = await _trigger(client, "live", 3, sleep=1.5, record=str(record))
    await wait_for(lambda: _started(record, 3), timeout_s=20)
    res = await cli(cluster.settings, "plugins", "throttle", "live", "--concurrency", "1")
    assert res.rc == 0, res.err
    assert res.out.startswith("live: concurrency 1 (set live)")
    later = await _trigger(client, "live", 3, sleep=0.1, record=str(record))
    await wait_for(lambda: _all_done(client, first + later), timeout_s=20, interval_s=0.1)
    events = read_events(record)
    intervals = _intervals(events)
    ends_of_first = [e["t"] for e in events if e["event"] == "end" and e["job"] in first]
    assert len(ends_of_first) == 3  # the running ones were not stopped
    later_starts = [e["t"] for e in events if e["event"] == "start" and e["job"] in later]
    assert min(later_starts) > max(ends_of_first)  # nothing started until the count fell below 1
    assert _most_at_once([i for i in intervals if i[0] >= min(later_starts)]) == 1
    # every instance reads the one stored limit
    assert await redis.hget(f"{PREFIX}limits:live", "concurrency") == b"1"


def _started(record: Path, n: int) -> bool:
    return sum(1 for e in read_events(record) if e["event"] == "start") >= n


async def test_status_and_metrics_show_each_limit(cluster: Cluster, client: Client) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{cluster.ports[1]}/status") as r:
            status = await r.json()
        async with http.get(f"http://127.0.0.1:{cluster.ports[1]}/metrics") as r:
            metrics = await r.text()
    assert status["throttles"]["lim2"]["limits"] == {"concurrency": 2}
    assert status["throttles"]["lim2"]["throttled"] > 0
    assert 'orchestrator_throttle_held_total{plugin="lim2"}' in metrics
    assert 'orchestrator_throttle_refused_total{plugin="capped"}' in metrics
    assert 'orchestrator_throttle_limit{limit="concurrency",plugin="lim2"} 2.0' in metrics
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: scripts/test installs Debian's prometheus package")
    check = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    said, _ = await check.communicate(metrics.encode())
    assert check.returncode == 0, said.decode()
    # the API's view of one plugin, and a live change through it
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"http://127.0.0.1:{cluster.ports[1]}/api/plugins/free/throttle"
    async with aiohttp.ClientSession() as http:
        async with http.put(url, json={"rate": "5/x"}, headers=headers) as r:
            assert r.status == 400
            assert "rate '5/x'" in (await r.json())["error"]
        async with http.put(url, json={"max_queued": 1000}, headers=headers) as r:
            assert r.status == 200
            assert (await r.json())["limits"] == {"max_queued": 1000}
        async with http.put(url, json={"max_queued": None}, headers=headers) as r:
            assert (await r.json())["limits"] is None
    assert json.dumps(status)  # plain JSON


async def test_a_config_change_applies_at_a_plugin_reload_without_a_restart(
    cluster: Cluster, redis: aioredis.Redis
) -> None:
    assert await redis.exists(f"{PREFIX}limits:reread") == 0
    config = cluster.tmp / "orchestrator.toml"
    config.write_text(CONFIG + '\n[plugins.reread.throttle]\nconcurrency = 7\nrate = "3/m"\n')
    res = await cli(cluster.settings, "plugins", "reload")
    assert res.rc == 0, res.err

    async def applied() -> bool:
        return await redis.hmget(f"{PREFIX}limits:reread", ["concurrency", "rate"]) == [b"7", b"3/m"]

    await wait_for(applied, timeout_s=15)
    # a live change is left alone by the reload
    assert await redis.hget(f"{PREFIX}limits:live", "concurrency") == b"1"


async def test_kill_9_of_an_instance_holding_limited_jobs_gives_their_slots_back(
    cluster: Cluster, client: Client, redis: aioredis.Redis
) -> None:
    record = cluster.tmp / "crash.jsonl"
    long = await _trigger(client, "crash", 2, sleep=2.0, record=str(record))
    await wait_for(lambda: _started(record, 2), timeout_s=20)
    owner = next(r.instance for r in await client.store.get_many(long) if r is not None)
    assert owner is not None
    victim = cluster.procs[int(owner.removeprefix("i"))]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    # its jobs are released (heartbeat expiry) and run again elsewhere; the count comes back
    await wait_for(lambda: _all_done(client, long), timeout_s=30, interval_s=0.2)
    assert await redis.zcard(f"{PREFIX}run:crash:") == 0
    after = time.time()
    more = await _trigger(client, "crash", 4, sleep=0.5, record=str(record))
    await wait_for(lambda: _all_done(client, more), timeout_s=20, interval_s=0.1)
    intervals = [i for i in _intervals(read_events(record)) if i[0] >= after]
    assert _most_at_once(intervals) == 2  # the limit is reached again: no slot leaked
