"""Definitions: validation before anything is stored, the seed's dict shape, config schedules
re-read at start with runtime changes reported, and the slot arithmetic itself."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.config import load_settings
from orchestrator.errors import ConfigError, JobError, NotFoundError, ParamsError
from orchestrator.schedules.model import ScheduleSpec, parse_every, parse_spec
from orchestrator.schedules.scheduler import sync_config
from orchestrator.schedules.store import SchedKeys
from tests.schedules.conftest import Rig


@pytest.mark.parametrize(
    ("definition", "error", "reason"),
    [
        ({"cron": "61 * * * *"}, JobError, "not a valid 5-field cron"),
        ({"cron": "0 0 30 2 *"}, JobError, "never matches"),
        ({"cron": "* * * * * *"}, JobError, "not a valid 5-field cron"),
        ({"every": "0.5s"}, JobError, "from 1s to 366d"),
        ({"every": "400d"}, JobError, "from 1s to 366d"),
        ({"every": "1m", "timezone": "x" * 300}, JobError, "unknown"),
        ({"every": "soon"}, JobError, "use e.g. 30s"),
        ({"every": "1m", "timezone": "Mars/Olympus"}, JobError, "unknown"),
        ({"every": "1m", "cron": "* * * * *"}, JobError, "exactly one of cron or every"),
        ({"every": "1m", "plugin": "nope"}, JobError, "unknown or invalid plugin 'nope'"),
        ({"every": "1m", "params": {"sleep": "long"}}, ParamsError, "sleep"),
        ({"every": "1m", "params": {"bogus": 1}}, ParamsError, "bogus"),
        ({"every": "1m", "queue": "nowhere"}, JobError, "unknown queue"),
        ({"every": "1m", "priority": 12}, JobError, "priority"),
        ({"every": "1m", "id": "a:b"}, JobError, "schedule id"),
        ({"every": "1m", "misfire_grace": "0s"}, JobError, "misfire_grace '0s': must be a whole number"),
        ({"every": "1m", "misfire_grace_s": 0.5}, JobError, "greater than or equal to 1"),
    ],
)
async def test_a_bad_definition_is_refused_and_nothing_is_stored(
    rig: Rig, definition: dict[str, object], error: type[Exception], reason: str
) -> None:
    with pytest.raises(error, match=reason):
        await rig.client.add_schedule({"id": "bad", "plugin": "probe", **definition})
    assert await rig.client.list_schedules() == []
    assert not await rig.client.redis.exists(SchedKeys.definitions, SchedKeys.version)


async def test_the_seed_dict_shape_is_accepted(rig: Rig) -> None:
    schedule_id = await rig.client.add_scheduled_task({"plugin": "probe", "params": {"name": "n"}, "cron": "0 2 * * *"})
    row = await rig.client.get_schedule(schedule_id)
    assert schedule_id.startswith("probe-")
    assert (row["plugin"], row["params"], row["cron"], row["timezone"], row["every"]) == (
        "probe", {"name": "n"}, "0 2 * * *", "UTC", None,
    )  # fmt: skip
    assert row["origin"] == "runtime" and row["enabled"] is True and row["overlap"] == "skip"
    assert row["next_run_at"].endswith("T02:00:00.000Z")
    # the same task again is the same schedule: refused unless replaced
    with pytest.raises(JobError, match="exists"):
        await rig.client.add_scheduled_task({"plugin": "probe", "params": {"name": "n"}, "cron": "0 2 * * *"})
    named = await rig.client.add_schedule({"name": "nightly", "plugin": "probe", "kwargs": {}, "every": "5m"})
    assert named["id"] == "nightly" and named["every"] == "5m" and named["trigger"] == "every 5m"


async def test_remove_and_unknown_ids(rig: Rig) -> None:
    await rig.client.add_schedule(id="x", plugin="probe", every="1h")
    await rig.client.remove_schedule("x")
    assert await rig.client.list_schedules() == []
    for call in (rig.client.remove_schedule, rig.client.pause_schedule, rig.client.run_schedule):
        with pytest.raises(NotFoundError):
            await call("x")


async def test_config_schedules_are_synced_and_runtime_changes_reported(rig: Rig) -> None:
    nightly = ScheduleSpec(id="nightly", plugin="probe", cron="0 2 * * *", origin="config")
    often = ScheduleSpec(id="often", plugin="probe", every=30, origin="config")
    store = rig.store
    assert await sync_config(store, [nightly, often], None) == []
    rows = {r["id"]: r for r in await rig.client.list_schedules()}
    assert set(rows) == {"nightly", "often"} and rows["nightly"]["origin"] == "config"

    # unchanged config, runtime pause of one and removal of the other: both kept as they are, reported
    await rig.client.pause_schedule("nightly")
    await rig.client.remove_schedule("often")
    reports = await sync_config(store, [nightly, often], None)
    assert reports == [
        "schedule nightly: changed at run time (enabled): kept; the config file says otherwise",
        "schedule often: removed at run time: not re-added (delete it from the config file to silence this)",
    ]
    rows = {r["id"]: r for r in await rig.client.list_schedules()}
    assert set(rows) == {"nightly"} and rows["nightly"]["enabled"] is False
    assert rows["nightly"]["note"] == "changed at run time (enabled): kept; the config file says otherwise"

    # the config file changes: its new definition applies, and the replaced runtime change is reported
    edited = nightly.model_copy(update={"cron": "0 3 * * *"})
    reports = await sync_config(store, [edited], None)
    assert reports == [
        "schedule nightly: the config file changed; its definition replaces a runtime change",
        "schedule often: no longer in the config file: removed",
    ]
    rows = {r["id"]: r for r in await rig.client.list_schedules()}
    assert set(rows) == {"nightly"}
    assert (rows["nightly"]["cron"], rows["nightly"]["enabled"], rows["nightly"]["note"]) == ("0 3 * * *", True, None)
    assert await sync_config(store, [edited], None) == []

    # an id the config shares with a runtime schedule: the runtime one is kept
    await rig.client.add_schedule(id="mine", plugin="probe", every="1m")
    clash = ScheduleSpec(id="mine", plugin="probe", every=120, origin="config")
    assert await sync_config(store, [edited, clash], None) == [
        "schedule mine: also in the config file; the schedule added at run time is kept (differs in every)"
    ]
    assert (await rig.client.get_schedule("mine"))["every"] == "1m"


async def test_a_config_schedule_replaced_at_run_time_stays_a_config_schedule(rig: Rig) -> None:
    base = ScheduleSpec(id="c", plugin="probe", every=60, origin="config")
    await sync_config(rig.store, [base], None)
    await rig.client.add_schedule(id="c", plugin="probe", every="2m", replace=True)
    assert (await rig.client.get_schedule("c"))["origin"] == "config"
    assert await sync_config(rig.store, [base], None) == [
        "schedule c: changed at run time (every): kept; the config file says otherwise"
    ]


def test_schedules_in_the_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.toml"
    path.write_text(
        """
