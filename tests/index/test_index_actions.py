"""A rule's `index = {...}`: validation, and the action a change becomes (no Redis, no Elasticsearch)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from orchestrator.cdc.model import Change
from orchestrator.cdc.rules import Rule
from orchestrator.index.sink import bulk_body


def change(op: str, row: dict[str, object] | None, before: dict[str, object] | None = None) -> Change:
    return Change("7", 7, "db.t", op, {"id": 3}, row, before, 1.5)


def test_fields_rename_and_id_shape_the_document() -> None:
    rule = Rule(
        name="r", table="t", index={"name": "t", "id": "code", "fields": ["code", "name"], "rename": {"name": "n"}}
    )
    assert rule.index is not None
    action = rule.index.action("r", change("UPDATE", {"id": 3, "code": "x9", "name": "Ann", "secret": "s"}))
    assert action == {
        "rule": "r", "change_id": "7", "changed_at": 1.5, "index": "t", "id": "x9", "op": "index",
        "doc": {"code": "x9", "n": "Ann"}, "version": 7,
    }  # fmt: skip
    delete = rule.index.action("r", change("DELETE", None, {"id": 3, "code": "x9"}))
    assert delete["op"] == "delete" and delete["id"] == "x9" and "doc" not in delete
    # the change's position is the document's external version: an older one never wins
    assert bulk_body([action, delete]) == [
        {"index": {"_index": "t", "_id": "x9", "version": 7, "version_type": "external"}},
        {"code": "x9", "n": "Ann"},
        {"delete": {"_index": "t", "_id": "x9", "version": 7, "version_type": "external"}},
    ]
    unversioned = Change("t1-3", 0, "db.t", "UPDATE", {"id": 3}, {"id": 3, "code": "x9"}, None, 1.5)
    assert "version" not in rule.index.action("r", unversioned)  # timestamp mode: no position to order by


def test_without_fields_every_column_and_the_primary_key_as_id() -> None:
    rule = Rule(name="r", table="t", index={"name": "t"})
    assert rule.index is not None
    action = rule.index.action("r", change("INSERT", {"id": 3, "a": 1}))
    assert action["id"] == "3" and action["doc"] == {"id": 3, "a": 1}


@pytest.mark.parametrize("index", [{"name": "Upper"}, {"name": ""}, {"name": "t", "unknown": 1}, {"id": "id"}])
def test_a_bad_index_block_is_refused(index: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Rule(name="r", table="t", index=index)
