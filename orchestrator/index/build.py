"""Builds the index sink for `orchestrator run`; Elasticsearch is imported only when it is configured."""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from orchestrator.components import Component
from orchestrator.config import Settings

logger = logging.getLogger(__name__)


def index_rules(settings: Settings) -> list[str]:
    return [r.name for r in settings.cdc.rules if r.index is not None and r.enabled]


def build_index_components(settings: Settings, redis: Redis) -> list[Component]:
    """With ES_HOSTS: the probe, and the sink when a rule has `index = {...}`. Without: nothing."""
    rules = index_rules(settings)
    if not settings.es_hosts:
        if rules:
            logger.warning("index: rules %s write to an index but ES_HOSTS is not set: actions wait in Redis", rules)
        return []
    from orchestrator.index.es_client import es_client
    from orchestrator.index.probe import EsProbe
    from orchestrator.index.sink import IndexSink

    probe = EsProbe(es_client(settings, max_retries=0), len(settings.es_hosts))
    if not rules:
        return [probe]
    return [
        probe,
        IndexSink(
            es_client(settings),
            redis,
            rules,
            max_actions=settings.es_bulk_max_actions,
            max_wait_s=settings.es_bulk_max_wait_s,
            max_backoff_s=settings.es_retry_max_backoff_s,
            result_ttl_s=settings.result_ttl_s,
            queue=settings.default_queue,
        ),
    ]
