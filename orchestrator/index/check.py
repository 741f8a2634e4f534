"""`orchestrator es check`: can this configuration reach Elasticsearch, and do the target indices exist?"""

from __future__ import annotations

from typing import Any

from elastic_transport import ConnectionError as EsConnectionError
from elastic_transport import ConnectionTimeout, TransportError
from elasticsearch import ApiError, UnsupportedProductError

from orchestrator.config import Settings
from orchestrator.index.client import es_client


def target_indices(settings: Settings) -> dict[str, list[str]]:
    """index -> the rules that write to it."""
    out: dict[str, list[str]] = {}
    for rule in settings.cdc.rules:
        if rule.index is not None:
            out.setdefault(rule.index.name, []).append(rule.name)
    return out


async def es_check(settings: Settings, extra_indices: list[str]) -> dict[str, Any]:
    """{"ok", "hosts", "cluster", "version", "error", "indices": [{"index", "rules", "exists"}]}."""
    report: dict[str, Any] = {"ok": False, "hosts": len(settings.es_hosts), "indices": []}
    targets = target_indices(settings)
    for name in extra_indices:
        targets.setdefault(name, [])
    es = es_client(settings, max_retries=0)
    try:
        info = await es.info()
        report |= {"cluster": info.get("cluster_name"), "version": (info.get("version") or {}).get("number")}
        for index, rules in sorted(targets.items()):
            exists = bool(await es.indices.exists(index=index))
            report["indices"].append({"index": index, "rules": rules, "exists": exists})
        report["ok"] = all(i["exists"] for i in report["indices"])
    except ApiError as e:
        report["error"] = f"HTTP {e.meta.status}: {e.message}"
    except (EsConnectionError, ConnectionTimeout) as e:
        report["error"] = f"unreachable: {type(e).__name__}: {str(e)[:300]}"
    except (UnsupportedProductError, TransportError) as e:  # e.g. a server that is not Elasticsearch
        report["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    finally:
        await es.close()
    return report
