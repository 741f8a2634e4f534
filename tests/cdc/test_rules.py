"""Rules as configured: the [[cdc.rules]] shape, the seed's monitored_tables, conditions, bad values."""

from __future__ import annotations

import tomllib

import pytest

from orchestrator.cdc.rules import CdcSettings, Rule
from orchestrator.config import load_settings
from orchestrator.errors import ConfigError

TOML = """
[[rules]]
name = "paid"
table = "shop.orders"
operations = ["insert", "UPDATE"]
triggers = ["data_processor"]
conditions = {status = "paid", region = {in = ["eu", "us"]}, test = {not = 1}, total = {changed = true}}
params = {operation = "aggregate"}
priority = "high"
queue = "warehouse"

[monitored_tables.your_table]
triggers = ["your_plugin"]
conditions = {status = "active"}
operations = ["INSERT", "UPDATE"]
"""


def test_rules_and_the_seed_shape_are_read_as_written() -> None:
    cdc = CdcSettings.model_validate(tomllib.loads(TOML))
    paid, seeded = cdc.all_rules()
    assert paid.plugins == ["data_processor"] and paid.operations == ["INSERT", "UPDATE"]
    assert [c.describe() for c in paid.conditions] == [
        "status == 'paid'",
        "region in ['eu', 'us']",
        "test != 1",
        "total changed",
    ]
    assert (paid.priority, paid.queue, paid.params, paid.mode) == (
        "high",
        "warehouse",
        {"operation": "aggregate"},
        "changelog",
    )
    assert (seeded.name, seeded.table, seeded.plugins, seeded.operations) == (
        "your_table",
        "your_table",
        ["your_plugin"],
        ["INSERT", "UPDATE"],
    )
    assert seeded.qualified_table("app") == "app.your_table"


def test_conditions_match_as_users_mean_them() -> None:
    rule = CdcSettings.model_validate(tomllib.loads(TOML)).all_rules()[0]
    row = {"status": "paid", "region": "eu", "test": 0, "total": "12.50"}
    assert rule.matches("UPDATE", row, {**row, "total": 10})
    assert not rule.matches("UPDATE", row, row)  # total did not change
    assert not rule.matches("DELETE", None, row)  # operation filtered
    assert not rule.matches("UPDATE", {**row, "region": "asia"}, {**row, "total": 1})
    assert not rule.matches("UPDATE", {**row, "test": "1"}, {**row, "total": 1})  # "1" == 1
    assert not rule.matches("INSERT", row, None)  # `changed` needs two images
    matched, checks = rule.evaluate("UPDATE", {**row, "status": "new"}, {**row, "total": 1})
    assert not matched and ("status == 'paid'", False) in checks


def test_a_number_condition_matches_decimal_text_and_floats() -> None:
    rule = Rule(name="r", table="t", plugins=["p"], conditions={"total": 100, "flag": True})  # type: ignore[arg-type]
    assert rule.matches("INSERT", {"total": "100.00", "flag": 1}, None)
    assert rule.matches("INSERT", {"total": 100.0, "flag": 1}, None)
    assert not rule.matches("INSERT", {"total": "100.5", "flag": 1}, None)


def test_a_json_column_value_is_compared_not_a_crash() -> None:
    # Found by tests/test_properties.py: a list or object in the row (a JSON column) raised TypeError.
    rule = Rule(name="r", table="t", plugins=["p"], conditions={"tags": {"in": [["a"], "b"]}, "n": {"not": 10**400}})  # type: ignore[arg-type]
    assert rule.matches("INSERT", {"tags": ["a"], "n": 1}, None)
    assert rule.matches("INSERT", {"tags": "b", "n": {"k": 1}}, None)
    assert not rule.matches("INSERT", {"tags": ["b"], "n": 1}, None)
    assert not rule.matches("INSERT", {"tags": {"a": 1}, "n": 1}, None)
    assert not rule.matches("INSERT", {"tags": "b", "n": 10**400}, None)


def test_delete_conditions_test_the_deleted_row() -> None:
    rule = Rule(name="r", table="t", plugins=["p"], conditions={"status": "gone"})  # type: ignore[arg-type]
    assert rule.matches("DELETE", None, {"status": "gone"})


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ([{"name": "a", "table": "t"}], "at least one plugin"),
        ([{"name": "a:b", "table": "t", "plugins": ["p"]}], "rule name"),
        ([{"name": "a", "table": "x.y.z", "plugins": ["p"]}], "db.table"),
        ([{"name": "a", "table": "t", "plugins": ["p"], "operations": ["MERGE"]}], "operations"),
        ([{"name": "a", "table": "t", "plugins": ["p"], "conditions": {"c": {"in": 3}}}], "'in' takes a list"),
        (
            [{"name": "a", "table": "t", "plugins": ["p"], "mode": "timestamp", "operations": ["DELETE"]}],
            "cannot see DELETEs",
        ),
        (
            [
                {
                    "name": "a",
                    "table": "t",
                    "plugins": ["p"],
                    "mode": "timestamp",
                    "conditions": {"c": {"changed": True}},
                }
            ],
            "before image",
        ),
        ([{"name": "a", "table": "t", "plugins": ["p"]}, {"name": "a", "table": "u", "plugins": ["p"]}], "duplicate"),
    ],
)
def test_a_bad_rule_fails_startup_with_one_line_naming_the_key(rules: list[dict[str, object]], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, cdc={"rules": rules})
    message = str(info.value)
    assert "cdc" in message and problem in message and "\n" not in message


def test_the_polling_interval_takes_the_seed_name_and_sub_second_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_CHANGE_POLLING_INTERVAL", "0.1")
    assert load_settings(None).db_change_polling_interval_s == 0.1


def test_rules_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_CDC", '{"rules": [{"name": "a", "table": "db.t", "plugins": ["p"]}]}')
    assert [r.name for r in load_settings(None).cdc.all_rules()] == ["a"]


def test_timestamp_mode_drops_delete_from_the_default_operations() -> None:
    rule = Rule(name="r", table="t", plugins=["p"], mode="timestamp")
    assert rule.operations == ["INSERT", "UPDATE"]


def test_a_rule_may_send_to_an_index_without_plugins() -> None:
    rule = Rule(name="r", table="t", index={"name": "orders"})
    assert rule.index is not None and rule.index.name == "orders" and rule.plugins == []
