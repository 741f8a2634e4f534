"""Change-capture rules: the `[cdc]` config section, and which changes a rule takes.

One rule per consumer, as users had them in code:

    [[cdc.rules]]
    name = "paid_orders"
    table = "shop.orders"                    # db.table (the DATABASE_URL's db when no db is given)
    operations = ["INSERT", "UPDATE"]
    plugins = ["data_processor"]             # `triggers` (the seed's word) works too
    conditions = {status = "paid", region = {in = ["eu", "us"]}, test = {not = 1}, total = {changed = true}}
    params = {operation = "sync_data"}       # passed to every plugin of the rule
    priority = "high"
    queue = "warehouse"

The seed's `monitored_tables` shape (table -> triggers/conditions/operations) is accepted as written
under `[cdc.monitored_tables]`; each entry becomes a rule named after its table.

This module imports nothing of the project but the leaf index_actions (config.py builds Settings from it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestrator.cdc.index_actions import IndexSpec

Operation = Literal["INSERT", "UPDATE", "DELETE"]
Mode = Literal["changelog", "timestamp", "binlog"]
OPERATIONS: tuple[Operation, ...] = ("INSERT", "UPDATE", "DELETE")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_IDENT = re.compile(r"^[A-Za-z0-9_$]{1,64}$")


def check_table_name(value: str) -> str:
    parts = value.split(".")
    if len(parts) > 2 or not all(_IDENT.fullmatch(p) for p in parts):
        msg = f"table {value!r}: expected db.table (letters, digits, '_' and '$')"
        raise ValueError(msg)
    return value


ConditionOp = Literal["equals", "in", "not", "changed"]
_OPS: tuple[str, ...] = ("equals", "in", "not", "changed")


class Condition(BaseModel):
    """One test on one column, written `{column, equals|in|not|changed = value}`.

    - `equals`: the column's value equals this one (the plain `column = value` form).
    - `in`: the value is one of these.
    - `not`: the value differs from this one.
    - `changed`: for UPDATE, whether the value differs before/after (true) or not (false).
    """

    model_config = ConfigDict(extra="forbid")

    column: str
    op: ConditionOp
    value: Any = None

    @model_validator(mode="before")
    @classmethod
    def _from_operator_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "op" not in data:
            given = [k for k in _OPS if k in data]
            if len(given) != 1:
                msg = f"condition on {data.get('column')!r}: give exactly one of equals, in, not, changed"
                raise ValueError(msg)
            rest = {k: v for k, v in data.items() if k not in _OPS}
            return {**rest, "op": given[0], "value": data[given[0]]}
        return data

    @model_validator(mode="after")
    def _check_value(self) -> Condition:
        if self.op == "in" and not isinstance(self.value, list):
            raise ValueError(f"condition on {self.column!r}: 'in' takes a list")
        if self.op == "changed" and not isinstance(self.value, bool):
            raise ValueError(f"condition on {self.column!r}: 'changed' takes true or false")
        return self

    def describe(self) -> str:
        if self.op == "in":
            return f"{self.column} in {self.value!r}"
        if self.op == "not":
            return f"{self.column} != {self.value!r}"
        if self.op == "changed":
            return f"{self.column} {'changed' if self.value else 'unchanged'}"
        return f"{self.column} == {self.value!r}"

    def test(self, operation: str, row: dict[str, Any], before: dict[str, Any] | None) -> bool:
        if self.op == "changed":
            if operation != "UPDATE" or before is None:
                # INSERT and DELETE have one image: nothing "changed" between two
                return False
            return (_norm(row.get(self.column)) != _norm(before.get(self.column))) is self.value
        return _value_test(self)(row.get(self.column))


def _value_test(condition: Condition) -> Callable[[Any], bool]:
    """An equals/in/not condition as a function of the column's value, its values normalised once."""
    values = condition.value if condition.op == "in" else [condition.value]
    expected = frozenset(_norm(v) for v in values if _hashable(v))
    # A JSON column's value (a list or an object) cannot be hashed: compared by equality instead.
    unhashable = [v for v in values if not _hashable(v)]
    wanted = condition.op != "not"

    def test(raw: Any) -> bool:
        if type(raw) is str and raw in expected:  # the common case: text equal as written
            return wanted
        value = _norm(raw)
        if not _hashable(value):
            return (value in unhashable) is wanted
        return (value in expected) is wanted

    return test


Matcher = Callable[[str, dict[str, Any] | None, dict[str, Any] | None], bool]


