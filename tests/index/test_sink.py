"""The index sink end to end: a real MariaDB and Redis, the real `elasticsearch` async client over
HTTP, and an ES-protocol double (tests/index/esdouble.py) in place of Elasticsearch, which no
machine here can run."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from orchestrator.cdc.index_actions import index_stream
from orchestrator.cdc.model import CdcKeys
from orchestrator.client import connect_redis
from orchestrator.config import Settings
from orchestrator.index.es_client import es_client
from orchestrator.index.sink import IndexSink
from orchestrator.index.stats import read_stats
from orchestrator.jobs.model import Keys
from tests.cdc.helpers import capture, cdc_settings, install, sql
from tests.index.esdouble import EsDouble
from tests.jobs.helpers import wait_for

TEACHERS = (
    "CREATE TABLE teachers (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(40), age VARCHAR(10), "
    "secret VARCHAR(20), updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) "
    "ON UPDATE CURRENT_TIMESTAMP(6))"
)
RULE: dict[str, Any] = {
    "name": "teachers",
    "table": "teachers",
    "index": {"name": "teachers", "id": "id", "fields": ["id", "name", "age"], "rename": {"name": "full_name"}},
}


def settings_for(tmp_path: Path, redis_url: str, mysql_url: str, double: EsDouble, **extra: Any) -> Settings:
    s = cdc_settings(tmp_path, redis_url, mysql_url, [RULE])
    return s.model_copy(update={"es_hosts": [double.url], **extra})


@contextlib.asynccontextmanager
async def sink_running(settings: Settings, **kwargs: Any) -> AsyncIterator[IndexSink]:
    redis = connect_redis(settings.redis_url or "")
    es = es_client(settings, max_retries=0)
    sink = IndexSink(es, redis, ["teachers"], **({"max_wait_s": 0.05, "max_backoff_s": 0.5} | kwargs))
    task = asyncio.create_task(sink.run())
    try:
        yield sink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await es.close()
        await redis.aclose()


async def test_insert_update_delete_reach_the_index(
    tmp_path: Path, redis_url: str, mysql_url: str, double: EsDouble
) -> None:
    settings = settings_for(tmp_path, redis_url, mysql_url, double)
    await sql(settings, TEACHERS)
    await install(settings)
    async with capture(settings) as rig, sink_running(settings) as sink:
        await sql(
            settings,
            "INSERT INTO teachers (name, age, secret) VALUES ('Ada', '36', 'x'), ('Bob', '41', 'y')",
            "UPDATE teachers SET name = 'Ada L.' WHERE id = 1",
            "DELETE FROM teachers WHERE id = 2",
        )
        await rig.settle()
        sink.poke()
        await wait_for(lambda: sink.indexed >= 4, timeout_s=20)
        stats = await read_stats(rig.store.redis, ["teachers"])
    assert double.docs("teachers") == {"1": {"id": 1, "full_name": "Ada L.", "age": "36"}}
    assert stats == {"indexed": 4, "failed": 0, "backlog": 0}


async def test_a_thousand_changes_go_in_a_few_bulk_requests(
    tmp_path: Path, redis_url: str, mysql_url: str, double: EsDouble
) -> None:
    settings = settings_for(tmp_path, redis_url, mysql_url, double)
    await sql(settings, TEACHERS)
    await install(settings)
    values = ", ".join(f"('t{i}', '{i}', '')" for i in range(1000))
    async with capture(settings) as rig:
        await sql(settings, f"INSERT INTO teachers (name, age, secret) VALUES {values}")
        await rig.settle()
        async with sink_running(settings, max_actions=500) as sink:
            await wait_for(lambda: sink.indexed >= 1000, timeout_s=30)
    assert len(double.docs("teachers")) == 1000
    assert double.bulk_calls <= 4, double.bulk_calls


async def test_429_then_200_loses_nothing(tmp_path: Path, redis_url: str, mysql_url: str, double: EsDouble) -> None:
    settings = settings_for(tmp_path, redis_url, mysql_url, double)
    await sql(settings, TEACHERS)
    await install(settings)
    double.fail_next = [429, 429, 503]
    async with capture(settings) as rig, sink_running(settings) as sink:
        await sql(settings, "INSERT INTO teachers (name, age) VALUES ('a', '1'), ('b', '2'), ('c', '3')")
        await rig.settle()
        await wait_for(lambda: sink.indexed >= 3, timeout_s=30)
        backlog = await sink.backlog()
    assert sorted(double.docs("teachers")) == ["1", "2", "3"]
    assert double.bulk_calls == 4 and backlog == 0


async def test_items_refused_with_429_go_again_unless_a_later_action_wrote_the_document(
    tmp_path: Path, redis_url: str, mysql_url: str, double: EsDouble
) -> None:
    settings = settings_for(tmp_path, redis_url, mysql_url, double)
    await sql(settings, TEACHERS)
    await install(settings)
    double.item_status = {"1": [429], "2": [429]}
    async with capture(settings) as rig:
        await sql(
            settings,
            "INSERT INTO teachers (name, age) VALUES ('v1', '1'), ('b', '2')",
            "UPDATE teachers SET name = 'v2' WHERE id = 1",
        )
        await rig.settle()
        async with sink_running(settings) as sink:
            await wait_for(lambda: sink.indexed >= 3, timeout_s=20)
            backlog = await sink.backlog()
    # doc 1: its first action was refused, the later UPDATE in the same request wrote it: not resent
    assert double.docs("teachers")["1"]["full_name"] == "v2" and double.docs("teachers")["2"]["full_name"] == "b"
    assert double.bulk_calls == 2 and double.bulk_items == 4 and backlog == 0


async def test_es_down_for_ten_seconds_then_up_every_change_arrives_and_the_position_waits(
    tmp_path: Path, redis_url: str, mysql_url: str, double: EsDouble
) -> None:
    settings = settings_for(tmp_path, redis_url, mysql_url, double)
    await sql(settings, TEACHERS)
    await install(settings)
    await double.stop()
    async with capture(settings) as rig, sink_running(settings) as sink:
        await sql(settings, *(f"INSERT INTO teachers (name, age) VALUES ('n{i}', '{i}')" for i in range(20)))
        await rig.settle()
        redis = rig.store.redis
        # the position moved on only because every change it covers waits in the stream
        position = await redis.hget(CdcKeys.state, CdcKeys.CHANGELOG)
        assert position is not None
        assert await redis.xlen(index_stream("teachers")) == 20
        await asyncio.sleep(10)  # the outage the issue asks for; the sink retries meanwhile
        assert sink.last_error and "unreachable" in sink.last_error
        assert sink.indexed == 0 and await redis.xlen(index_stream("teachers")) == 20
        await double.start()
        sink.poke()
        await wait_for(lambda: sink.indexed >= 20, timeout_s=30)
        assert await redis.xlen(index_stream("teachers")) == 0
    assert sorted(double.docs("teachers"), key=int) == [str(i) for i in range(1, 21)]


async def test_a_document_refused_by_the_mapping_becomes_a_failed_job_and_the_rest_are_indexed(
    tmp_path: Path, redis_url: str, mysql_url: str, double: EsDouble
) -> None:
    settings = settings_for(tmp_path, redis_url, mysql_url, double)
    await sql(settings, TEACHERS)
    await install(settings)
    double.reject = lambda index, doc: "failed to parse field [age] of type [long]" if doc.get("age") == "old" else None
    async with capture(settings) as rig, sink_running(settings) as sink:
        await sql(settings, "INSERT INTO teachers (name, age) VALUES ('a', '1'), ('b', 'old'), ('c', '3')")
        await rig.settle()
        await wait_for(lambda: sink.indexed + sink.failed >= 3, timeout_s=20)
        redis = rig.store.redis
        failed = [i.decode() for i in await redis.zrange(Keys.state("failed"), 0, -1)]
        record = await rig.store.get(failed[0]) if failed else None
        stats = await read_stats(redis, ["teachers"])
    assert sorted(double.docs("teachers")) == ["1", "3"]
    assert failed == ["index:teachers:2"]
    assert record is not None and record.plugin == "es_indexer" and record.state == "failed"
    assert "document_parsing_exception" in (record.error or "")
    assert record.params == {"index": "teachers", "documents": [{"id": 2, "full_name": "b", "age": "old", "_id": "2"}]}
    assert stats == {"indexed": 2, "failed": 1, "backlog": 0}


async def test_a_snapshot_fills_the_index_with_the_existing_rows(
    tmp_path: Path, redis_url: str, mysql_url: str, double: EsDouble
) -> None:
    from tests.cdc.helpers import cdc_admin

    settings = settings_for(tmp_path, redis_url, mysql_url, double)
    await sql(settings, TEACHERS, "INSERT INTO teachers (name, age) VALUES ('a', '1'), ('b', '2'), ('c', '3')")
    redis = connect_redis(settings.redis_url or "")
    try:
        result = await (await cdc_admin(settings, redis)).snapshot("teachers", None, restart=False)
        assert result["rows"] == 3 and await redis.xlen(index_stream("teachers")) == 3
    finally:
        await redis.aclose()
    async with sink_running(settings) as sink:
        await wait_for(lambda: sink.indexed >= 3, timeout_s=20)
    assert sorted(double.docs("teachers")) == ["1", "2", "3"]


async def test_external_versions_from_the_binlog_an_older_state_never_replaces_a_newer_one(
    tmp_path: Path, redis_url: str, mysql_url: str, double: EsDouble
) -> None:
    from orchestrator.cdc.index_actions import encode_action
    from tests.cdc.binlog_helpers import binlog_capture

    settings = cdc_settings(tmp_path, redis_url, mysql_url, [{**RULE, "mode": "binlog"}])
    settings = settings.model_copy(update={"es_hosts": [double.url]})
    await sql(settings, TEACHERS)
    async with binlog_capture(settings) as rig, sink_running(settings) as sink:
        await sql(
            settings,
            "INSERT INTO teachers (name, age) VALUES ('Ann', '40')",
            "UPDATE teachers SET name = 'Bea' WHERE id = 1",
        )
        await rig.settle()
        await wait_for(lambda: double.docs("teachers").get("1", {}).get("full_name") == "Bea")
        newest = double.versions["teachers"]["1"]
        # a late or replayed action one version older (a deposed leader's bulk, a retried batch)
        stale = {"rule": "teachers", "change_id": "x", "changed_at": 0, "index": "teachers", "id": "1",
                 "op": "index", "doc": {"id": 1, "full_name": "Ann", "age": "40"}, "version": newest - 1}  # fmt: skip
        redis = connect_redis(redis_url)
        try:
            await redis.xadd(index_stream("teachers"), {"d": encode_action(stale)})
            sink.poke()
            await wait_for(lambda: double.conflicts == 1)

            async def drained() -> bool:
                return bool(await redis.xlen(index_stream("teachers")) == 0)

            await wait_for(drained)  # the 409 counts as done
        finally:
            await redis.aclose()
        failed = sink.failed
    assert double.docs("teachers")["1"]["full_name"] == "Bea" and double.versions["teachers"]["1"] == newest
    assert failed == 0
