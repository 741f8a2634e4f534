"""The Lua scripts live in `.lua` files (orchestrator/redis/lua.py): every file names its KEYS,
ARGV and reply in its header, every script the stores register compiles in Redis and contains
only whole files, and no Python module under orchestrator/ holds Lua any more."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from arq.connections import ArqRedis
from redis.commands.core import AsyncScript

import orchestrator
from orchestrator.client import connect_redis
from orchestrator.cluster.heartbeat import Heartbeat
from orchestrator.cluster.lease import LeaderLease
from orchestrator.jobs.model import Keys
from orchestrator.jobs.store import JobStore
from orchestrator.redis import scripts as lua
from orchestrator.schedules.store import COUNTERS, STATE_FIELDS, HistoryEntry, Outcome, ScheduleStore, field_of
from orchestrator.workflows.store import WorkflowStore

PACKAGE = Path(orchestrator.__file__).parent
LUA_FILES = sorted(PACKAGE.rglob("*.lua"))
# 18 scripts (jobs 8, cluster 4, schedules 3, workflows 3) and 4 shared snippets (the fence, the
# cursor, the throttles, the workflow step of jobs/lua/workflow.lua)
EXPECTED_FILES = 22
SNIPPETS = 4

# `-- KEYS[1]  meaning`, `-- ARGV[..]  meaning`, `-- KEYS     none of its own: ...`
_HEADER_ITEM = re.compile(r"-- (KEYS|ARGV)(\[[0-9.]+\])?\s+\S")
_DOCUMENTED = re.compile(r"-- (KEYS|ARGV)\[(\d+)")
_INDEXED = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")
_UNPACKED = re.compile(r"\bunpack\((KEYS|ARGV), (\d+)(?:, (\d+))?\)")


def _header(text: str) -> list[str]:
    lines = text.splitlines()
    end = next((i for i, line in enumerate(lines) if not line.startswith("--")), len(lines))
    return lines[:end]


def _code(text: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in text.splitlines())


def _used_indices(code: str) -> set[tuple[str, int]]:
    """Every KEYS/ARGV position the code reads by number (`KEYS[2]`, `unpack(ARGV, 1, 9)`, `unpack(ARGV, 10)`)."""
    used = {(kind, int(n)) for kind, n in _INDEXED.findall(code)}
    for kind, first, last in _UNPACKED.findall(code):
        used |= {(kind, i) for i in range(int(first), int(last or first) + 1)}
    return used


def test_the_scripts_are_lua_files_in_the_package() -> None:
    assert len(LUA_FILES) == EXPECTED_FILES, [str(p.relative_to(PACKAGE)) for p in LUA_FILES]


@pytest.mark.parametrize("path", LUA_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_lua_file_names_its_keys_argv_and_reply_in_its_header(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    header = _header(text)
    assert header, f"{path.name} does not start with a header comment"
    kinds = {m.group(1) for line in header if (m := _HEADER_ITEM.match(line))}
    missing = {"KEYS", "ARGV"} - kinds
    assert not missing, f"{path.name}: the header has no {missing} line (one line each, with meaning)"
    assert any(line.startswith("-- Returns ") for line in header), f"{path.name}: the header says nothing of the reply"
    documented = {(kind, int(n)) for line in header for kind, n in _DOCUMENTED.findall(line)}
    undocumented = _used_indices(_code(text)) - documented
    assert not undocumented, f"{path.name} reads positions its header does not name: {sorted(undocumented)}"


def test_no_python_module_holds_lua() -> None:
    holding = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "redis.call(" in p.read_text()]
    assert holding == []


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[ArqRedis]:
    client = connect_redis(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def _registered(redis: ArqRedis) -> list[AsyncScript]:
    """Every script the five stores register, as they register it."""
    store = JobStore(redis, result_ttl_s=60)
    owners = [
        store,
        LeaderLease(redis, "lua-test", ttl_s=3),
        Heartbeat(store, "lua-test", {}, interval_s=1, ttl_s=3),
        ScheduleStore(redis),
        WorkflowStore(redis, result_ttl_s=60),
    ]
    return [value for owner in owners for value in vars(owner).values() if isinstance(value, AsyncScript)]


async def test_every_composed_script_loads_into_redis(redis: ArqRedis) -> None:
    scripts = _registered(redis)
    assert len(scripts) == EXPECTED_FILES - SNIPPETS
    for script in scripts:
        text = script.script.decode() if isinstance(script.script, bytes) else script.script
        assert not re.search(r"__[A-Z_]+__", text), "a placeholder was left in the script"
        sha = await redis.script_load(text)  # compiles it: a syntax error fails here
        assert sha == script.sha
    texts = [s.script.decode() if isinstance(s.script, bytes) else s.script for s in scripts]
    unused = [str(p.relative_to(PACKAGE)) for p in LUA_FILES if not any(p.read_text() in t for t in texts)]
    assert unused == [], "every .lua file goes whole into a registered script"


@pytest.mark.parametrize("instance", ["host-123-abcdef", "with:colons", "x"])
async def test_the_push_pattern_reads_the_instance_back_from_the_one_channel_format(
    redis: ArqRedis, instance: str
) -> None:
    pattern = lua.pattern(Keys.push_channel_format, "instance")
    channel = Keys.push_channel(instance, "0a1b2c3d")
    read = await redis.eval("return string.match(ARGV[1], ARGV[2])", 0, channel, pattern)  # type: ignore[misc]
    assert read == instance.encode()
    assert await redis.eval("return string.match(ARGV[1], ARGV[2])", 0, "orch:wake:q", pattern) is None  # type: ignore[misc]


async def test_a_deleted_schedule_takes_its_state_counters_and_history_along(redis: ArqRedis) -> None:
    """put.lua names the fields to delete from the Python constants (STATE_FIELDS, COUNTERS, field_of)."""
    store = ScheduleStore(redis)
    outcome = Outcome(state={field_of("gone", name): "1" for name in STATE_FIELDS} | {field_of("kept", "next"): "2"})
    for counter in COUNTERS:
        outcome.count("gone", counter)
    outcome.add("gone", HistoryEntry("manual", 1.0, 1.0))
    await store.record(outcome)
    assert (await store.counters())["gone"] == dict.fromkeys(COUNTERS, 1)
    await store.put([("gone", None)])
    assert await store.state() == {"kept": {"next": "2"}}
    assert await store.counters() == {}
    assert await store.history("gone") == []
