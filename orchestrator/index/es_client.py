"""The Elasticsearch client from the settings: several hosts, basic auth or an API key, TLS options."""

from __future__ import annotations

from typing import Any

from elasticsearch import AsyncElasticsearch

from orchestrator.index.settings import IndexSettings


def es_client(settings: IndexSettings, **overrides: Any) -> AsyncElasticsearch:
    """A client for `ES_HOSTS` (the caller closes it). Raises ValueError when ES is not configured."""
    if not settings.es_hosts:
        raise ValueError("ES_HOSTS is not set")
    kwargs: dict[str, Any] = {"request_timeout": settings.es_timeout_s, "verify_certs": settings.es_verify_certs}
    if settings.es_api_key is not None:
        kwargs["api_key"] = settings.es_api_key.get_secret_value()
    elif settings.es_username:
        password = settings.es_password.get_secret_value() if settings.es_password else ""
        kwargs["basic_auth"] = (settings.es_username, password)
    if settings.es_ca_file is not None:
        kwargs["ca_certs"] = str(settings.es_ca_file)
    if not settings.es_verify_certs:
        kwargs["ssl_show_warn"] = False
    kwargs.update(overrides)
    # the client refuses a host listed twice; the same node twice is one node
    return AsyncElasticsearch(list(dict.fromkeys(settings.es_hosts)), **kwargs)
