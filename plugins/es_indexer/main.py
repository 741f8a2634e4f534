"""es_indexer: bulk-index documents (or the row of a database change) into Elasticsearch.

Operations (`operation`):
- `index` (default): upsert `documents`, or turn a `change_event` into an upsert or a delete.
- `delete`: delete the documents with the given `ids` (or the ids of `documents`).
- `create_index`: create `index` with the settings/mappings of the JSON file `mapping_file`
  (`{"settings": ..., "mappings": ...}`, or bare mappings); an existing index is left alone.

Connection settings come from the environment the manifest declares: ES_HOSTS (comma-separated
URLs), ES_USERNAME / ES_PASSWORD (optional basic auth) or ES_API_KEY, ES_CA_FILE (CA bundle),
ES_VERIFY_CERTS (0 to skip certificate checks), ES_TIMEOUT (seconds, default 30).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_bulk


async def index_documents(
    index: str,
    documents: list[dict[str, Any]] | None = None,
    change_event: dict[str, Any] | None = None,
    id_field: str = "id",
    operation: str = "index",
    ids: list[Any] | None = None,
    mapping_file: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Entry point (`main.index_documents`). Returns how many actions succeeded and the failures."""
    if operation == "create_index":
        return await create_index(index, mapping_file)
    if operation == "delete":
        doc_ids = list(ids or []) + [d.get("_id", d.get(id_field)) for d in documents or []]
        actions = [{"_op_type": "delete", "_index": index, "_id": str(i)} for i in doc_ids if i is not None]
    elif operation == "index":
        actions = list(_actions(index, documents or [], change_event, id_field))
    else:
        raise ValueError(f"operation {operation!r}: use index, delete or create_index")
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


async def create_index(index: str, mapping_file: str | None) -> dict[str, Any]:
    """Create `index` from a mapping file; an index that exists already is reported, not changed."""
    body = _read_mapping(mapping_file) if mapping_file else {}
    async with _client() as es:
        if await es.indices.exists(index=index):
            print(f"es_indexer: index {index} exists, left as it is")
            return {"status": "success", "result": {"index": index, "created": False}}
        await es.indices.create(index=index, **body)
    print(f"es_indexer: created index {index} from {mapping_file or 'no mapping file'}")
    return {"status": "success", "result": {"index": index, "created": True}}


def _read_mapping(path: str) -> dict[str, Any]:
    # a small file, read once per job in the plugin's own process: blocking is harmless here
    body: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return body if "mappings" in body or "settings" in body else {"mappings": body}


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
    api_key = os.environ.get("ES_API_KEY")
    kwargs: dict[str, Any] = {"request_timeout": float(os.environ.get("ES_TIMEOUT") or 30)}
    if api_key:
        kwargs["api_key"] = api_key
    elif username:
        kwargs["basic_auth"] = (username, password or "")
    if os.environ.get("ES_CA_FILE"):
        kwargs["ca_certs"] = os.environ["ES_CA_FILE"]
    if os.environ.get("ES_VERIFY_CERTS", "").lower() in ("0", "false", "no"):
        kwargs["verify_certs"] = False
        kwargs["ssl_show_warn"] = False
    return AsyncElasticsearch(hosts, **kwargs)
