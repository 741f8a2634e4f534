"""`orchestrator cdc ...` as a user runs it (a real CLI process, real MariaDB and Redis)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis

from orchestrator.config import Settings
from orchestrator.jobs.model import Keys
from tests.cdc.helpers import capture, cdc_settings, run_env, sql
from tests.cdc.test_capture import ORDERS
from tests.jobs.helpers import CliResult, cli

RULES: list[dict[str, Any]] = [
    {
        "name": "paid",
        "table": "orders",
        "plugins": ["recorder"],
        "conditions": {"status": "paid"},
        "params": {"tag": "p"},
    },
    {"name": "all", "table": "orders", "triggers": ["recorder", "other"]},
]


async def cdc(settings: Settings, *args: str) -> CliResult:
    return await cli(settings, "cdc", *args, **run_env(settings))


async def triggers(settings: Settings) -> list[str]:
    rows = await sql(settings, "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'testdb'")
    return sorted(r[0] for r in rows)


async def job_count(redis_url: str) -> int:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        return int(await redis.zcard(Keys.all_jobs))
    finally:
        await redis.aclose()


async def test_install_is_idempotent_and_dry_run_only_shows_the_sql(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    settings = cdc_settings(tmp_path, redis_url, mysql_url, RULES)
    await sql(settings, ORDERS)
    dry = await cdc(settings, "install", "--dry-run")
    assert dry.rc == 0, dry.err
    assert "CREATE TABLE IF NOT EXISTS `testdb`.`orch_changelog`" in dry.out
    assert dry.out.count("CREATE OR REPLACE TRIGGER") == 3 and "AFTER DELETE ON `testdb`.`orders`" in dry.out
    assert await triggers(settings) == []
    assert await sql(settings, "SHOW TABLES LIKE 'orch_changelog'") == []

    first = await cdc(settings, "install", "--json")
    assert first.rc == 0, first.err
    assert [s["action"] for s in first.json()] == ["create", "create", "create", "create"]
    assert await triggers(settings) == ["orch_cdc_ad_orders", "orch_cdc_ai_orders", "orch_cdc_au_orders"]
    again = await cdc(settings, "install", "--json")
    assert [s["action"] for s in again.json()] == ["unchanged"] * 4
    # a new column: the triggers are replaced (in one statement each), the changelog kept
    await sql(settings, "ALTER TABLE orders ADD COLUMN extra INT")
    assert [s["action"] for s in (await cdc(settings, "install", "--json")).json()][1:] == ["replace"] * 3

    dry_un = await cdc(settings, "uninstall", "--dry-run")
    assert dry_un.out.count("DROP TRIGGER IF EXISTS") == 3 and len(await triggers(settings)) == 3
    gone = await cdc(settings, "uninstall", "--drop-changelog")
    assert gone.rc == 0 and await triggers(settings) == []
    assert await sql(settings, "SHOW TABLES LIKE 'orch_changelog'") == []


async def test_cdc_test_matches_without_enqueuing(tmp_path: Path, redis_url: str, mysql_url: str) -> None:
    settings = cdc_settings(tmp_path, redis_url, mysql_url, RULES)
    row = json.dumps({"id": 7, "status": "paid"})
    hit = await cdc(settings, "test", "paid", "--op", "UPDATE", "--row", row, "--before", '{"id": 7}', "--json")
    assert hit.rc == 0, hit.err
    result = hit.json()
    assert result["matched"] is True and result["enqueued"] == 0
    assert {"check": "status == 'paid'", "passed": True} in result["checks"]
    assert [(j["plugin"], j["params"], j["queue"]) for j in result["jobs"]] == [("recorder", {"tag": "p"}, "default")]
    miss = await cdc(settings, "test", "paid", "--op", "INSERT", "--row", '{"status": "new"}')
    assert miss.rc == 0 and "✗ status == 'paid'" in miss.out and "no match" in miss.out
    both = (await cdc(settings, "test", "all", "--op", "DELETE", "--row", row, "--json")).json()
    assert [j["plugin"] for j in both["jobs"]] == ["recorder", "other"]
    assert await job_count(redis_url) == 0
    unknown = await cdc(settings, "test", "nope", "--op", "INSERT", "--row", "{}")
    assert unknown.rc == 1 and "no cdc rule 'nope'" in unknown.err


async def test_rules_enable_disable_and_status_without_a_leader(tmp_path: Path, redis_url: str, mysql_url: str) -> None:
    settings = cdc_settings(tmp_path, redis_url, mysql_url, RULES)
    rules = (await cdc(settings, "rules", "--json")).json()
    assert [(r["name"], r["enabled"], r["plugins"]) for r in rules] == [
        ("paid", True, ["recorder"]),
        ("all", True, ["recorder", "other"]),
    ]
    assert (await cdc(settings, "disable", "paid")).out.strip() == "paid disabled"
    assert [r["enabled"] for r in (await cdc(settings, "rules", "--json")).json()] == [False, True]
    status = (await cdc(settings, "status", "--json")).json()
    assert status["enabled"] is False and "no leader" in status["reason"]
    assert [(r["name"], r["enabled"], r["delivered"]) for r in status["rules"]] == [
        ("paid", False, 0),
        ("all", True, 0),
    ]
    assert (await cdc(settings, "enable", "paid")).rc == 0
    assert (await cdc(settings, "disable", "nope")).rc == 1


async def test_a_disabled_rule_delivers_nothing_until_enabled(tmp_path: Path, redis_url: str, mysql_url: str) -> None:
    settings = cdc_settings(tmp_path, redis_url, mysql_url, RULES)
    await sql(settings, ORDERS)
    assert (await cdc(settings, "install")).rc == 0
    assert (await cdc(settings, "disable", "paid")).rc == 0
    async with capture(settings) as rig:
        await sql(settings, "INSERT INTO orders (status) VALUES ('paid')")
        await rig.settle()
        assert sorted(await rig.jobs()) == ["cdc:all:1:other", "cdc:all:1:recorder"]
        assert (await cdc(settings, "enable", "paid")).rc == 0
        await sql(settings, "INSERT INTO orders (status) VALUES ('paid')")
        await rig.settle()
        assert "cdc:paid:2:recorder" in await rig.jobs()
        status = (await cdc(settings, "status", "--json")).json()
    assert status["rules"][0]["delivered"] == 1  # as counted in Redis (the rig publishes no live status)


async def test_replay_redelivers_from_a_change_id_with_fresh_job_ids(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    settings = cdc_settings(tmp_path, redis_url, mysql_url, RULES[:1])
    await sql(settings, ORDERS)
    assert (await cdc(settings, "install")).rc == 0
    async with capture(settings) as rig:
        await sql(settings, *(["INSERT INTO orders (status) VALUES ('paid')"] * 3))
        await rig.settle()
        assert len(await rig.jobs()) == 3
    replay = await cdc(settings, "replay", "paid", "--from", "2", "--json")
    assert replay.rc == 0, replay.err
    result = replay.json()
    assert (result["changes"], result["enqueued"], result["upto"]) == (2, 2, 3)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        ids = sorted(i.decode() for i in await redis.zrange(Keys.all_jobs, 0, -1))
    finally:
        await redis.aclose()
    tag = result["tag"]
    assert ids == sorted(
        [f"cdc:paid:{i}:recorder" for i in (1, 2, 3)] + [f"cdc:paid:{i}-{tag}:recorder" for i in (2, 3)]
    )


async def test_snapshot_enqueues_existing_rows_in_key_order_and_resumes(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    rules = [{"name": "snap", "table": "orders", "plugins": ["recorder"], "conditions": {"status": "paid"}}]
    settings = cdc_settings(tmp_path, redis_url, mysql_url, rules)
    await sql(settings, ORDERS)
    values = ", ".join(f"('{'paid' if i % 2 else 'new'}')" for i in range(1, 1201))
    await sql(settings, f"INSERT INTO orders (status) VALUES {values}")
    redis = aioredis.Redis.from_url(redis_url)
    try:
        # an interrupted snapshot: its resume point was written with its last chunk of jobs
        await redis.hset("orch:cdc:snapshot:snap", mapping={"id": "42", "where": "id > 100", "last_pk": "[700]"})
        resumed = await cdc(settings, "snapshot", "snap", "--where", "id > 100", "--json")
        assert resumed.rc == 0, resumed.err
        assert resumed.json() == {"rule": "snap", "snapshot_id": "42", "resumed": True, "rows": 500, "enqueued": 250}
        ids = [i.decode() for i in await redis.zrange(Keys.all_jobs, 0, -1)]
        assert sorted(ids) == sorted(f"cdc:snap:s42-{i}:recorder" for i in range(701, 1201, 2))
        record = json.loads(await redis.hget(Keys.job(ids[0]), "context"))
        assert record["change_event"]["operation"] == "INSERT" and record["change_event"]["before"] is None
        fresh = (await cdc(settings, "snapshot", "snap", "--json")).json()
        assert fresh["resumed"] is False and fresh["rows"] == 1200 and fresh["enqueued"] == 600
    finally:
        await redis.aclose()


async def test_a_wrong_database_password_is_one_line_without_a_traceback(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    secret = "wr0ng-s3cret"
    parts = urlsplit(mysql_url)
    bad = urlunsplit(parts._replace(netloc=f"{parts.username or 'root'}:{secret}@{parts.hostname}:{parts.port}"))
    settings = cdc_settings(tmp_path, redis_url, bad, RULES)
    for args in (("install", "--dry-run"), ("snapshot", "paid")):
        r = await cdc(settings, *args)
        assert r.rc == 1, (args, r.out, r.err)
        assert "Traceback" not in r.err and secret not in r.err + r.out
        (line,) = r.err.strip().splitlines()
        assert "cannot connect" in line and "1045" in line, line
