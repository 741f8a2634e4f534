"""The Redis side of the search-index sink: a rule's `index = {...}` and the actions it makes.

A rule with `index = { name = "teachers", id = "id", fields = [...], rename = {...} }` turns each
matching change into one action (upsert on INSERT/UPDATE, delete on DELETE) appended to the
rule's Redis stream in the same atomic script as the change-capture position (see
`jobs.state.Checkpoint.streams`): the position never runs ahead of what waits durably for the
index. `orchestrator.index.sink.IndexSink` (leader-only) sends the stream to Elasticsearch.

This module imports no Elasticsearch code: change capture runs without the client loaded.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # rules.py imports this module and must stay a leaf (config.py builds on it)
    from orchestrator.cdc.model import Change


class IndexSpec(BaseModel):
    """What a rule sends to the index.

    Args:
        name: the target index.
        id: the column (or columns, joined with '-') giving the document id; default: the primary key.
        fields: the columns copied into the document; empty: every column.
        rename: column -> field name in the document.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_.\-]*$")
    id: str | list[str] | None = None
    fields: list[str] = Field(default_factory=list)
    rename: dict[str, str] = Field(default_factory=dict)

    def doc_id(self, change: Change) -> str:
        row = change.row or change.before or {}
        cols = [self.id] if isinstance(self.id, str) else self.id
        values = [row.get(c) for c in cols] if cols else list(change.primary_key.values())
        if cols and any(v is None for v in values):
            values = list(change.primary_key.values())
        return "-".join(str(v) for v in values)

    def document(self, row: dict[str, Any]) -> dict[str, Any]:
        cols = self.fields or list(row)
        return {self.rename.get(c, c): row.get(c) for c in cols}

    def action(self, rule: str, change: Change) -> dict[str, Any]:
        """The sink's action for `change` (plain JSON): what `_bulk` needs, and where it came from."""
        out: dict[str, Any] = {
            "rule": rule,
            "change_id": change.change_id,
            "changed_at": change.changed_at,
            "index": self.name,
            "id": self.doc_id(change),
        }
        if change.seq > 0:
            # the change's place in its source (changelog id, binlog GTID/offset): the sink writes
            # it as an external version, so an older state never replaces a newer one
            out["version"] = change.seq
        if change.operation == "DELETE" or change.row is None:
            out["op"] = "delete"
        else:
            out["op"] = "index"
            out["doc"] = self.document(change.row)
        return out


def index_stream(rule: str) -> str:
    """The Redis stream of one rule's pending index actions (entries are deleted once accepted)."""
    return f"orch:index:actions:{rule}"


def encode_action(action: dict[str, Any]) -> str:
    return json.dumps(action, separators=(",", ":"), default=str)
