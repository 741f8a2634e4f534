"""Manifest model, loader and parameter checks."""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator.errors import ManifestError, ParamsError
from orchestrator.plugins import Launcher, Manifest, ParamSpec, coerce_cli_params, load_manifest, validate_params
from orchestrator.plugins.manifest import _simple_specifier_matches, specifier_matches

MakePlugin = Callable[..., Path]

# REQUIREMENTS.md, "The example plugin manifest (keep it valid as written)", byte for byte.
SEED_MANIFEST = """{
  "name": "your_plugin",
  "version": "1.0.0",
  "description": "...",
  "author": "Your Name",
  "entry_point": "main.your_function",
  "parameters": {
    "param1": {"type": "string", "required": true, "description": "..."},
    "param2": {"type": "integer", "required": false, "default": 100}
  },
  "dependencies": ["requests>=2.30.0", "pandas>=2.0.0"],
  "python_version": ">=3.8",
  "enabled": true,
  "tags": ["data-processing", "crawler"]
}
"""
SEED_CODE = """\
def your_function(param1: str, param2: int = 100, **kwargs):
    # kwargs carries the context, e.g. change_event for database-triggered runs
    return {"status": "success", "result": {...}}
"""


def manifest(**keys: Any) -> Manifest:
    return Manifest.model_validate({"name": "p", "version": "1", "entry_point": "main.run", **keys})


def test_seed_manifest_loads_as_written(make_plugin: MakePlugin) -> None:
    folder = make_plugin("your_plugin", SEED_CODE, manifest=SEED_MANIFEST)
    m, warnings = load_manifest(folder)
    assert warnings == []
    assert (m.name, m.version, m.entry_point, m.python_version) == (
        "your_plugin",
        "1.0.0",
        "main.your_function",
        ">=3.8",
    )
    assert m.parameters["param1"] == ParamSpec(type="string", required=True, description="...")
    assert m.parameters["param2"].default == 100
    assert m.dependencies == ["requests>=2.30.0", "pandas>=2.0.0"]
    assert m.tags == ["data-processing", "crawler"] and m.enabled and m.isolation == "process"
    assert validate_params(m, {"param1": "x"}) == {"param1": "x", "param2": 100}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{\n  "name": "x",\n  "version" "1"\n}', "plugin.json: bad JSON at line 3 column 13: Expecting ':' delimiter"),
        ("[1, 2]", "plugin.json: must be a JSON object, got array"),
        ('{"version": "1", "entry_point": "main.run"}', "plugin.json: 'name' is required"),
        ('{"name": "bad name", "version": "1", "entry_point": "main.run"}', "plugin.json: name: must start with"),
        (
            '{"name": "x", "version": "1", "entry_point": "run"}',
            "plugin.json: entry_point: must look like 'module.function'",
        ),
        (
            '{"name": "x", "version": "1", "entry_point": "main.run", "parameters": {"p": {"type": "int"}}}',
            "plugin.json: parameters.p.type: must be one of string, integer, number, boolean, array, object",
        ),
        (
            '{"name": "x", "version": "1", "entry_point": "main.run", "parameters": {"p": {"type": "integer", "default": "5"}}}',
            "plugin.json: parameters.p: default '5' is not of type integer",
        ),
        (
            '{"name": "x", "version": "1", "entry_point": "main.run", "parameters": {"p": {"type": "string", "enum": ["a", 1]}}}',
            "plugin.json: parameters.p: enum values [1] are not of type string",
        ),
        (
            '{"name": "x", "version": 1, "entry_point": "main.run"}',
            "plugin.json: version: Input should be a valid string",
        ),
        (
            '{"name": "x", "version": "1", "entry_point": "main.run", "timeout": 0}',
            "plugin.json: timeout: Input should be greater than 0",
        ),
        (
            '{"name": "x", "version": "1", "entry_point": "main.run", "max_retries": -1}',
            "max_retries: Input should be greater than or equal to 0",
        ),
        (
            '{"name": "x", "version": "1", "entry_point": "main.run", "limits": {"memory_mb": 0}}',
            "limits.memory_mb: Input should be greater than 0",
        ),
        (
            '{"name": "x", "version": "1", "entry_point": "main.run", "isolation": "thread"}',
            "isolation: must be one of process, pooled",
        ),
        (
            '{"name": "x", "version": "1", "entry_point": "main.run", "env": ["NOT-A-NAME"]}',
            "env: not environment variable names: 'NOT-A-NAME'",
        ),
        (
            '{"name": "x", "version": "1", "entry_point": "main.run", "dependencies": ["--index-url=http://evil"]}',
            "is not a requirement",
        ),
        (
            '{"name": "x", "version": "1", "entry_point": "main.run", "python_version": ">=3.99"}',
            "python_version: '>=3.99' does not match",
        ),
        (
            '{"name": "x", "version": "1", "entry_point": "main.run", "python_version": "three"}',
            "is not a version specifier",
        ),
        (
            '{"name": "x", "version": "1", "entry_point": "main.nope"}',
            "entry point 'main.nope': module main.py has no function 'nope'",
        ),
        (
            '{"name": "x", "version": "1", "entry_point": "other.run"}',
            "entry point 'other.run': module file other.py not found",
        ),
    ],
)
def test_broken_manifest_reasons(make_plugin: MakePlugin, text: str, reason: str) -> None:
    folder = make_plugin("x", manifest=text)
    with pytest.raises(ManifestError) as exc:
        load_manifest(folder)
    assert reason in str(exc.value)