def compile_matcher(rule: Rule) -> Matcher:
    """`rule.matches` as one closure with everything precomputed (the poller calls it per change)."""
    operations = frozenset(rule.operations)
    value_tests = [(c.column, _value_test(c)) for c in rule.conditions if c.op != "changed"]
    changed = [c for c in rule.conditions if c.op == "changed"]

    def match(operation: str, row: dict[str, Any] | None, before: dict[str, Any] | None) -> bool:
        if operation not in operations:
            return False
        image = row if row is not None else (before or {})
        for column, test in value_tests:
            if not test(image.get(column)):
                return False
        return all(c.test(operation, image, before) for c in changed)

    return match


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _norm(value: Any) -> Any:
    """Compare as the user means it: 1 == "1" == 1.0 (MySQL hands back text for DECIMAL, JSON for numbers)."""
    if isinstance(value, bool):
        return str(int(value))  # MySQL has no booleans: TINYINT 1/0
    if isinstance(value, int):
        return str(value)  # not through float: an int past 1e308 would overflow it
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return str(int(number)) if number.is_integer() and "e" not in value.lower() else value
    return value


def parse_conditions(raw: Any) -> list[Condition]:
    """`{col: value}`, `{col: {in: [...]}}`, or a list of `{column, equals|in|not|changed}`."""
    if raw is None:
        return []
    if isinstance(raw, list):
        return [c if isinstance(c, Condition) else Condition.model_validate(c) for c in raw]
    if not isinstance(raw, dict):
        msg = "conditions must be a table {column = value} or a list of {column, equals|in|not|changed}"
        raise ValueError(msg)  # noqa: TRY004 - pydantic reports ValueError as a validation error
    out = []
    for column, spec in raw.items():
        if isinstance(spec, dict) and len(spec) == 1 and set(spec) <= set(_OPS):
            out.append(Condition.model_validate({"column": column, **spec}))
        else:
            out.append(Condition(column=column, op="equals", value=spec))
    return out


class Rule(BaseModel):
    """One consumer of changes on one table.

    Args:
        name: unique; part of job ids (`cdc:<rule>:<change id>:<plugin>`).
        table: `db.table`, or `table` in the DATABASE_URL's database.
        operations: which of INSERT/UPDATE/DELETE (timestamp mode: INSERT/UPDATE only).
        conditions: every one must hold (see Condition).
        plugins: the plugins to run for each matching change (one job each).
        workflow: a workflow named in `[workflows]`, started for each matching change (its steps get
            `change_event` like a rule's jobs; id `cdc:<rule>:<change id>:wf`, so once per change).
        params: job parameters given to every plugin of the rule.
        mode: `changelog` (triggers fill a changelog table), `timestamp` (no triggers), or `binlog`
            (read the binlog as a replica: nothing installed; default: `[cdc] mode`).
        timestamp_column / created_column: timestamp mode's cursor column, and optionally a
            creation-time column that tells an INSERT (equal values) from an UPDATE.
        primary_key: the key columns (default: read from the table's PRIMARY KEY).
        index: send matching changes to a search index (cdc/index_actions.py: name, id, fields, rename).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    table: str
    operations: list[Operation] = Field(default_factory=lambda: list(OPERATIONS))
    conditions: list[Condition] = Field(default_factory=list)
    plugins: list[str] = Field(default_factory=list, validation_alias=AliasChoices("plugins", "triggers"))
    workflow: str | None = None  # a workflow named in [workflows], started once per matching change
    params: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = None
    priority: str | int | None = None
    enabled: bool = True
    mode: Mode = "changelog"
    timestamp_column: str = "updated_at"
    created_column: str | None = None
    primary_key: list[str] | None = None
    index: IndexSpec | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value) or ":" in value:
            msg = f"rule name {value!r}: use 1-64 letters, digits, '_', '-' or '.'"
            raise ValueError(msg)
        return value

    @field_validator("table")
    @classmethod
    def _check_table(cls, value: str) -> str:
        return check_table_name(value)

    @field_validator("operations", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        return [v.upper() if isinstance(v, str) else v for v in value]

    @field_validator("conditions", mode="before")
    @classmethod
    def _conditions(cls, value: Any) -> Any:
        return parse_conditions(value)

    @field_validator("timestamp_column", "created_column")
    @classmethod
    def _check_column(cls, value: str | None) -> str | None:
        if value is not None and not _IDENT.fullmatch(value):
            msg = f"column {value!r}: letters, digits, '_' and '$' only"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _check_mode(self) -> Rule:
        if not self.plugins and self.index is None and self.workflow is None:
            raise ValueError(f"rule {self.name!r}: name at least one plugin (plugins = [...]) or a workflow")
        if self.mode == "timestamp":
            if "DELETE" in self.operations and "operations" in self.model_fields_set:
                raise ValueError(f"rule {self.name!r}: timestamp mode cannot see DELETEs (use mode = 'changelog')")
            self.operations = [op for op in self.operations if op != "DELETE"]
            if any(c.op == "changed" for c in self.conditions):
                raise ValueError(f"rule {self.name!r}: 'changed' needs the before image (mode = 'changelog')")
        return self

    def qualified_table(self, default_db: str | None) -> str:
        if "." in self.table:
            return self.table
        if not default_db:
            msg = f"rule {self.name!r}: table {self.table!r} names no database and DATABASE_URL has none"
            raise ValueError(msg)
        return f"{default_db}.{self.table}"

    def evaluate(
        self, operation: str, row: dict[str, Any] | None, before: dict[str, Any] | None
    ) -> tuple[bool, list[tuple[str, bool]]]:
        """(matched, [(what was tested, passed)]). DELETE tests conditions against the deleted row."""
        checks: list[tuple[str, bool]] = [(f"operation {operation} in {self.operations}", operation in self.operations)]
        image = row if row is not None else (before or {})
        for condition in self.conditions:
            checks.append((condition.describe(), condition.test(operation, image, before)))
        return all(ok for _, ok in checks), checks

    def matches(self, operation: str, row: dict[str, Any] | None, before: dict[str, Any] | None) -> bool:
        return compile_matcher(self)(operation, row, before)


class SeedTable(BaseModel):
    """One entry of the seed's `monitored_tables` dict."""

    model_config = ConfigDict(extra="forbid")

    triggers: list[str]
    conditions: dict[str, Any] = Field(default_factory=dict)
    operations: list[str] = Field(default_factory=lambda: [str(op) for op in OPERATIONS])


