"""URL forms and settings of redis_conn / redis_sentinel (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.errors import ConfigError
from orchestrator.logs import mask_url
from orchestrator.redis.connection import RedisOptions, connect
from orchestrator.redis.sentinel import SentinelTarget, parse_sentinel_url


def test_sentinel_url_forms() -> None:
    assert parse_sentinel_url("redis+sentinel://u:p%40ss@s1:26379,s2:26380/main/3") == SentinelTarget(
        [("s1", 26379), ("s2", 26380)], "main", 3, "u", "p@ss", tls=False
    )
    assert parse_sentinel_url("rediss+sentinel://s1/main") == SentinelTarget(
        [("s1", 26379)], "main", 0, None, None, tls=True
    )
    assert mask_url("redis+sentinel://u:secret@s1:1,s2:2/main") == "redis+sentinel://u:***@s1:1,s2:2/main"


@pytest.mark.parametrize("url", ["redis+sentinel://s1:1", "redis+sentinel:///main", "redis+sentinel://s1:x/main"])
def test_a_sentinel_url_without_address_or_service_is_a_setting_error(url: str) -> None:
    with pytest.raises(ConfigError, match="redis_url"):
        parse_sentinel_url(url)


def test_settings_take_the_redis_block_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis+sentinel://s1:26379/main")
    monkeypatch.setenv("ORCH_SENTINEL_PASSWORD", "sentinel-secret")
    monkeypatch.setenv("ORCH_REDIS_CHECK_HOSTNAME", "false")
    monkeypatch.setenv("ORCH_REDIS_MAX_CONNECTIONS", "8")
    settings = Settings()
    options = RedisOptions.from_settings(settings)
    assert (options.sentinel_password, options.check_hostname, options.max_connections) == ("sentinel-secret", False, 8)
    assert settings.masked()["sentinel_password"] == "***"


def test_cert_without_key_is_a_setting_error(tmp_path: Path) -> None:
    cert = tmp_path / "c.crt"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="redis_cert_file and redis_key_file"):
        connect("rediss://h:1/0", RedisOptions(cert_file=cert))


@pytest.mark.parametrize(
    ("url", "given", "expected"),
    [
        ("redis+sentinel://s1:26379/main", None, 1),  # Sentinel asks for high availability
        ("rediss+sentinel://s1:26379/main", None, 1),
        ("redis+sentinel://s1:26379/main", 0, 0),  # the fast, lossy choice, when asked for
        ("redis://cache:6379/0", None, 0),
        (None, None, 0),  # the embedded Redis has no replica
    ],
)
def test_redis_wait_replicas_defaults_to_one_with_sentinel(url: str | None, given: int | None, expected: int) -> None:
    extra = {} if given is None else {"redis_wait_replicas": given}
    assert Settings(redis_url=url, **extra).redis_wait_replicas == expected