def test_several_problems_are_reported_together(make_plugin: MakePlugin) -> None:
    folder = make_plugin("x", manifest='{"version": 2, "entry_point": "main.run", "enabled": "yes"}')
    with pytest.raises(ManifestError) as exc:
        load_manifest(folder)
    message = str(exc.value)
    assert "'name' is required" in message and "version:" in message and "enabled:" in message


def test_unknown_keys_are_warnings(make_plugin: MakePlugin) -> None:
    folder = make_plugin(
        "x",
        manifest='{"name": "x", "version": "1", "entry_point": "main.run", "schedule": "daily",'
        ' "parameters": {"p": {"type": "string", "minLength": 2}}, "limits": {"gpus": 1}}',
    )
    m, warnings = load_manifest(folder)
    assert m.name == "x"
    assert warnings == [
        "unknown key 'schedule' ignored",
        "unknown key 'parameters.p.minLength' ignored",
        "unknown key 'limits.gpus' ignored",
    ]


def test_optional_extra_keys(make_plugin: MakePlugin) -> None:
    folder = make_plugin(
        "x",
        queue="warehouse",
        timeout=90,
        max_retries=3,
        retry_backoff=60,
        env=["ES_HOSTS"],
        limits={"memory_mb": 512, "cpu_seconds": 60},
        isolation="pooled",
    )
    m, _ = load_manifest(folder)
    assert (m.queue, m.timeout, m.max_retries, m.retry_backoff, m.env) == ("warehouse", 90.0, 3, 60.0, ["ES_HOSTS"])
    assert m.limits is not None and (m.limits.memory_mb, m.limits.cpu_seconds) == (512, 60)
    assert m.isolation == "pooled"


@pytest.mark.parametrize(
    ("entry", "files"),
    [
        ("main.run", {"main.py": "async def run(**kw):\n    return 1\n"}),
        ("main.run", {"main.py": "def _impl(**kw):\n    return 1\nrun = _impl\n"}),
        ("main.run", {"main.py": "from helpers import run\n"}),
        (
            "main.run",
            {"main.py": "try:\n    from fast import run\nexcept ImportError:\n    def run(**kw):\n        return 1\n"},
        ),
        ("pkg.mod.run", {"pkg/__init__.py": "", "pkg/mod.py": "def run(**kw):\n    return 1\n"}),
        ("pkg.run", {"pkg/__init__.py": "def run(**kw):\n    return 1\n"}),
    ],
)
def test_entry_point_found_without_importing(tmp_path: Path, entry: str, files: dict[str, str]) -> None:
    folder = tmp_path / "p"
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        # Importing any of these would fail: the check must only parse.
        (folder / rel).write_text("import module_that_does_not_exist\n" + text)
    (folder / "plugin.json").write_text(f'{{"name": "p", "version": "1", "entry_point": "{entry}"}}')
    assert load_manifest(folder)[0].entry_point == entry


def test_entry_point_module_with_syntax_error(make_plugin: MakePlugin) -> None:
    folder = make_plugin("x", "def run(:\n")
    with pytest.raises(ManifestError, match=r"entry point 'main.run': main.py has a syntax error at line 1"):
        load_manifest(folder)


def test_missing_plugin_json(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="plugin.json: not found"):
        load_manifest(tmp_path)


# -- parameters --

SPEC = manifest(
    parameters={
        "name": {"type": "string", "required": True},
        "count": {"type": "integer", "default": 100},
        "ratio": {"type": "number"},
        "flag": {"type": "boolean", "default": False},
        "mode": {"type": "string", "enum": ["fast", "slow"], "default": "fast"},
        "items": {"type": "array", "default": []},
        "opts": {"type": "object"},
    }
)


def test_validate_params_fills_defaults() -> None:
    params = validate_params(SPEC, {"name": "a", "ratio": 1})
    assert params == {"name": "a", "count": 100, "ratio": 1, "flag": False, "mode": "fast", "items": []}
    params["items"].append(1)  # a default is copied, never shared between jobs
    assert validate_params(SPEC, {"name": "a"})["items"] == []


def test_validate_params_lists_every_problem() -> None:
    with pytest.raises(ParamsError) as exc:
        validate_params(
            SPEC, {"count": True, "ratio": "1.5", "flag": 1, "mode": "medium", "items": {}, "opts": [], "extra": 1}
        )
    assert exc.value.plugin == "p"
    assert exc.value.problems == [
        "unknown parameter 'extra' (declared: name, count, ratio, flag, mode, items, opts)",
        "'name' is required (string)",
        "'count' must be integer, got boolean True",
        "'ratio' must be number, got string '1.5'",
        "'flag' must be boolean, got integer 1",
        "'mode' must be one of 'fast', 'slow', got 'medium'",
        "'items' must be array, got object {}",
        "'opts' must be object, got array []",
    ]


