"""Registry: discovery, invalid plugins next to valid ones, reload, enable/disable, scaffold."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.errors import ManifestError, NotFoundError, PluginError
from orchestrator.plugins import Launcher, PluginRegistry, create_plugin
from orchestrator.plugins.registry import NOT_BUILT

MakePlugin = Callable[..., Path]
GOOD = "def run(**kwargs):\n    return 'ok'\n"


async def test_broken_manifests_do_not_stop_the_others(make_plugin: MakePlugin, registry: PluginRegistry) -> None:
    make_plugin("good", GOOD)
    make_plugin("badjson", manifest='{"name": "badjson",,}')
    make_plugin("noname", manifest='{"version": "1", "entry_point": "main.run"}')
    make_plugin("badentry", entry="main.missing")
    make_plugin("badtype", parameters={"p": {"type": "text"}})
    make_plugin("extra", GOOD, owner="team-a")
    (registry.plugins_dir / "not_a_plugin").mkdir()  # no plugin.json: ignored
    await registry.load()

    by_name = {p.name: p for p in registry.all()}
    assert list(by_name) == sorted(by_name) == ["badentry", "badjson", "badtype", "extra", "good", "noname"]
    assert by_name["good"].state == "ready" and by_name["good"].reason is None
    assert by_name["extra"].state == "ready"
    assert by_name["extra"].warnings == ["unknown key 'owner' ignored"]
    reasons = {name: info.reason for name, info in by_name.items() if info.state == "invalid"}
    assert reasons == {
        "badjson": "plugin.json: bad JSON at line 1 column 20: Expecting property name enclosed in double quotes",
        "noname": "plugin.json: 'name' is required",
        "badentry": "entry point 'main.missing': module main.py has no function 'missing'",
        "badtype": "plugin.json: parameters.p.type: must be one of string, integer, number, boolean, array, object",
    }
    assert not by_name["badjson"].enabled


async def test_to_json_shape(make_plugin: MakePlugin, registry: PluginRegistry) -> None:
    make_plugin("good", GOOD, queue="warehouse", tags=["t"], parameters={"p": {"type": "integer", "default": 3}})
    make_plugin("broken", manifest="{")
    await registry.load()
    good, broken = registry.get("good"), registry.get("broken")
    assert good is not None and broken is not None
    data = good.to_json()
    assert {k: data[k] for k in ("name", "version", "enabled", "state", "reason", "tags", "queue")} == {
        "name": "good",
        "version": "1.0.0",
        "enabled": True,
        "state": "ready",
        "reason": None,
        "tags": ["t"],
        "queue": "warehouse",
    }
    assert data["parameters"] == {
        "p": {"type": "integer", "required": False, "default": 3, "enum": None, "description": None}
    }
    expected = {"description", "author", "entry_point", "dependencies", "isolation", "timeout", "max_retries"}
    assert expected | {"venv", "path", "warnings"} <= set(data)
    json.dumps(data)
    json.dumps(broken.to_json())
    assert broken.to_json()["state"] == "invalid" and broken.to_json()["version"] is None


async def test_folder_name_mismatch_and_duplicates(make_plugin: MakePlugin, registry: PluginRegistry) -> None:
    make_plugin("alpha", GOOD)
    make_plugin("alpha_copy", GOOD, manifest={"name": "alpha", "version": "2", "entry_point": "main.run"})
    make_plugin("folder_b", GOOD, manifest={"name": "beta", "version": "1", "entry_point": "main.run"})
    await registry.load()
    alpha, beta, dup = registry.get("alpha"), registry.get("beta"), registry.get("alpha_copy")
    assert alpha is not None and beta is not None and dup is not None
    assert alpha.path.name == "alpha" and alpha.state == "ready"  # the folder named like the plugin wins
    assert beta.state == "ready" and beta.path.name == "folder_b"
    assert beta.warnings == ["folder 'folder_b' holds plugin 'beta'; the manifest name is used"]
    assert dup.state == "invalid"
    assert dup.reason == "duplicate plugin name 'alpha': already provided by folder alpha"


async def test_plugin_with_requirements_is_not_ready_until_built(
    make_plugin: MakePlugin, registry: PluginRegistry
) -> None:
    make_plugin("needs", GOOD, dependencies=["iniconfig"])
    folder = make_plugin("reqfile", GOOD)
    (folder / "requirements.txt").write_text("# comment\nsix>=1.16  # inline comment\n\n")
    await registry.load()
    for name in ("needs", "reqfile"):
        info = registry.get(name)
        assert info is not None
        assert info.state == "not-ready" and info.reason == NOT_BUILT and info.python is None
        assert info.venv is not None and info.venv.parent == registry.envs.venv_dir
    reqfile = registry.get("reqfile")
    assert reqfile is not None and reqfile.manifest is not None
    assert registry.envs.requirements_for(reqfile.path, reqfile.manifest) == ["six>=1.16"]


async def test_reload_one_plugin(make_plugin: MakePlugin, registry: PluginRegistry) -> None:
    make_plugin("a", GOOD)
    make_plugin("b", GOOD)
    await registry.load()
    make_plugin("a", GOOD, entry="main.gone")
    (registry.plugins_dir / "b" / "plugin.json").write_text("{")  # not reloaded: stays as it was
    await registry.reload("a")
    a, b = registry.get("a"), registry.get("b")
    assert a is not None and a.state == "invalid" and "no function 'gone'" in (a.reason or "")
    assert b is not None and b.state == "ready"
    make_plugin("c", GOOD)
    await registry.reload("c")  # a new folder can be picked up by name
    assert registry.get("c") is not None
    with pytest.raises(NotFoundError):
        await registry.reload("nope")
    await registry.reload()
    b = registry.get("b")
    assert b is not None and b.state == "invalid"


async def test_the_manifest_enabled_flag_is_the_default(make_plugin: MakePlugin, registry: PluginRegistry) -> None:
    """The manifest's `enabled` is the default; the live switch is the Redis flag (tests/jobs/test_jobs.py)."""
    make_plugin("a", GOOD)
    make_plugin("off", GOOD, enabled=False)
    await registry.load()
    off, a = registry.get("off"), registry.get("a")
    assert off is not None and not off.enabled and off.state == "ready"
    assert a is not None and a.enabled


