"""EsProbe: Elasticsearch as a component of its own in /health and /status, when ES_HOSTS is set."""

from __future__ import annotations

import asyncio
import time

from elastic_transport import TransportError
from elasticsearch import ApiError, AsyncElasticsearch, UnsupportedProductError

from orchestrator.components import BaseComponent, ComponentHealth
from orchestrator.index.check import describe
from orchestrator.index.status import ElasticsearchStatus, EsInfo


class EsProbe(BaseComponent):
    """Asks the cluster for its info every `every_s`; failing while no host answers.

    Every instance runs it (not only the leader): a worker whose jobs use es_indexer needs ES too.
    """

    name = "elasticsearch"

    def __init__(self, es: AsyncElasticsearch, hosts: int, *, every_s: float = 10.0, timeout_s: float = 5.0) -> None:
        self.es = es
        self.hosts = hosts
        self.every_s = every_s
        self.timeout_s = timeout_s
        self.error: str | None = "not checked yet"
        self.info: EsInfo | None = None
        self.checked_at: float | None = None

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.every_s)

    async def drain(self) -> None:
        await self.es.close()

    async def check(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                info = await self.es.info()
            self.info = {"cluster": info.get("cluster_name"), "version": (info.get("version") or {}).get("number")}
            self.error = None
        except (ApiError, TransportError, UnsupportedProductError, TimeoutError) as e:
            self.error = describe(e)
        self.checked_at = time.time()

    async def health(self) -> ComponentHealth:
        if self.error:
            return ComponentHealth.failing(f"elasticsearch: {self.error}")
        return ComponentHealth(detail=dict(self.info or {}))

    async def status(self) -> ElasticsearchStatus:
        status: ElasticsearchStatus = {
            "hosts": self.hosts, "up": self.error is None, "error": self.error, "checked_at": self.checked_at,
        }  # fmt: skip
        if self.info is not None:  # once it answered
            status["cluster"], status["version"] = self.info["cluster"], self.info["version"]
        return status
