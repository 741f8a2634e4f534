"""The schedules users see first: the README's example config and the repo's demo schedule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.client import Client, connect_redis
from orchestrator.config import load_settings
from orchestrator.plugins.build import build_registry
from tests.jobs.helpers import run_app, wait_for


def _readme_schedules_toml(repo_root: Path) -> str:
    text = (repo_root / "README.md").read_text()
    block = text.split("<!-- schedules (begin) -->", 1)[1].split("<!-- schedules (end) -->", 1)[0]
    match = re.search(r"```toml\n(.*?)```", block, re.DOTALL)
    assert match, "the README's schedules example is gone"
    return match.group(1)


async def test_the_readme_example_is_valid_against_the_example_plugins(
    repo_root: Path, tmp_path: Path, redis_url: str
) -> None:
    config = tmp_path / "example.toml"
    config.write_text(_readme_schedules_toml(repo_root))
    settings = load_settings(config, redis_url=redis_url, plugins_dir=repo_root / "plugins", state_dir=tmp_path)
    triggers = {s.id: (s.every, s.cron) for s in settings.schedules}
    # the seed's periodic jobs: every 30 s, every 5 min, hourly, daily at 01:00 and 02:00
    assert sorted(triggers.values(), key=str) == sorted(
        [(30.0, None), (300.0, None), (None, "0 * * * *"), (None, "0 1 * * *"), (None, "0 2 * * *")], key=str
    )
    registry = build_registry(settings, settings.venv_dir)
    await registry.load()
    redis = connect_redis(redis_url)
    try:
        client = Client.for_settings(settings, redis, registry)
        for spec in settings.schedules:  # plugin and params validate as an add would
            await client.add_schedule(spec.model_dump())
        assert len(await client.list_schedules()) == 5
    finally:
        await redis.aclose()


@pytest.mark.slow
async def test_the_demo_schedule_fires_within_a_minute(repo_root: Path, tmp_path: Path, redis_url: str) -> None:
    settings = load_settings(
        repo_root / "orchestrator.toml",
        redis_url=redis_url,
        plugins_dir=repo_root / "plugins",
        state_dir=tmp_path / "state",
        http_port=0,
        leader_ttl_s=2,
    )
    assert [s.id for s in settings.schedules] == ["demo-sync"]
    redis = connect_redis(redis_url)
    async with run_app(settings):
        client = Client.for_settings(settings, redis, None)

        async def demo_job() -> str | None:
            rows = await client.list(plugin="data_processor", limit=10)
            done = [r for r in rows if r["job_id"].startswith("sched:demo-sync:") and r["state"] == "succeeded"]
            return done[0]["job_id"] if done else None

        job_id = await wait_for(demo_job, timeout_s=45, interval_s=0.5)
        job = await client.status(job_id)
        assert job is not None and job["source"] == "schedule"
        assert job["result"]["result"]["synced_ids"] == [1]
    await redis.aclose()
