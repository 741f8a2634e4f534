"""es_indexer's delete and create_index operations, and the retry of a document the index sink
recorded as a failed job, run in the plugin's own venv (elasticsearch[async]) against the
ES-protocol double of tests/index/esdouble.py: no Elasticsearch can run here, so this shows the
protocol and wiring, not a real cluster's behaviour."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.index.failed import job_for
from orchestrator.plugins import Launcher, PluginInfo, PluginRegistry, VenvManager, validate_params
from tests.index.esdouble import EsDouble


@pytest.fixture
async def double(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[EsDouble]:
    d = EsDouble()
    await d.start()
    monkeypatch.setenv("ES_HOSTS", f"{d.url},http://127.0.0.1:9")  # several hosts: the client picks a live one
    monkeypatch.setenv("ES_API_KEY", "a2V5OnNlY3JldA==")
    yield d
    await d.stop()


async def launch(launcher: Launcher, info: PluginInfo, params: dict[str, Any]) -> Any:
    assert info.manifest is not None and info.python is not None, info.reason
    result = await launcher.run(
        info, validate_params(info.manifest, params), {"job_id": "j1", "attempt": 1}, python=info.python, timeout_s=60
    )
    return result


@pytest.mark.venv
async def test_create_index_delete_and_a_failed_sink_document_retried(
    repo_root: Path, envs: VenvManager, launcher: Launcher, double: EsDouble, tmp_path: Path
) -> None:
    registry = PluginRegistry(repo_root / "plugins", envs)
    await registry.load()
    info = await registry.ensure_ready("es_indexer")

    mapping = tmp_path / "teachers.json"
    mapping.write_text(json.dumps({"properties": {"age": {"type": "long"}}}))
    created = await launch(
        launcher, info, {"index": "teachers", "operation": "create_index", "mapping_file": str(mapping)}
    )
    assert created.ok and created.result["result"] == {"index": "teachers", "created": True}
    assert double.mappings["teachers"] == {"properties": {"age": {"type": "long"}}}
    again = await launch(
        launcher, info, {"index": "teachers", "operation": "create_index", "mapping_file": str(mapping)}
    )
    assert again.ok and again.result["result"]["created"] is False
    assert all(a == "ApiKey a2V5OnNlY3JldA==" for a in double.auth_seen if a is not None) and double.auth_seen[-1]

    # the params of a job the sink records for a refused document (index/failed.py)
    double.reject = lambda index, doc: "failed to parse field [age]" if doc.get("age") == "old" else None
    action = {
        "rule": "teachers",
        "change_id": "2",
        "index": "teachers",
        "id": "2",
        "op": "index",
        "doc": {"age": "old"},
    }
    params = job_for(action, {"type": "document_parsing_exception", "reason": "x"}).params
    refused = await launch(launcher, info, params)
    assert not refused.ok and "every bulk action failed" in (refused.error or "")
    double.reject = lambda index, doc: None  # the mapping was fixed: the retry indexes it
    retried = await launch(launcher, info, params)
    assert retried.ok and double.docs("teachers") == {"2": {"age": "old"}}

    deleted = await launch(launcher, info, {"index": "teachers", "operation": "delete", "ids": ["2", "9"]})
    assert deleted.ok and double.docs("teachers") == {}
    assert deleted.result["result"]["actions"] == 2