class CdcSettings(BaseModel):
    """The `[cdc]` section.

    Args:
        rules: `[[cdc.rules]]`.
        monitored_tables: the seed's shape, accepted as written (one rule per table).
        changelog_table: where the triggers write (`db.table`; default: `orch_changelog` in the
            DATABASE_URL's database).
        retention_s: delivered changelog rows are deleted after this long (`cdc replay` reaches back
            this far).
        batch_size: changes per atomic Redis write (jobs + position).
        hole_timeout_s: without the PROCESS privilege (no information_schema.INNODB_TRX), a
            missing changelog id is given up after this long: set it above your longest transaction.
        timestamp_margin_s: timestamp mode reads this far behind the oldest open transaction
            (covers a statement's start preceding its transaction's start).
        reconnect_max_s: the longest wait between reconnect attempts.
        mode: the mode of every rule that names none (`changelog` when unset).
        binlog_server_id: binlog mode's replica id (unique among the server's replicas).
        on_purged: binlog mode, when the stored position was purged from the server: `error` (the
            rules report it; `orchestrator cdc snapshot RULE` is the way back) or `snapshot`
            (resume from the server's current position and snapshot the tables).
        snapshot_chunk_rows: binlog mode's `cdc snapshot` reads the table in chunks of this many rows,
            each between two watermarks (cdc/binlog_snapshot.py).
    """

    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(default_factory=list)
    monitored_tables: dict[str, SeedTable] = Field(default_factory=dict)
    changelog_table: str | None = None
    retention_s: Annotated[float, Field(ge=0)] = 3600.0
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 500
    hole_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    timestamp_margin_s: Annotated[float, Field(ge=0.2)] = 1.0
    reconnect_max_s: Annotated[float, Field(gt=0)] = 30.0
    mode: Mode | None = None
    binlog_server_id: Annotated[int, Field(ge=1, le=4294967295)] = 1_904_000_001
    on_purged: Literal["error", "snapshot"] = "error"
    snapshot_chunk_rows: Annotated[int, Field(ge=1, le=100_000)] = 1000

    @model_validator(mode="after")
    def _unique_names(self) -> CdcSettings:
        names = [r.name for r in self.all_rules()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate rule names: {', '.join(dupes)}")
        if self.changelog_table is not None:
            check_table_name(self.changelog_table)
        return self

    def all_rules(self) -> list[Rule]:
        seeded = [
            Rule(
                name=table.replace(".", "_"),
                table=table,
                plugins=spec.triggers,
                conditions=parse_conditions(spec.conditions),
                operations=spec.operations,  # type: ignore[arg-type]
                mode=self.mode or "changelog",
            )
            for table, spec in self.monitored_tables.items()
        ]
        rules = self.rules
        if self.mode is not None:
            rules = [r if "mode" in r.model_fields_set else r.model_copy(update={"mode": self.mode}) for r in rules]
        return [*rules, *seeded]
