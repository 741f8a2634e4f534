"""What the search index reports in `/status`: the Elasticsearch probe and the index sink.

Apart from probe.py and sink.py so that reading these types never imports Elasticsearch's client
(imported only when ES_HOSTS is set: index/build.py).
"""

from __future__ import annotations

from typing import NotRequired

from typing_extensions import TypedDict


class EsInfo(TypedDict):
    cluster: str | None
    version: str | None


class ElasticsearchStatus(TypedDict):
    """`/status` `elasticsearch`: whether the cluster answers this instance."""

    hosts: int
    """How many hosts ES_HOSTS names."""
    up: bool
    error: str | None
    checked_at: float | None
    cluster: NotRequired[str | None]
    """The cluster's name, once it answered."""
    version: NotRequired[str | None]
    """Its version number, once it answered."""


class IndexStatus(TypedDict):
    """`/status` `index`: the counters every leader's sink kept in Redis, and this one's progress."""

    rules: list[str]
    """The rules that index."""
    indexed: int
    """Documents Elasticsearch accepted (upserts and deletes)."""
    failed: int
    """Documents refused for good (each a failed `es_indexer` job)."""
    backlog: int
    """Actions waiting in the rules' streams."""
    requests: int
    """`_bulk` requests this sink sent (accepted or not)."""
    error: str | None