[[schedules]]
id = "sync"
plugin = "data_processor"
every = "30s"
params = { operation = "sync_data" }

[[schedules]]
id = "nightly"
plugin = "data_processor"
cron = "0 2 * * *"
timezone = "Europe/Berlin"
misfire_grace = "5m"
overlap = "allow"
"""
    )
    settings = load_settings(path)
    assert [(s.id, s.every, s.cron, s.origin) for s in settings.schedules] == [
        ("sync", 30.0, None, "config"),
        ("nightly", None, "0 2 * * *", "config"),
    ]
    assert settings.schedules[1].misfire_grace_s == 300 and settings.schedules[1].overlap == "allow"

    path.write_text('[[schedules]]\nid = "x"\nplugin = "p"\ncron = "0 25 * * *"\n')
    with pytest.raises(ConfigError, match=r"schedules\.0\.cron"):
        load_settings(path)
    path.write_text(
        '[[schedules]]\nid = "x"\nplugin = "p"\nevery = "1m"\n[[schedules]]\nid = "x"\nplugin = "p"\nevery = "2m"\n'
    )
    with pytest.raises(ConfigError, match="given twice: x"):
        load_settings(path)


def test_every_parsing_and_aligned_slots() -> None:
    assert [parse_every(x) for x in ("30s", "5m", "1h", "1d", "45", 90)] == [30, 300, 3600, 86400, 45, 90]
    spec = parse_spec({"id": "e", "plugin": "p", "every": "1h"})
    t = datetime(2026, 11, 30, 10, 59, 59, tzinfo=UTC).timestamp()
    assert spec.next_after(t) == datetime(2026, 11, 30, 11, tzinfo=UTC).timestamp()
    assert spec.next_after(spec.next_after(t)) == datetime(2026, 11, 30, 12, tzinfo=UTC).timestamp()
    # a long downtime: the count is exact, the list holds the newest slots only
    slots, complete = spec.slots_between(0, 10 * 3600, limit=3)
    assert slots == [8 * 3600, 9 * 3600, 10 * 3600] and not complete
