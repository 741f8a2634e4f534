"""The index package's components for `orchestrator run`; Elasticsearch is imported only when it is configured."""

from __future__ import annotations

import logging

from orchestrator.cdc.rules import Rule
from orchestrator.components import Component
from orchestrator.index.settings import IndexSettings
from orchestrator.jobs.shared import Shared

logger = logging.getLogger(__name__)


def index_rules(rules: list[Rule]) -> list[str]:
    return [r.name for r in rules if r.index is not None and r.enabled]


def build(section: IndexSettings, shared: Shared, *, rules: list[Rule]) -> list[Component]:
    """With ES_HOSTS: the probe, and the sink when one of the change-capture `rules` has `index = {...}`."""
    indexing = index_rules(rules)
    if not section.es_hosts:
        if indexing:
            logger.warning("index: rules %s write to an index but ES_HOSTS is not set: actions wait in Redis", indexing)
        return []
    from orchestrator.index.es_client import es_client
    from orchestrator.index.probe import EsProbe
    from orchestrator.index.sink import IndexSink

    probe = EsProbe(es_client(section, max_retries=0), len(section.es_hosts))
    if not indexing:
        return [probe]
    return [
        probe,
        IndexSink(
            es_client(section),
            shared.redis,
            indexing,
            max_actions=section.es_bulk_max_actions,
            max_wait_s=section.es_bulk_max_wait_s,
            max_backoff_s=section.es_retry_max_backoff_s,
            result_ttl_s=shared.store.ttl_ms / 1000,
            queue=shared.submitter.defaults.default_queue,
            tracing=shared.tracing,
        ),
    ]
