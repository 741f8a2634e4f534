"""Property tests (hypothesis): the parsers that take text from users and from the network give a
valid value or their one clear error for anything, however nested, never another exception.

Kept small (max_examples modest, no deadline on a shared CI box): they look for a class of input
the example tests did not think of, not for speed.
"""

from __future__ import annotations

import json
import string
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator import nesting
from orchestrator.cdc.rules import Condition, Rule, parse_conditions
from orchestrator.config import Settings, load_settings
from orchestrator.errors import ConfigError, ManifestError
from orchestrator.jobs.model import MAX_JOB_ID, job_id_problem
from orchestrator.plugins.manifest import Manifest, is_plugin_name, load_manifest
from orchestrator.schedules.model import ScheduleSpec

# derandomize: the same examples on every run (a CI failure is reproducible, never a coin toss).
# The suite's autouse fixtures (a clean environment, a tmp cwd) are function-scoped; nothing here
# depends on them being fresh per example.
FAST = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def deep(depth: int, opener: str = "[") -> str:
    closer = {"[": "]", "{": "}"}[opener]
    if opener == "{":
        return '{"a":' * depth + "1" + "}" * depth
    return opener * depth + closer * depth


depths = st.integers(min_value=0, max_value=3000)


# -- JSON that enters over HTTP and from plugin.json --
@FAST
@given(st.text(max_size=200) | depths.map(deep) | depths.map(lambda d: deep(d, "{")))
def test_json_bodies_decode_or_fail_with_a_clear_error(text: str) -> None:
    try:
        value = nesting.loads(text)
    except (json.JSONDecodeError, nesting.TooDeep):
        return
    assert nesting.depth(value) <= nesting.MAX_DEPTH


# -- the manifest parser --
@pytest.fixture(scope="module")
def plugin_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "p"
        folder.mkdir()
        (folder / "main.py").write_text("def run(**kwargs):\n    return kwargs\n")
        yield folder


manifest_keys = st.sampled_from([*Manifest.model_fields, "unknown", "pool", "limits"])
manifest_like = st.dictionaries(manifest_keys, json_values, max_size=8).map(
    lambda d: {"name": "p", "version": "1", "entry_point": "main.run", **d}
)


@FAST
@given(
    st.text(max_size=300)
    | manifest_like.map(json.dumps)
    | depths.map(lambda d: '{"name": "p", "version": "1", "entry_point": "main.run", "tags": ' + deep(d) + "}")
)
def test_any_plugin_json_loads_or_is_refused_with_a_reason(plugin_dir: Path, text: str) -> None:
    (plugin_dir / "plugin.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        manifest, warnings = load_manifest(plugin_dir)
    except ManifestError as e:
        assert str(e).startswith("plugin.json") and "\n" not in str(e).strip()
        return
    assert isinstance(manifest, Manifest) and all(isinstance(w, str) for w in warnings)
    for req in manifest.dependencies:  # whatever got through is one plain requirement each
        assert req.isprintable() and not any(word.startswith("-") for word in req.split())


@FAST
@given(st.text(max_size=40))
def test_plugin_names_are_whole_matches(name: str) -> None:
    if is_plugin_name(name):
        assert "/" not in name and "." not in name and name.isprintable() and name.strip() == name


# -- the config loader --
setting_names = st.sampled_from([*Settings.model_fields, "shutdown_grase_s", "plugins", "REDIS_URL"])
toml_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=string.printable, max_size=20)
)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)  # a JSON string, integer or float is a TOML one too


toml_docs = st.builds(
    lambda top, sections: (
        "".join(f"{k} = {toml_value(v)}\n" for k, v in top.items())
        + "".join(
            f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in body.items())
            for name, body in sections.items()
        )
    ),
    st.dictionaries(setting_names, toml_scalars | st.lists(toml_scalars, max_size=3), max_size=5),
    st.dictionaries(
        st.sampled_from(["queues.bulk", "cdc", "plugins.x.throttle", "queues", "redis"]),
        st.dictionaries(
            st.sampled_from(["concurrency", "rules", "rate", "changelog_table", "x"]), toml_scalars, max_size=3
        ),
        max_size=2,
    ),
)