def test_integer_refuses_float_and_number_takes_both() -> None:
    with pytest.raises(ParamsError, match="'count' must be integer, got number 2.0"):
        validate_params(SPEC, {"name": "a", "count": 2.0})
    assert validate_params(SPEC, {"name": "a", "ratio": 2.5})["ratio"] == 2.5


async def test_bad_params_fail_before_any_process_starts(
    launcher: Launcher, load_plugin: Callable[..., Any], tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    info = await load_plugin(
        "guarded",
        f"def run(**kw):\n    open({str(marker)!r}, 'w').close()\n",
        parameters={"n": {"type": "integer", "required": True}},
    )

    async def submit(params: dict[str, Any]) -> None:  # what the job layer does: validate, then launch
        checked = validate_params(info.manifest, params)
        await launcher.run(info, checked, {}, python=info.python, timeout_s=10)

    with pytest.raises(ParamsError, match="'n' is required"):
        await submit({})
    with pytest.raises(ParamsError, match="'n' must be integer, got string '5'"):
        await submit({"n": "5"})
    assert not marker.exists()
    await submit({"n": 5})
    assert marker.exists()  # the same path does start the plugin once the params are right


def test_coerce_cli_params() -> None:
    pairs = ["name=a=b", "count=-5", "ratio=2.5", "flag=yes", "items=[1, 2]", 'opts={"k": 1}', "x=3", "y=hello"]
    assert coerce_cli_params(SPEC, pairs) == {
        "name": "a=b",
        "count": -5,
        "ratio": 2.5,
        "flag": True,
        "items": [1, 2],
        "opts": {"k": 1},
        "x": 3,
        "y": "hello",
    }
    assert coerce_cli_params(SPEC, ["ratio=3", "flag=0", "name=007"]) == {"ratio": 3, "flag": False, "name": "007"}


def test_coerce_cli_params_errors() -> None:
    with pytest.raises(ParamsError) as exc:
        coerce_cli_params(SPEC, ["count=five", "flag=maybe", "items={}", "opts=[", "novalue", "=1"])
    assert exc.value.problems == [
        "'count': expected an integer, got 'five'",
        "'flag': expected true/false/1/0/yes/no, got 'maybe'",
        "'items': expected a JSON array, got object",
        "'opts': expected a JSON object, got '['",
        "'novalue': expected KEY=VALUE",
        "'=1': expected KEY=VALUE",
    ]


def test_param_spec_checks_default_and_enum() -> None:
    with pytest.raises(ValidationError, match="default 'c' is not one of the enum values"):
        ParamSpec(type="string", enum=["a", "b"], default="c")
    with pytest.raises(ValidationError, match="is not of type integer"):
        ParamSpec(type="integer", default=True)
    assert ParamSpec(type="number", enum=[1, 2.5], default=1).default == 1


def test_python_version_specifiers() -> None:
    running = platform.python_version()
    assert specifier_matches(">=3.8", running)
    assert not specifier_matches("<3", running)
    with pytest.raises(ValidationError, match=f"does not match the orchestrator's Python {running}"):
        manifest(python_version="<3.0")


@pytest.mark.parametrize(
    ("spec", "version", "expected"),
    [
        (">=3.8", "3.11.7", True),
        (">=3.12", "3.11.7", False),
        (">=3.8,<4", "3.11.7", True),
        ("==3.11.*", "3.11.7", True),
        ("==3.10.*", "3.11.7", False),
        ("!=3.11.7", "3.11.7", False),
        ("~=3.10", "3.11.7", True),
        ("~=3.10.1", "3.11.7", False),
        ("<3.11.7", "3.11.7", False),
        ("==3.11", "3.11.0", True),
    ],
)
def test_fallback_specifier_without_packaging(spec: str, version: str, expected: bool) -> None:
    assert _simple_specifier_matches(spec, version) is expected
    assert specifier_matches(spec, version) is expected  # agrees with packaging where both apply


def test_pool_options(make_plugin: MakePlugin) -> None:
    m = manifest(isolation="pooled")
    assert (m.pool.size, m.pool.max_runs_per_process, m.pool.max_memory_mb, m.pool.idle_s) == (None, 1000, 512, 60.0)
    folder = make_plugin(
        "pooled",
        isolation="pooled",
        pool={"size": 4, "max_runs_per_process": None, "max_memory_mb": 256, "idle_s": 5, "warm": 2},
    )
    m, warnings = load_manifest(folder)
    assert (m.pool.size, m.pool.max_runs_per_process, m.pool.max_memory_mb, m.pool.idle_s) == (4, None, 256, 5.0)
    assert warnings == ["unknown key 'pool.warm' ignored"]
    _, warnings = load_manifest(make_plugin("notpooled", pool={"size": 2}))
    assert warnings == ["'pool' is ignored unless isolation is 'pooled'"]
    with pytest.raises(ManifestError, match="pool.size: Input should be greater than 0"):
        load_manifest(make_plugin("badpool", isolation="pooled", pool={"size": 0}))
