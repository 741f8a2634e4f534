"""data_processor: sync, clean or aggregate a batch of records. Standard library only.

Triggered on demand (`orchestrator trigger data_processor --param operation=aggregate`), on a
schedule, or by a database change, in which case the changed row is the record to process and
the change event is echoed in the result.
"""

from __future__ import annotations

import math
from typing import Any


def process(
    operation: str = "sync_data",
    batch_size: int = 100,
    records: list[dict[str, Any]] | None = None,
    change_event: dict[str, Any] | None = None,
    **context: Any,
) -> dict[str, Any]:
    """Entry point (`main.process`). `context` carries job_id, attempt, queue, source."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if records is None:
        records = _records_from_change(change_event)
    handlers = {"sync_data": _sync, "clean_data": _clean, "aggregate": _aggregate}
    if operation not in handlers:
        raise ValueError(f"unknown operation {operation!r}; expected one of {', '.join(handlers)}")
    print(f"data_processor: {operation} on {len(records)} record(s), job {context.get('job_id')}")
    result: dict[str, Any] = {
        "operation": operation,
        "batch_size": batch_size,
        "processed": len(records),
        "batches": math.ceil(len(records) / batch_size),
        **handlers[operation](records),
    }
    if change_event is not None:
        result["change_event"] = change_event
    return {"status": "success", "result": result}


def _records_from_change(change_event: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not change_event:
        return []
    # After the change for INSERT/UPDATE, before it for DELETE; "row" for producers that send one image.
    for key in ("after", "row", "before"):
        row = change_event.get(key)
        if isinstance(row, dict):
            return [row]
    return []


def _sync(records: list[dict[str, Any]]) -> dict[str, Any]:
    ids = [r.get("id") for r in records if isinstance(r, dict) and r.get("id") is not None]
    return {"synced_ids": ids}


def _clean(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Strip strings, drop empty fields, drop exact duplicates."""
    cleaned: list[dict[str, Any]] = []
    seen = set()
    for record in records:
        if not isinstance(record, dict):
            continue
        row = {
            k: v.strip() if isinstance(v, str) else v
            for k, v in record.items()
            if v is not None and not (isinstance(v, str) and not v.strip())
        }
        fingerprint = repr(sorted(row.items(), key=lambda kv: kv[0]))
        if fingerprint not in seen:
            seen.add(fingerprint)
            cleaned.append(row)
    return {"records": cleaned, "dropped": len(records) - len(cleaned)}


def _aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Count, sum, min and max of every numeric field."""
    stats: dict[str, dict[str, float]] = {}
    for record in records:
        if not isinstance(record, dict):
            continue
        for key, value in record.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            s = stats.setdefault(key, {"count": 0, "sum": 0, "min": value, "max": value})
            s["count"] += 1
            s["sum"] += value
            s["min"] = min(s["min"], value)
            s["max"] = max(s["max"], value)
    return {"fields": stats}
