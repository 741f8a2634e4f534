"""es_indexer: bulk-index documents (or the row of a database change) into Elasticsearch.

Connection settings come from the environment the manifest declares: ES_HOSTS (comma-separated
URLs), ES_USERNAME / ES_PASSWORD (optional basic auth), ES_TIMEOUT (seconds, default 30).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_bulk


async def index_documents(
    index: str,
    documents: list[dict[str, Any]] | None = None,
    change_event: dict[str, Any] | None = None,
    id_field: str = "id",
    **kwargs: Any,
) -> dict[str, Any]:
    """Entry point (`main.index_documents`). Returns how many actions succeeded and the failures."""
    actions = list(_actions(index, documents or [], change_event, id_field))
    if not actions:
        return {"status": "success", "result": {"index": index, "actions": 0, "succeeded": 0, "errors": []}}
    async with _client() as es:
        succeeded, errors = await async_bulk(es, actions, raise_on_error=False, raise_on_exception=False)
    failed = [_plain(e) for e in errors] if isinstance(errors, list) else []
    print(f"es_indexer: {succeeded}/{len(actions)} action(s) on {index}, job {kwargs.get('job_id')}")
    if failed and not succeeded:
        raise RuntimeError(f"every bulk action failed, first error: {json.dumps(failed[0])[:500]}")
    return {
        "status": "success" if not failed else "partial",
        "result": {"index": index, "actions": len(actions), "succeeded": succeeded, "errors": failed[:20]},
    }


def _actions(
    index: str, documents: list[dict[str, Any]], change_event: dict[str, Any] | None, id_field: str
) -> Iterator[dict[str, Any]]:
    for doc in documents:
        doc = dict(doc)
        doc_id = doc.pop("_id", doc.get(id_field))
        action: dict[str, Any] = {"_op_type": "index", "_index": index, "_source": doc}
        if doc_id is not None:
            action["_id"] = str(doc_id)
        yield action
    if change_event and not documents:
        yield from _change_actions(index, change_event, id_field)


def _change_actions(index: str, event: dict[str, Any], id_field: str) -> Iterator[dict[str, Any]]:
    row = event.get("after") or event.get("row")
    before = event.get("before") or {}
    pk = event.get("primary_key", event.get("pk"))
    if isinstance(pk, dict):  # {"id": 7} -> 7; composite keys join their values
        pk = "-".join(str(v) for v in pk.values()) if len(pk) != 1 else next(iter(pk.values()))
    if pk is None:
        pk = (row or before).get(id_field)
    if str(event.get("operation", "")).upper() == "DELETE":
        if pk is not None:
            yield {"_op_type": "delete", "_index": index, "_id": str(pk)}
    elif isinstance(row, dict):
        action: dict[str, Any] = {"_op_type": "index", "_index": index, "_source": row}
        if pk is not None:
            action["_id"] = str(pk)
        yield action


def _plain(error: Any) -> Any:
    """A bulk error as plain JSON: the helper puts exception objects in them, which cannot be returned."""
    if isinstance(error, dict):
        return {k: _plain(v) for k, v in error.items() if k != "exception"}
    return json.loads(json.dumps(error, default=repr))


def _client() -> AsyncElasticsearch:
    hosts = [h.strip() for h in os.environ.get("ES_HOSTS", "").split(",") if h.strip()]
    if not hosts:
        raise RuntimeError("ES_HOSTS is not set (declare it in the orchestrator's environment or .env)")
    username, password = os.environ.get("ES_USERNAME"), os.environ.get("ES_PASSWORD")
    return AsyncElasticsearch(
        hosts,
        basic_auth=(username, password or "") if username else None,
        request_timeout=float(os.environ.get("ES_TIMEOUT") or 30),
    )
