"""The example plugins shipped in plugins/: data_processor (stdlib) and es_indexer (own venv)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from orchestrator.plugins import Launcher, PluginInfo, PluginRegistry, VenvManager, validate_params

CHANGE_EVENT = {
    "table": "talent.teacher",
    "operation": "UPDATE",
    "primary_key": {"id": 7},
    "before": {"id": 7, "name": "Ann", "score": 3},
    "after": {"id": 7, "name": "Ann Lee", "score": 5},
    "committed_at": "2024-05-01T10:00:00Z",
}


@pytest.fixture
async def examples(repo_root: Path, envs: VenvManager) -> PluginRegistry:
    registry = PluginRegistry(repo_root / "plugins", envs)
    await registry.load()
    return registry


async def launch(launcher: Launcher, info: PluginInfo, params: dict[str, Any], **context: Any) -> Any:
    assert info.manifest is not None and info.python is not None, info.reason
    checked = validate_params(info.manifest, params)
    result = await launcher.run(
        info, checked, {"job_id": "j1", "attempt": 1, **context}, python=info.python, timeout_s=60
    )
    assert result.ok, result
    return result.result


async def test_example_manifests_are_valid(examples: PluginRegistry) -> None:
    infos = {p.name: p for p in examples.all()}
    assert set(infos) == {"data_processor", "es_indexer"}
    assert all(p.state != "invalid" and p.warnings == [] for p in infos.values()), infos
    assert infos["data_processor"].state == "ready"  # no dependencies: nothing to build
    assert infos["es_indexer"].state == "not-ready"  # fresh PLUGIN_VENV_DIR
    es = infos["es_indexer"].manifest
    assert es is not None and es.env == [
        "ES_HOSTS",
        "ES_USERNAME",
        "ES_PASSWORD",
        "ES_API_KEY",
        "ES_CA_FILE",
        "ES_VERIFY_CERTS",
        "ES_TIMEOUT",
    ]


async def test_data_processor_without_change_event(examples: PluginRegistry, launcher: Launcher) -> None:
    info = examples.get("data_processor")
    assert info is not None
    records = [{"id": 1, "score": 2, "name": " a "}, {"id": 2, "score": 4.5, "name": None}]
    out = await launch(launcher, info, {"operation": "aggregate", "records": records, "batch_size": 1})
    assert out["status"] == "success"
    result = out["result"]
    assert (result["operation"], result["processed"], result["batches"]) == ("aggregate", 2, 2)
    assert result["fields"]["score"] == {"count": 2, "sum": 6.5, "min": 2, "max": 4.5}
    assert "change_event" not in result
    cleaned = (await launch(launcher, info, {"operation": "clean_data", "records": [*records, records[0]]}))["result"]
    assert cleaned["records"] == [{"id": 1, "score": 2, "name": "a"}, {"id": 2, "score": 4.5}]
    assert cleaned["dropped"] == 1 and cleaned["batch_size"] == 100


async def test_data_processor_with_change_event(examples: PluginRegistry, launcher: Launcher) -> None:
    info = examples.get("data_processor")
    assert info is not None
    out = await launch(launcher, info, {}, change_event=CHANGE_EVENT)
    result = out["result"]
    assert result["operation"] == "sync_data" and result["synced_ids"] == [7] and result["processed"] == 1
    assert result["change_event"] == CHANGE_EVENT


class FakeElasticsearch:
    """Answers the two calls the bulk helper makes; records every bulk body it receives."""

    def __init__(self) -> None:
        self.headers = {"X-Elastic-Product": "Elasticsearch"}  # clients refuse servers without it
        self.bulk_bodies: list[list[dict[str, Any]]] = []
        self.auth: list[str | None] = []

    async def info(self, request: web.Request) -> web.Response:
        body = {
            "name": "double",
            "cluster_name": "test",
            "version": {"number": "9.0.0", "build_flavor": "default"},
            "tagline": "You Know, for Search",
        }
        return web.json_response(body, headers=self.headers)

    async def bulk(self, request: web.Request) -> web.Response:
        self.auth.append(request.headers.get("Authorization"))
        lines = [json.loads(line) for line in (await request.text()).splitlines() if line.strip()]
        self.bulk_bodies.append(lines)
        items: list[dict[str, Any]] = []
        for line in lines:
            op = next(iter(line))
            if op in ("index", "delete"):
                meta = line[op]
                items.append({op: {"_index": meta["_index"], "_id": meta.get("_id", "auto"), "status": 200}})
            elif line.get("name") == "reject":  # the source line of the previous action
                items[-1][next(iter(items[-1]))].update(status=400, error={"type": "mapper_parsing_exception"})
        errors = any(next(iter(i.values()))["status"] >= 300 for i in items)
        return web.json_response({"took": 1, "errors": errors, "items": items}, headers=self.headers)


@pytest.fixture
async def fake_es() -> AsyncIterator[tuple[str, FakeElasticsearch]]:
    double = FakeElasticsearch()
    app = web.Application()
    app.router.add_get("/", double.info)
    app.router.add_post("/_bulk", double.bulk)
    app.router.add_put("/_bulk", double.bulk)  # elasticsearch-py 9 sends PUT
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", double
    finally:
        await runner.cleanup()


@pytest.mark.venv
async def test_es_indexer_against_a_protocol_double(
    examples: PluginRegistry,
    launcher: Launcher,
    fake_es: tuple[str, FakeElasticsearch],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """es_indexer in its own venv (elasticsearch[async] from PyPI) against an Elasticsearch *protocol
    double*: no Elasticsearch can run here, so an aiohttp server answers GET / and POST /_bulk the
    way Elasticsearch does. It shows the venv, the declared env and the client wiring work; it says
    nothing about a real cluster's behaviour."""
    url, double = fake_es
    monkeypatch.setenv("ES_HOSTS", url)
    monkeypatch.setenv("ES_USERNAME", "indexer")
    monkeypatch.setenv("ES_PASSWORD", "secret")
    monkeypatch.setenv("REDIS_URL", "redis://:do-not-leak@localhost/0")
    info = await examples.ensure_ready("es_indexer")

    docs = [{"id": 1, "name": "a"}, {"_id": "x", "name": "b"}]
    out = await launch(launcher, info, {"index": "teachers", "documents": docs})
    assert out == {
        "status": "success",
        "result": {"index": "teachers", "actions": 2, "succeeded": 2, "errors": []},
    }
    assert double.bulk_bodies[0] == [
        {"index": {"_index": "teachers", "_id": "1"}},
        {"id": 1, "name": "a"},
        {"index": {"_index": "teachers", "_id": "x"}},
        {"name": "b"},
    ]
    assert double.auth[0] is not None and double.auth[0].startswith("Basic ")

    out = await launch(launcher, info, {"index": "teachers"}, change_event=CHANGE_EVENT)
    assert out["result"]["succeeded"] == 1
    assert double.bulk_bodies[1] == [{"index": {"_index": "teachers", "_id": "7"}}, CHANGE_EVENT["after"]]

    out = await launch(launcher, info, {"index": "t", "documents": [{"id": 1}, {"id": 2, "name": "reject"}]})
    assert out["status"] == "partial" and out["result"]["succeeded"] == 1
    [error] = out["result"]["errors"]
    assert error["index"]["status"] == 400 and error["index"]["error"] == {"type": "mapper_parsing_exception"}

    delete = {**CHANGE_EVENT, "operation": "DELETE", "after": None}
    out = await launch(launcher, info, {"index": "teachers"}, change_event=delete)
    assert out["result"]["succeeded"] == 1
    assert double.bulk_bodies[3] == [{"delete": {"_index": "teachers", "_id": "7"}}]