@FAST
@given(st.text(max_size=200) | toml_docs)
def test_any_config_file_gives_settings_or_one_line(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "orchestrator.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            result = load_settings(path)
        except ConfigError as e:
            assert "\n" not in str(e)
            return
    assert isinstance(result, Settings)


# -- the change-capture condition parser, and a condition's test on any row --
conditions = (
    json_values
    | st.dictionaries(st.text(max_size=8), st.dictionaries(st.sampled_from(["equals", "in", "not", "changed"]), json_values, max_size=2), max_size=3)
    | st.lists(st.dictionaries(st.sampled_from(["column", "equals", "in", "not", "changed", "op", "x"]), json_values, max_size=3), max_size=3)
)  # fmt: skip
rows = st.dictionaries(st.text(max_size=8), json_values, max_size=4)


@FAST
@given(conditions, st.sampled_from(["INSERT", "UPDATE", "DELETE"]), rows, rows | st.none())
def test_conditions_parse_or_fail_and_never_raise_on_a_row(raw: Any, op: str, row: Any, before: Any) -> None:
    try:
        parsed = parse_conditions(raw)
    except ValueError:  # pydantic's ValidationError is one
        return
    assert all(isinstance(c, Condition) for c in parsed)
    for condition in parsed:
        assert isinstance(condition.test(op, row, before), bool)
        assert isinstance(condition.describe(), str)


@FAST
@given(st.text(max_size=80), st.text(max_size=80))
def test_rule_and_schedule_identifiers_are_whole_matches(name: str, table: str) -> None:
    try:
        rule = Rule.model_validate({"name": name, "table": table, "plugins": ["p"]})
    except ValidationError:
        pass
    else:
        assert "\n" not in rule.name + rule.table and rule.name.isprintable()
    try:
        spec = ScheduleSpec.model_validate({"id": name, "plugin": "p", "every": "1h"})
    except ValidationError:
        pass
    else:
        assert spec.id.isprintable() and spec.id.strip() == spec.id


# -- job ids --
@FAST
@given(st.text(max_size=MAX_JOB_ID + 20))
def test_job_ids_are_printable_or_refused_in_one_line(job_id: str) -> None:
    problem = job_id_problem(job_id)
    if problem is None:
        assert 1 <= len(job_id) <= MAX_JOB_ID and job_id.isprintable()
        assert not any(ch in job_id for ch in "\r\n\t\v\f\x00\x1b\u2028")
    else:
        assert "\n" not in problem and "\r" not in problem


def test_a_trailing_newline_never_passes_an_identifier_pattern(tmp_path: Path) -> None:
    # `re.match` with `$` accepted "name\n": every identifier check now matches the whole string.
    from orchestrator.errors import PluginError
    from orchestrator.plugins.scaffold import create_plugin

    with pytest.raises(ValidationError, match="schedule id"):
        ScheduleSpec.model_validate({"id": "nightly\n", "plugin": "p", "every": "1h"})
    with pytest.raises(ValidationError, match="rule name"):
        Rule.model_validate({"name": "orders\n", "table": "t", "plugins": ["p"]})
    with pytest.raises(ValidationError, match="table"):
        Rule.model_validate({"name": "orders", "table": "shop.orders\n", "plugins": ["p"]})
    with pytest.raises(ValidationError, match="column"):
        Rule.model_validate(
            {"name": "o", "table": "t", "plugins": ["p"], "mode": "timestamp", "timestamp_column": "ts\n"}
        )
    with pytest.raises(PluginError, match="bad plugin name"):
        create_plugin(tmp_path, "fresh\n")
    assert not is_plugin_name("probe\n")
    ScheduleSpec.model_validate({"id": "nightly", "plugin": "p", "every": "1h"})  # the same without it passes
