"""`orchestrator schedules ...` as a real subprocess: exit codes, nothing stored on a refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import Settings
from tests.jobs.helpers import cli, make_plugin, make_settings


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    make_plugin(tmp_path / "plugins")
    return make_settings(tmp_path, redis_url)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--plugin", "probe", "--cron", "0 25 * * *"], "not a valid 5-field cron"),
        (["--plugin", "nope", "--every", "30s"], "unknown or invalid plugin 'nope'"),
        (["--plugin", "probe", "--every", "30s", "-p", "sleep=long"], "invalid parameters for plugin 'probe'"),
        (["--plugin", "probe", "--every", "30s", "-p", "undeclared=1"], "undeclared"),
        (["--plugin", "probe", "--cron", "0 2 * * *", "--timezone", "Nowhere/City"], "unknown"),
    ],
)
async def test_add_refuses_with_exit_2_and_stores_nothing(settings: Settings, args: list[str], reason: str) -> None:
    result = await cli(settings, "schedules", "add", "--id", "s1", *args)
    assert result.rc == 2, result
    assert reason in " ".join(result.err.split())
    listed = await cli(settings, "schedules", "list", "--json")
    assert listed.rc == 0 and listed.json() == []


async def test_add_list_pause_resume_run_history_remove(settings: Settings) -> None:
    added = await cli(
        settings, "schedules", "add", "--id", "nightly", "--plugin", "probe", "--cron", "0 2 * * *",
        "--timezone", "Europe/Berlin", "-p", "name=007", "-p", "sleep=0.5", "--json",
    )  # fmt: skip
    assert added.rc == 0, added
    row = added.json()
    # a declared string stays a string; a number parses
    assert row["params"] == {"name": "007", "sleep": 0.5}
    assert (row["cron"], row["timezone"], row["enabled"]) == ("0 2 * * *", "Europe/Berlin", True)

    table = await cli(settings, "schedules", "list")
    assert table.rc == 0 and "nightly" in table.out and "cron 0 2 * * * (Europe/Berlin)" in table.out

    assert (await cli(settings, "schedules", "pause", "nightly")).out.strip() == "nightly paused"
    assert (await cli(settings, "schedules", "show", "nightly", "--json")).json()["enabled"] is False
    assert (await cli(settings, "schedules", "resume", "nightly")).rc == 0

    ran = await cli(settings, "schedules", "run", "nightly")
    assert ran.rc == 0 and ran.out.startswith("sched:nightly:run-")
    job = await cli(settings, "status", ran.out.strip(), "--json")
    assert job.json()["source"] == "schedule"
    history = await cli(settings, "schedules", "history", "nightly", "--json")
    assert [(h["kind"], h["job_id"], h["state"]) for h in history.json()] == [("manual", ran.out.strip(), "queued")]

    listed = (await cli(settings, "schedules", "list", "--json")).json()
    assert [(r["id"], r["last_job_id"], r["last_state"]) for r in listed] == [("nightly", ran.out.strip(), "queued")]

    assert (await cli(settings, "schedules", "remove", "nightly")).rc == 0
    missing = await cli(settings, "schedules", "remove", "nightly")
    assert missing.rc == 1 and "no schedule 'nightly'" in missing.err


async def test_add_an_existing_id_needs_replace(settings: Settings) -> None:
    base = ["schedules", "add", "--id", "x", "--plugin", "probe", "--every"]
    assert (await cli(settings, *base, "30s")).rc == 0
    again = await cli(settings, *base, "1m")
    assert again.rc == 2 and "exists" in again.err
    assert (await cli(settings, *base, "1m", "--replace")).rc == 0
    assert (await cli(settings, "schedules", "show", "x", "--json")).json()["every"] == "1m"
