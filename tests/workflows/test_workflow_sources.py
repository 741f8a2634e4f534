"""Sources that start a workflow named in config (`workflow = "..."`): a change-capture rule (once
per change, its steps get the change event like a rule's jobs do) and a schedule (once per slot)."""

from __future__ import annotations

from pathlib import Path

from orchestrator.client import Client
from tests.cdc.helpers import cdc_settings, install, sql
from tests.cdc.test_capture import ORDERS
from tests.jobs.helpers import make_settings, read_events, run_app, wait_for
from tests.workflows.helpers import lines, make_step_plugin


async def test_a_cdc_rule_starts_a_named_workflow_once_per_change(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    record = tmp_path / "events.jsonl"
    rules = [{"name": "orders", "table": "orders", "workflow": "pipeline"}]
    settings = cdc_settings(tmp_path, redis_url, mysql_url, rules)
    steps = [{"plugin": "recorder", "params": {"record": str(record), "tag": "process"}},
             {"plugin": "other", "params": {"record": str(record), "tag": "index"}}]  # fmt: skip
    settings = settings.model_copy(update={"workflows": {"pipeline": {"chain": steps}}})
    await sql(settings, ORDERS)
    await install(settings)
    async with run_app(settings), await Client.connect(redis_url) as client:
        await sql(settings, "INSERT INTO orders (status) VALUES ('new')", "UPDATE orders SET status = 'paid'")
        events = await wait_for(lambda: len(read_events(record)) == 4 and read_events(record))
        first = await client.wait("cdc:orders:1:wf", timeout_s=20)
        second = await client.wait("cdc:orders:2:wf", timeout_s=20)
    assert first["state"] == second["state"] == "succeeded" and first["name"] == "pipeline"
    by_job = {e["job"]: e for e in events}
    assert [by_job[f"cdc:orders:2:wf-{n}"]["tag"] for n in (1, 2)] == ["process", "index"]
    assert by_job["cdc:orders:2:wf-2"]["change_event"]["row"]["status"] == "paid"
    assert by_job["cdc:orders:1:wf-1"]["change_event"]["operation"] == "INSERT"


async def test_a_schedule_starts_a_named_workflow_on_its_slots(tmp_path: Path, redis_url: str) -> None:
    record = tmp_path / "runs.jsonl"
    make_step_plugin(tmp_path / "plugins")
    steps = {
        "chain": [{"plugin": "step", "params": {"name": "a"}}, {"plugin": "step", "params": {"record": str(record)}}]
    }
    settings = make_settings(
        tmp_path,
        redis_url,
        workflows={"nightly": steps},
        schedules=[{"id": "often", "workflow": "nightly", "every": "1s"}],
    )
    async with run_app(settings), await Client.connect(redis_url) as client:
        await wait_for(record.exists)
        (started, *_) = [w for w in await client.recent_workflows() if w["name"] == "nightly"]
        done = await client.wait(started["workflow_id"], timeout_s=20)
        history = await client.schedule_history("often")
    assert done["state"] == "succeeded" and done["workflow_id"].startswith("sched:often:")
    assert lines(record)[0]["previous"] == {"name": "a", "previous": None}
    assert any(h.get("job_id") == done["workflow_id"] and h["kind"] == "fired" for h in history), history
