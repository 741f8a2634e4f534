"""Builds the index sink for `orchestrator run`; Elasticsearch is imported only when it is configured."""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from orchestrator.components import Component
from orchestrator.config import Settings

logger = logging.getLogger(__name__)


def index_rules(settings: Settings) -> list[str]:
    return [r.name for r in settings.cdc.rules if r.index is not None and r.enabled]


def build_index_sink(settings: Settings, redis: Redis) -> Component | None:
    """The sink when ES_HOSTS is set and a rule has `index = {...}`; else None."""
    rules = index_rules(settings)
    if not rules:
        return None
    if not settings.es_hosts:
        logger.warning("index: rules %s send to an index but ES_HOSTS is not set: their actions wait in Redis", rules)
        return None
    from orchestrator.index.client import es_client
    from orchestrator.index.sink import IndexSink

    return IndexSink(
        es_client(settings),
        redis,
        rules,
        max_actions=settings.es_bulk_max_actions,
        max_wait_s=settings.es_bulk_max_wait_s,
        max_backoff_s=settings.es_retry_max_backoff_s,
        result_ttl_s=settings.result_ttl_s,
    )