async def test_ensure_ready_refuses_invalid_and_unknown(make_plugin: MakePlugin, registry: PluginRegistry) -> None:
    make_plugin("broken", manifest="{")
    await registry.load()
    with pytest.raises(ManifestError, match="plugin 'broken' is invalid: plugin.json: bad JSON"):
        await registry.ensure_ready("broken")
    with pytest.raises(NotFoundError):
        await registry.ensure_ready("nope")
    assert await registry.install(["broken", "nope"]) == {
        "broken": "plugin 'broken' is invalid: plugin.json: bad JSON at line 1 column 2: Expecting property name"
        " enclosed in double quotes",
        "nope": "plugin 'nope' not found",
    }


async def test_missing_plugins_dir_loads_nothing(tmp_path: Path, registry: PluginRegistry) -> None:
    registry.plugins_dir = tmp_path / "absent"
    await registry.load()
    assert registry.all() == []


async def test_scaffold_creates_a_runnable_plugin(registry: PluginRegistry, launcher: Launcher) -> None:
    folder = create_plugin(registry.plugins_dir, "my_plugin")
    assert sorted(p.name for p in folder.iterdir()) == ["main.py", "plugin.json"]
    await registry.load()
    info = registry.get("my_plugin")
    assert info is not None and info.state == "ready" and info.warnings == []
    assert info.manifest is not None and info.python is not None
    assert list(info.manifest.parameters) == ["message"]
    result = await launcher.run(info, {"message": "hi"}, {"job_id": "j"}, python=info.python, timeout_s=10)
    assert result.ok, result
    assert result.result == {"status": "success", "result": {"echo": "hi"}}
    assert "job j got message='hi'" in result.log_tail
    with pytest.raises(PluginError, match="already exists"):
        create_plugin(registry.plugins_dir, "my_plugin")
    with pytest.raises(PluginError, match="bad plugin name"):
        create_plugin(registry.plugins_dir, "../escape")
