"""`orchestrator run` started before its Redis: it waits (one line per attempt), answers /live 200
and /health 503 meanwhile, then starts once Redis is up; with redis_connect_timeout_s it gives up."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import pytest

from orchestrator.client import Client, connect_redis
from tests.jobs.helpers import RunProcess, make_plugin, make_settings, wait_for
from tests.redis.servers import RedisProc
from tests.services import free_port


@pytest.mark.timeout(120)
async def test_run_waits_for_redis_then_starts(tmp_path: Path) -> None:
    make_plugin(tmp_path / "plugins")
    server = RedisProc(tmp_path / "redis")
    http_port = free_port()
    settings = make_settings(tmp_path, server.url, http_port=http_port)
    run = RunProcess(settings, tmp_path / "run.log")
    await run.start()
    base = f"http://127.0.0.1:{http_port}"
    try:
        await wait_for(lambda: "retrying in" in run.log())
        line = next(x for x in run.log().splitlines() if "retrying in" in x)
        assert f"redis: cannot connect to {server.url} (connection refused); retrying in" in line
        async with aiohttp.ClientSession() as http:

            async def probe(path: str) -> tuple[int, dict[str, object]] | None:
                try:
                    async with http.get(base + path) as r:
                        return r.status, await r.json()
                except aiohttp.ClientError:
                    return None

            assert await wait_for(lambda: probe("/live")) == (200, {"status": "ok"})
            status, body = await probe("/health") or (0, {})
            assert status == 503 and body["failing"] == ["redis"], body

            server.start()
            await wait_for(lambda: _ok(probe("/health")), timeout_s=60)
        async with Client(connect_redis(server.url), owns_redis=True) as client:
            await wait_for(client.queues)
            job = await client.trigger("probe", {"name": "late"})
            assert (await client.result(job.job_id, timeout_s=30))["state"] == "succeeded"
        assert await run.signal_and_wait(signal.SIGTERM) == 0, run.log()
        # no traceback while it waited (the drain's own "run() returned" report is not about Redis)
        waited = run.log().split("started: instance=")[0]
        assert waited.count("retrying in") >= 1
        assert "Traceback" not in waited and "redis.exceptions" not in run.log()
    finally:
        if run.proc is not None and run.proc.returncode is None:
            await run.kill9()
        server.stop()


async def _ok(probe: object) -> bool:
    result = await probe  # type: ignore[misc]
    return result is not None and result[0] == 200


async def test_redis_connect_timeout_ends_run_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    settings = make_settings(tmp_path, f"redis://127.0.0.1:{port}/0")
    run = RunProcess(settings, tmp_path / "run.log", ORCH_REDIS_CONNECT_TIMEOUT_S="1.5")
    await run.start()
    assert run.proc is not None
    assert await run.proc.wait() == 1
    log = run.log()
    assert "Traceback" not in log
    assert log.strip().splitlines()[-1] == (
        f"error: redis: cannot connect to redis://127.0.0.1:{port}/0 (connection refused) "
        "after waiting 1.5 s (redis_connect_timeout_s)"
    )
