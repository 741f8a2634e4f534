"""`orchestrator es check`: can this configuration reach Elasticsearch, and do the target indices exist?"""

from __future__ import annotations

from typing import Any

from elastic_transport import ConnectionError as EsConnectionError
from elastic_transport import ConnectionTimeout, TransportError
from elasticsearch import ApiError, UnsupportedProductError

from orchestrator.cdc.rules import Rule
from orchestrator.index.es_client import es_client
from orchestrator.index.settings import IndexSettings


def describe(error: BaseException) -> str:
    """One line: the error and its innermost cause (the client's "TLS error" hides the certificate's reason)."""
    root: BaseException = error
    seen = {id(root)}
    while True:
        nested = getattr(root, "errors", None)
        nxt = (nested[0] if nested else None) or root.__cause__ or root.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        root = nxt
    text = f"{type(error).__name__}: {error}"
    if root is not error:
        text += f" ({type(root).__name__}: {root})"
    return " ".join(text.split())[:400]


def target_indices(rules: list[Rule]) -> dict[str, list[str]]:
    """index -> the rules that write to it."""
    out: dict[str, list[str]] = {}
    for rule in rules:
        if rule.index is not None:
            out.setdefault(rule.index.name, []).append(rule.name)
    return out


async def es_check(settings: IndexSettings, rules: list[Rule], extra_indices: list[str]) -> dict[str, Any]:
    """{"ok", "hosts", "cluster", "version", "error", "indices": [{"index", "rules", "exists"}]}."""
    report: dict[str, Any] = {"ok": False, "hosts": len(settings.es_hosts), "indices": []}
    targets = target_indices(rules)
    for name in extra_indices:
        targets.setdefault(name, [])
    es = es_client(settings, max_retries=0)
    try:
        info = await es.info()
        report |= {"cluster": info.get("cluster_name"), "version": (info.get("version") or {}).get("number")}
        for index, writers in sorted(targets.items()):
            exists = bool(await es.indices.exists(index=index))
            report["indices"].append({"index": index, "rules": writers, "exists": exists})
        report["ok"] = all(i["exists"] for i in report["indices"])
    except ApiError as e:
        report["error"] = f"HTTP {e.meta.status}: {e.message}"
    except (EsConnectionError, ConnectionTimeout) as e:
        report["error"] = f"unreachable: {describe(e)}"
    except (UnsupportedProductError, TransportError) as e:  # e.g. a server that is not Elasticsearch
        report["error"] = describe(e)
    finally:
        await es.close()
    return report
