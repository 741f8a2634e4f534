"""The index sink and the ES probe inside a real app (real MariaDB, Redis, and the `elasticsearch`
client over HTTP against the ES-protocol double of tests/index/esdouble.py: no Elasticsearch can
run here): changes reach the index; /health, /status and /metrics show it; promtool passes."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cdc.helpers import cdc_settings, install, sql
from tests.index.esdouble import EsDouble
from tests.index.test_sink import TEACHERS
from tests.jobs.helpers import cli, run_app, wait_for


async def _get(base: str, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(f"{base}{path}") as response:
        return await (response.text() if path == "/metrics" else response.json())


async def test_changes_reach_the_index_and_health_status_metrics_show_it(
    tmp_path: Path, redis_url: str, mysql_url: str, double: EsDouble
) -> None:
    rules = [{"name": "teachers", "table": "teachers", "index": {"name": "teachers"}}]
    settings = cdc_settings(tmp_path, redis_url, mysql_url, rules).model_copy(
        update={"es_hosts": [double.url], "es_bulk_max_wait_s": 0.05}
    )
    await sql(settings, TEACHERS)
    await install(settings)
    async with run_app(settings) as app:
        await sql(settings, "INSERT INTO teachers (name, age) VALUES ('a', '1'), ('b', '2')")
        await wait_for(lambda: len(double.docs("teachers")) == 2, timeout_s=30)
        assert app.http is not None
        base = f"http://127.0.0.1:{app.http.bound_port}"
        health = await _get(base, "/health")
        status = await wait_for(lambda: _indexed(base), timeout_s=20)
        metrics = await _get(base, "/metrics")
    assert health["components"]["elasticsearch"]["status"] == "ok", health
    assert health["components"]["index"]["status"] == "ok", health
    assert status["elasticsearch"]["up"] is True and status["elasticsearch"]["version"] == "9.0.0"
    assert status["index"]["indexed"] == 2 and status["index"]["backlog"] == 0
    assert double.docs("teachers")["1"]["name"] == "a"
    assert "orchestrator_index_documents_indexed_total 2.0" in metrics
    assert "orchestrator_index_backlog 0.0" in metrics and "orchestrator_es_up 1.0" in metrics
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: scripts/test installs Debian's prometheus package")
    proc = await asyncio.create_subprocess_exec(promtool, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=PIPE)
    out, err = await proc.communicate(metrics.encode())
    assert proc.returncode == 0, (out + err).decode()


async def _indexed(base: str) -> Any:
    status = await _get(base, "/status")
    return status if (status.get("index") or {}).get("indexed") == 2 else None


def test_without_es_the_app_and_change_capture_do_not_load_elasticsearch() -> None:
    code = (
        "import sys, orchestrator.app, orchestrator.cli.main, orchestrator.cdc.poller, orchestrator.monitor.metrics\n"
        "assert 'elasticsearch' not in sys.modules, 'loaded'\n"
        "import orchestrator.index.sink\n"
        "assert 'elasticsearch' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.venv
async def test_a_refused_document_is_a_failed_job_that_jobs_retry_indexes_once_fixed(
    tmp_path: Path, redis_url: str, mysql_url: str, double: EsDouble, repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sink records the refused document as a failed es_indexer job; after the double's rule
    is fixed, `orchestrator jobs retry` (the real CLI) runs it through the es_indexer plugin (its own
    venv) in the running app, and the document reaches the index."""
    rules = [{"name": "teachers", "table": "teachers", "index": {"name": "teachers"}}]
    settings = cdc_settings(tmp_path, redis_url, mysql_url, rules).model_copy(
        update={"es_hosts": [double.url], "es_bulk_max_wait_s": 0.05}
    )
    shutil.copytree(repo_root / "plugins" / "es_indexer", settings.plugins_dir / "es_indexer")
    monkeypatch.setenv("ES_HOSTS", double.url)  # what the plugin's child gets (its manifest declares it)
    double.reject = lambda index, doc: "failed to parse field [age]" if doc.get("age") == "old" else None
    await sql(settings, TEACHERS)
    await install(settings)
    async with run_app(settings) as app:
        await sql(settings, "INSERT INTO teachers (name, age) VALUES ('a', '1'), ('b', 'old'), ('c', '3')")
        await wait_for(lambda: len(double.docs("teachers")) == 2, timeout_s=30)
        assert app.http is not None
        status = await wait_for(lambda: _failed(f"http://127.0.0.1:{app.http.bound_port}"), timeout_s=20)
        assert status["index"]["failed"] == 1
        failed = await cli(settings, "jobs", "list", "--state", "failed", "--json")
        [job] = failed.json()
        assert job["job_id"] == "index:teachers:2" and job["plugin"] == "es_indexer"
        double.reject = lambda index, doc: None
        retried = await cli(settings, "jobs", "retry", "index:teachers:2")
        assert retried.rc == 0, retried
        new_id = retried.out.strip().split()[-1]
        done = await wait_for(lambda: _state(settings, new_id), timeout_s=180)
    assert done == "succeeded"
    assert double.docs("teachers")["2"]["age"] == "old" and sorted(double.docs("teachers")) == ["1", "2", "3"]


async def _failed(base: str) -> Any:
    status = await _get(base, "/status")
    return status if (status.get("index") or {}).get("failed") == 1 else None


async def _state(settings: Any, job_id: str) -> str | None:
    result = await cli(settings, "status", job_id, "--json")
    state = result.json().get("state") if result.rc in (0, 1) and result.out.strip() else None
    return state if state in {"succeeded", "failed"} else None
