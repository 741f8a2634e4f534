"""The migration guide's worked example (docs/migrating.md): its orchestrator.toml loads, its five
schedules appear in `schedules list` once an instance ran with it, and its rules in `cdc rules`."""

from __future__ import annotations

import json
import re
import signal
import tomllib
from pathlib import Path

from tests.conftest import REPO_ROOT
from tests.jobs.conftest import StartRun
from tests.jobs.helpers import cli, make_settings, wait_for

EXAMPLE = REPO_ROOT / "docs" / "examples" / "background-tasks.toml"


def test_the_guide_shows_the_example_file() -> None:
    guide = (REPO_ROOT / "docs" / "migrating.md").read_text()
    block = re.search(r"```toml\n(.*?)```", guide.split("## Worked example", 1)[1], re.DOTALL)
    assert block is not None
    assert tomllib.loads(block.group(1)) == tomllib.loads(EXAMPLE.read_text())


async def test_the_example_loads_and_its_schedules_and_rules_are_listed(
    tmp_path: Path, redis_url: str, repo_root: Path, start_run: StartRun
) -> None:
    settings = make_settings(tmp_path, redis_url, plugins_dir=repo_root / "plugins")
    env = {"ORCH_QUEUES": "", "ORCH_RETRY_BACKOFF_S": "", "ORCH_KILL_GRACE_S": "", "ORCH_SHUTDOWN_GRACE_S": "5"}
    r = await cli(settings, "--config", str(EXAMPLE), "config", "--json", **env)
    assert r.rc == 0, r.err
    config = r.json()
    assert set(config["queues"]) == {"default", "warehouse", "statistics", "access_log", "minimap", "migration"}
    assert (config["job_timeout_s"], config["kill_grace_s"], config["max_retries"]) == (1500, 300, 3)

    r = await cli(settings, "--config", str(EXAMPLE), "cdc", "rules", "--json", **env)
    assert r.rc == 0, r.err
    assert {rule["name"]: rule["plugins"] for rule in r.json()} == {
        "teacher_sync": ["data_processor"],
        "teacher_index": ["es_indexer"],
    }

    run = await start_run(settings, tmp_path / "run.log", ORCH_CONFIG=str(EXAMPLE), **env)
    wanted = {"access-log-flush", "statistics-refresh", "minimap-rebuild", "warehouse-sync", "nightly-migration"}

    async def listed() -> dict[str, dict[str, object]] | None:
        r = await cli(settings, "schedules", "list", "--json")
        rows = {row["id"]: row for row in json.loads(r.out or "[]")} if r.rc == 0 else {}
        return rows if wanted <= set(rows) else None

    rows = await wait_for(listed, timeout_s=30, interval_s=0.3)
    assert rows["warehouse-sync"]["cron"] == "0 1 * * *" and rows["warehouse-sync"]["timezone"] == "Asia/Shanghai"
    assert rows["access-log-flush"]["every"] == "30s" and rows["access-log-flush"]["next_run_at"]
    assert await run.signal_and_wait(signal.SIGTERM) == 0, run.log()
