"""A row change as one trace: `cdc.change` (the root, with table, operation and position) -> `job` ->
`plugin`, and the `es.bulk` that carried it to the index linked to it. A real `orchestrator run`,
real MariaDB, the ES double over HTTP, and a real OTLP/HTTP receiver."""

from __future__ import annotations

from pathlib import Path

from tests.cdc.helpers import cdc_settings, install, run_env, sql
from tests.index.esdouble import EsDouble
from tests.index.test_sink import TEACHERS
from tests.jobs.conftest import StartRun
from tests.jobs.helpers import read_events, wait_for
from tests.tracing.helpers import otel_env
from tests.tracing.receiver import otlp_receiver


async def test_a_change_is_the_root_of_its_job_and_the_bulk_write_links_to_it(
    tmp_path: Path, redis_url: str, mysql_url: str, double: EsDouble, start_run: StartRun
) -> None:
    record = tmp_path / "events.jsonl"
    rules = [
        {
            "name": "teachers",
            "table": "teachers",
            "plugins": ["recorder"],
            "params": {"record": str(record)},
            "index": {"name": "teachers"},
        }
    ]
    settings = cdc_settings(tmp_path, redis_url, mysql_url, rules)
    await sql(settings, TEACHERS)
    await install(settings)
    async with otlp_receiver() as receiver:
        run = await start_run(
            settings, tmp_path / "run.log", ES_HOSTS=double.url, ORCH_ES_BULK_MAX_WAIT_S="0.05",
            **run_env(settings), **otel_env(receiver.url),
        )  # fmt: skip
        # the changelog table (install) holds the rows until the poller, once up, reads them
        await sql(settings, "INSERT INTO teachers (name, age) VALUES ('a', '1'), ('b', '2')")
        await wait_for(lambda: len(read_events(record)) == 2 and len(double.docs("teachers")) == 2, timeout_s=30)
        # a job span ends last (after its outcome is stored): both, and the bulk write
        await wait_for(lambda: len(receiver.named("job")) == 2 and receiver.named("es.bulk"), timeout_s=20)
        assert await run.signal_and_wait(2) == 0, run.log()

    changes = {s.attributes["cdc.change_id"]: s for s in receiver.named("cdc.change")}
    assert sorted(changes) == ["1", "2"], receiver.spans
    for change_id, change in changes.items():
        assert change.parent_id == "" and change.attributes["cdc.table"] == "testdb.teachers"
        assert change.attributes["cdc.operation"] == "INSERT" and change.attributes["cdc.position"] == int(change_id)
        in_trace = {s.name: s for s in receiver.spans if s.trace_id == change.trace_id}
        assert set(in_trace) == {"cdc.change", "job", "plugin"}, in_trace
        assert in_trace["job"].parent_id == change.span_id and in_trace["plugin"].parent_id == in_trace["job"].span_id
        assert in_trace["job"].attributes["job.id"] == f"cdc:teachers:{change_id}:recorder"
    # one or two bulk requests (the batch window may split them), together linked to both changes
    bulks = receiver.named("es.bulk")
    assert all(b.parent_id == "" and b.trace_id not in {c.trace_id for c in changes.values()} for b in bulks)
    assert sorted(link for b in bulks for link in b.links) == sorted((c.trace_id, c.span_id) for c in changes.values())
    assert sum(b.attributes["es.actions"] for b in bulks) == 2
