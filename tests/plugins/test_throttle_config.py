"""The throttle's settings: config and plugin.json parse into one model, bad values fail with one line
naming the key, config wins over the manifest per limit, and the key a job counts under."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.config import load_settings
from orchestrator.errors import ConfigError
from orchestrator.plugins.manifest import load_manifest
from orchestrator.plugins.throttle import Throttle, parse_rate, render_key
from tests.jobs.helpers import make_plugin


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "orchestrator.toml"
    path.write_text(text)
    return path


def test_config_throttle_parses_per_plugin(tmp_path: Path) -> None:
    settings = load_settings(
        _config(
            tmp_path, '[plugins.crawler.throttle]\nconcurrency = 2\nrate = "10/s"\nkey = "{user_id}"\nmax_queued = 5\n'
        )
    )
    throttle = settings.throttles()["crawler"]
    assert (throttle.concurrency, throttle.rate, throttle.key, throttle.max_queued) == (2, "10/s", "{user_id}", 5)
    assert throttle.interval_ms == 100.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'rate = "10/x"',
            "plugins.crawler.throttle.rate: Value error, rate '10/x': expected a positive count per s, m or h",
        ),
        ("concurrency = 0", "plugins.crawler.throttle.concurrency: Input should be greater than 0"),
        (
            'key = "{user id}"',
            "plugins.crawler.throttle.key: Value error, key '{user id}': placeholders are plain param names",
        ),
        ('key = "user"', "plugins.crawler.throttle.key: Value error, key 'user': name at least one param"),
        ("burst = 3", "unknown key 'plugins.crawler.throttle.burst'"),
    ],
)
def test_a_bad_throttle_fails_with_one_line_naming_the_key(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(_config(tmp_path, f"[plugins.crawler.throttle]\n{body}\n"))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_the_manifest_throttle_is_checked_against_its_parameters(tmp_path: Path) -> None:
    folder = make_plugin(tmp_path, "crawler", throttle={"key": "{user_id}", "concurrency": 2})
    with pytest.raises(Exception, match="throttle.key '{user_id}' names undeclared parameters: user_id"):
        load_manifest(folder)
    folder = make_plugin(tmp_path, "good", throttle={"key": "{name}", "rate": "5/m"})
    manifest, warnings = load_manifest(folder)
    assert manifest.throttle == Throttle(key="{name}", rate="5/m")
    assert warnings == []
    assert json.loads((folder / "plugin.json").read_text())["throttle"]["rate"] == "5/m"


def test_config_wins_over_the_manifest_limit_by_limit() -> None:
    own = Throttle(concurrency=5, rate="1/s", key="{name}")
    assert own.merged(Throttle(concurrency=2)) == Throttle(concurrency=2, rate="1/s", key="{name}")
    assert own.merged(None) == own


def test_rates_and_keys() -> None:
    assert [parse_rate(r) for r in ("10/s", "5/m", "100/h")] == [(10, 1000), (5, 60000), (100, 3600000)]
    assert render_key("{user_id}", {"user_id": 42}) == "user_id=42"
    assert render_key("{org}/{user}", {"org": "a", "user": "b"}) == "{org}/{user}=a/b"
    with pytest.raises(KeyError):
        render_key("{user_id}", {})
