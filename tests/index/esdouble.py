"""A small Elasticsearch-protocol double (aiohttp), for tests and the benchmark.

No machine here can run Elasticsearch: the tests run the real `elasticsearch` async client over
HTTP against this app. It implements what the client and the index sink use: the product header
the client checks (`X-Elastic-Product: Elasticsearch`), `_bulk` (index/create/delete items),
index/get/delete of one document, index create (with its mappings) and exists. Controls for the
tests: answer the next whole requests with given statuses (`fail_next`), refuse documents for
which `reject` says so with a 400 mapping error, answer single items with given statuses
(`item_status`), and go down and up again on the same port.

Versions as Elasticsearch keeps them: every document has one (1 when created, +1 per internal
write); a bulk item with `version_type: external` is applied only when its `version` is above the
document's current one, else answered 409 `version_conflict_engine_exception` and nothing changes.
A delete keeps its version as a tombstone (ES keeps it for `index.gc_deletes`, 60 s by default; the
double keeps it for good), so an older index action cannot bring a deleted document back.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web

_HEADERS = {"X-Elastic-Product": "Elasticsearch", "Content-Type": "application/json"}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, headers=_HEADERS)


class EsDouble:
    def __init__(self) -> None:
        self.indices: dict[str, dict[str, dict[str, Any]]] = {}  # index -> id -> source
        self.versions: dict[str, dict[str, int]] = {}  # index -> id -> version (deleted ones too)
        self.conflicts = 0  # bulk items refused with 409
        self.mappings: dict[str, Any] = {}
        self.fail_next: list[int] = []  # statuses for the next whole requests (e.g. 429, 503)
        self.reject: Callable[[str, dict[str, Any]], str | None] = lambda index, doc: None
        self.item_status: dict[str, list[int]] = {}  # document id -> statuses for its next bulk items (e.g. 429)
        self.bulk_calls = 0
        self.bulk_items = 0
        self.requests = 0
        self.auth_seen: list[str | None] = []
        self.port = 0
        self.ssl_context: ssl.SSLContext | None = None  # set before start(): serve https
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    def docs(self, index: str) -> dict[str, dict[str, Any]]:
        return self.indices.get(index, {})

    # -- lifecycle --
    async def start(self, port: int = 0) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/", self._info)
        app.router.add_route("*", "/_bulk", self._bulk)
        app.router.add_route("*", "/{index}/_bulk", self._bulk)
        app.router.add_route("*", "/{index}/_doc/{id}", self._doc)
        app.router.add_route("*", "/{index}", self._index)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port or self.port, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers --
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests += 1
        self.auth_seen.append(request.headers.get("Authorization"))
        if self.fail_next:
            status = self.fail_next.pop(0)
            if request.path.endswith("_bulk"):
                self.bulk_calls += 1
            return _json(
                {"error": {"type": "es_rejected_execution_exception", "reason": "double"}, "status": status}, status
            )
        response: web.StreamResponse = await handler(request)
        return response

    async def _info(self, request: web.Request) -> web.Response:
        return _json({"name": "double", "cluster_name": "double", "version": {"number": "9.0.0"}, "tagline": "double"})

    async def _bulk(self, request: web.Request) -> web.Response:
        self.bulk_calls += 1
        lines = [json.loads(x) for x in (await request.text()).splitlines() if x.strip()]
        items: list[dict[str, Any]] = []
        errors = False
        i = 0
        while i < len(lines):
            ((op, meta),) = lines[i].items()
            index = meta.get("_index") or request.match_info.get("index", "")
            doc_id = str(meta.get("_id"))
            i += 1
            forced = self.item_status.get(doc_id)
            if forced:
                i += 0 if op == "delete" else 1
                errors = True
                items.append(
                    {
                        op: {
                            "_index": index,
                            "_id": doc_id,
                            "status": forced.pop(0),
                            "error": {"type": "es_rejected_execution_exception", "reason": "double: item refused"},
                        }
                    }
                )
                continue
            conflict = self._version_conflict(index, doc_id, meta)
            if conflict is not None:
                i += 0 if op == "delete" else 1
                errors = True
                self.conflicts += 1
                items.append({op: conflict})
                continue
            version = self._next_version(index, doc_id, meta)
            if op == "delete":
                found = self.indices.get(index, {}).pop(doc_id, None) is not None
                self.versions.setdefault(index, {})[doc_id] = version
                items.append(
                    {
                        op: {
                            "_index": index,
                            "_id": doc_id,
                            "status": 200 if found else 404,
                            "result": "deleted" if found else "not_found",
                        }
                    }
                )
                continue
            doc = lines[i]
            i += 1
            reason = self.reject(index, doc)
            if reason:
                errors = True
                items.append(
                    {
                        op: {
                            "_index": index,
                            "_id": doc_id,
                            "status": 400,
                            "error": {"type": "document_parsing_exception", "reason": reason},
                        }
                    }
                )
                continue
            docs = self.indices.setdefault(index, {})
            created = doc_id not in docs
            docs[doc_id] = doc
            self.versions.setdefault(index, {})[doc_id] = version
            items.append(
                {
                    op: {
                        "_index": index,
                        "_id": doc_id,
                        "_version": version,
                        "status": 201 if created else 200,
                        "result": "created" if created else "updated",
                    }
                }
            )
        self.bulk_items += len(items)
        return _json({"took": 1, "errors": errors, "items": items})

    def _version_conflict(self, index: str, doc_id: str, meta: dict[str, Any]) -> dict[str, Any] | None:
        """The 409 item ES answers when an external version is not above the current one."""
        if meta.get("version_type") != "external":
            return None
        current = self.versions.get(index, {}).get(doc_id)
        if current is None or int(meta["version"]) > current:
            return None
        reason = f"[{doc_id}]: version conflict, current version [{current}] is higher or equal to the one provided [{meta['version']}]"
        return {
            "_index": index,
            "_id": doc_id,
            "status": 409,
            "error": {"type": "version_conflict_engine_exception", "reason": reason},
        }

    def _next_version(self, index: str, doc_id: str, meta: dict[str, Any]) -> int:
        if meta.get("version_type") == "external":
            return int(meta["version"])
        return self.versions.get(index, {}).get(doc_id, 0) + 1

    async def _doc(self, request: web.Request) -> web.Response:
        index, doc_id = request.match_info["index"], request.match_info["id"]
        docs = self.indices.setdefault(index, {})
        if request.method in ("PUT", "POST"):
            doc = await request.json()
            reason = self.reject(index, doc)
            if reason:
                return _json({"error": {"type": "document_parsing_exception", "reason": reason}, "status": 400}, 400)
            created = doc_id not in docs
            docs[doc_id] = doc
            return _json(
                {"_index": index, "_id": doc_id, "result": "created" if created else "updated"}, 201 if created else 200
            )
        if request.method == "DELETE":
            found = docs.pop(doc_id, None) is not None
            return _json(
                {"_index": index, "_id": doc_id, "result": "deleted" if found else "not_found"}, 200 if found else 404
            )
        if doc_id in docs:
            return _json({"_index": index, "_id": doc_id, "found": True, "_source": docs[doc_id]})
        return _json({"_index": index, "_id": doc_id, "found": False}, 404)

    async def _index(self, request: web.Request) -> web.Response:
        index = request.match_info["index"]
        if request.method == "HEAD":
            return web.Response(status=200 if index in self.indices else 404, headers=_HEADERS)
        if request.method == "PUT":
            if index in self.indices:
                return _json(
                    {"error": {"type": "resource_already_exists_exception", "reason": index}, "status": 400}, 400
                )
            self.indices[index] = {}
            body = await request.text()
            self.mappings[index] = json.loads(body).get("mappings") if body else None
            return _json({"acknowledged": True, "index": index})
        if request.method == "GET" and index in self.indices:
            return _json({index: {"mappings": self.mappings.get(index) or {}}})
        return _json({"error": {"type": "index_not_found_exception", "reason": index}, "status": 404}, 404)
