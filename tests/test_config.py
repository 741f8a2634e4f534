"""orchestrator/config.py: seed env names, precedence, one-line errors without secrets, masking.

Every test runs in its own tmp dir as cwd with the product's env names removed (conftest), so
`orchestrator.toml` and `.env` written here are the only ones load_settings() can see.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cdc.settings import MYSQL_SCHEMES
from orchestrator.config import Settings, load_settings
from orchestrator.errors import ConfigError
from orchestrator.jobs.settings import QueueSettings
from orchestrator.logs import mask_url
from orchestrator.tracing.settings import TracingSettings

SECRET = "hunter2-s3cret"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults() -> None:
    s = load_settings()
    assert s.redis_url is None
    assert s.database_url is None
    assert s.mysql_params() is None
    assert s.es_hosts == []
    assert s.es_timeout_s == 30.0
    assert s.plugins_dir == Path("plugins")
    assert s.plugin_venv_dir is None
    assert s.venv_dir == Path(".orchestrator") / "venvs"
    assert s.db_change_polling_interval_s == 5.0
    assert set(s.queues) == {"high", "default", "low"}
    assert s.default_queue == "default"


def test_seed_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache:6380/2")
    monkeypatch.setenv("DATABASE_URL", "mysql+pymysql://app:p%40ss@db.internal:3307/shop")
    monkeypatch.setenv("ES_HOSTS", "http://es1:9200, http://es2:9200,")
    monkeypatch.setenv("ES_USERNAME", "elastic")
    monkeypatch.setenv("ES_PASSWORD", SECRET)
    monkeypatch.setenv("ES_TIMEOUT", "12.5")
    monkeypatch.setenv("PLUGINS_DIR", "/srv/plugins")
    monkeypatch.setenv("PLUGIN_VENV_DIR", "/srv/venvs")
    monkeypatch.setenv("DB_CHANGE_POLLING_INTERVAL", "0.5")

    s = load_settings()

    assert s.redis_url == "redis://cache:6380/2"
    assert s.database_url is not None
    assert s.database_url.get_secret_value() == "mysql+pymysql://app:p%40ss@db.internal:3307/shop"
    params = s.mysql_params()
    assert params is not None
    assert (params.host, params.port, params.user, params.password, params.db) == (
        "db.internal",
        3307,
        "app",
        "p@ss",
        "shop",
    )
    assert s.es_hosts == ["http://es1:9200", "http://es2:9200"]
    assert s.es_username == "elastic"
    assert s.es_password is not None and s.es_password.get_secret_value() == SECRET
    assert s.es_timeout_s == 12.5
    assert s.plugins_dir == Path("/srv/plugins")
    assert s.plugin_venv_dir == Path("/srv/venvs")
    assert s.venv_dir == Path("/srv/venvs")
    assert s.db_change_polling_interval_s == 0.5


def test_orch_prefixed_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_HTTP_PORT", "9000")
    monkeypatch.setenv("ORCH_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("ORCH_STATE_DIR", "/var/lib/orch")
    monkeypatch.setenv("ORCH_QUEUES", '{"warehouse": {"concurrency": 2}}')
    s = load_settings()
    assert (s.http_port, s.log_level, s.state_dir) == (9000, "DEBUG", Path("/var/lib/orch"))
    # the default queue is added when the named queues do not include it
    assert s.queues == {"warehouse": QueueSettings(concurrency=2), "default": QueueSettings()}


def test_unix_socket_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://root@localhost/app?unix_socket=/run/mysqld/mysqld.sock")
    params = load_settings().mysql_params()
    assert params is not None
    assert params.unix_socket == "/run/mysqld/mysqld.sock"
    assert (params.user, params.password, params.db) == ("root", "", "app")


@pytest.mark.parametrize("scheme", sorted(MYSQL_SCHEMES))
def test_mysql_schemes_accepted(monkeypatch: pytest.MonkeyPatch, scheme: str) -> None:
    monkeypatch.setenv("DATABASE_URL", f"{scheme}://u:{SECRET}@db/app")
    params = load_settings().mysql_params()
    assert params is not None and params.password == SECRET


@pytest.mark.parametrize("url", ["postgresql://u:{s}@db/app", "sqlite:///app.db", "http://u:{s}@db/app", "db/app"])
def test_non_mysql_database_url_rejected(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", url.format(s=SECRET))
    with pytest.raises(ConfigError) as exc:
        load_settings()
    message = str(exc.value)
    assert "DATABASE_URL" in message
    assert "MySQL" in message
    assert SECRET not in message


def test_precedence_defaults_toml_dotenv_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # each key is set at every level up to the one that must win
    write(
        Path("orchestrator.toml"),
        'http_port = 1001\nlog_level = "WARNING"\nredis_url = "redis://toml:1/0"\nes_timeout_s = 1.0\n',
    )
    write(Path(".env"), "ORCH_LOG_LEVEL=ERROR\nREDIS_URL=redis://dotenv:1/0\nES_TIMEOUT=2\n")
    monkeypatch.setenv("ES_TIMEOUT", "3")

    s = load_settings()

    assert s.shutdown_grace_s == 30.0  # default
    assert s.http_port == 1001  # TOML over default
    assert s.log_level == "ERROR"  # .env over TOML
    assert s.redis_url == "redis://dotenv:1/0"  # .env (seed name) over TOML
    assert s.es_timeout_s == 3.0  # environment over .env and TOML


def test_overrides_rank_above_toml_only(monkeypatch: pytest.MonkeyPatch) -> None:
    write(Path("orchestrator.toml"), "http_port = 1001\nmax_retries = 1\n")
    monkeypatch.setenv("ORCH_MAX_RETRIES", "7")
    s = load_settings(http_port=2002, max_retries=5)
    assert s.http_port == 2002
    assert s.max_retries == 7


def test_explicit_config_path_replaces_default_file(tmp_path: Path) -> None:
    write(Path("orchestrator.toml"), "http_port = 1001\n")
    other = write(tmp_path / "elsewhere.toml", "http_port = 3003\n")
    assert load_settings().http_port == 1001
    assert load_settings(other).http_port == 3003


def test_nested_queues_from_toml() -> None:
    write(
        Path("orchestrator.toml"),
        "[queues.warehouse]\nconcurrency = 3\n\n[queues.statistics]\nconcurrency = 1\n",
    )
    s = load_settings()
    assert s.queues["warehouse"] == QueueSettings(concurrency=3)
    assert s.queues["statistics"].concurrency == 1


def _config_error(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], toml: str | None) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if toml is not None:
        write(Path("orchestrator.toml"), toml)
    with pytest.raises(ConfigError) as exc:
        load_settings()
    return str(exc.value)


@pytest.mark.parametrize(
    ("env", "toml", "key"),
    [
        ({"ES_TIMEOUT": "soon"}, None, "ES_TIMEOUT"),
        ({"ES_TIMEOUT": "-1"}, None, "ES_TIMEOUT"),
        ({"DB_CHANGE_POLLING_INTERVAL": "0"}, None, "DB_CHANGE_POLLING_INTERVAL"),
        ({"ORCH_HTTP_PORT": "70000"}, None, "HTTP_PORT"),
        ({"ORCH_LOG_LEVEL": "LOUD"}, None, "LOG_LEVEL"),
        ({"REDIS_URL": f"http://user:{SECRET}@cache:6379"}, None, "REDIS_URL"),
        ({"DATABASE_URL": f"postgresql://admin:{SECRET}@db/app"}, None, "DATABASE_URL"),
        ({}, 'http_port = "eighty"\n', "http_port"),
        ({}, "[queues.warehouse]\nconcurrency = 0\n", "queues.warehouse.concurrency"),
        ({}, "[queues.warehouse]\nconcurency = 3\n", "queues.warehouse"),
        ({}, "http_port =\n", "orchestrator.toml"),
    ],
)
def test_bad_value_is_one_line_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], toml: str | None, key: str
) -> None:
    message = _config_error(monkeypatch, env, toml)
    assert key in message
    assert "\n" not in message
    assert SECRET not in message


def test_bad_secret_value_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    # A value that fails validation must not appear in the message: it may be the secret itself.
    message = _config_error(monkeypatch, {"ORCH_HTTP_PORT": SECRET, "ORCH_SHUTDOWN_GRACE_S": SECRET}, None)
    assert "HTTP_PORT" in message and "SHUTDOWN_GRACE_S" in message
    assert SECRET not in message


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.toml"):
        load_settings(tmp_path / "nope.toml")


def test_masked_hides_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"mysql+pymysql://app:{SECRET}@db:3306/shop")
    monkeypatch.setenv("REDIS_URL", f"redis://:{SECRET}@cache:6379/0")
    monkeypatch.setenv("ES_HOSTS", f"https://elastic:{SECRET}@es1:9200,http://es2:9200")
    monkeypatch.setenv("ES_PASSWORD", SECRET)
    monkeypatch.setenv("ORCH_API_TOKEN", SECRET)

    s = load_settings()
    masked = s.masked()

    assert SECRET not in json.dumps(masked)
    assert masked["database_url"] == "mysql+pymysql://app:***@db:3306/shop"
    assert masked["redis_url"] == "redis://:***@cache:6379/0"
    assert masked["es_hosts"] == ["https://elastic:***@es1:9200", "http://es2:9200"]
    assert masked["es_password"] == "***"
    assert masked["api_token"] == "***"
    assert masked["http_port"] == 8080  # everything else is shown as is


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://u:pw@h:3306/db", "mysql://u:***@h:3306/db"),
        ("mysql://u:p@ss@h/db", "mysql://u:***@h/db"),  # an unencoded @ in the password
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("mysql://u@h/db", "mysql://u@h/db"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_mask_url(url: str, expected: str) -> None:
    assert mask_url(url) == expected


def test_settings_is_the_loaded_type() -> None:
    assert isinstance(load_settings(), Settings)


# -- bugs found in review, fixed: these guard against their return --


@pytest.mark.parametrize(
    ("name", "value", "field", "default"),
    [
        ("HTTP_PORT", "9999", "http_port", 8080),
        ("LOG_LEVEL", "DEBUG", "log_level", "INFO"),
        ("STATE_DIR", "/elsewhere", "state_dir", Path(".orchestrator")),
        ("API_TOKEN", SECRET, "api_token", None),
    ],
)
def test_only_orch_names_and_seed_names_come_from_environment(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, field: str, default: object
) -> None:
    monkeypatch.setenv(name, value)
    assert getattr(load_settings(), field) == default


def test_bad_json_in_env_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_QUEUES", "{warehouse: 3")
    with pytest.raises(ConfigError, match="QUEUES"):
        load_settings()


def test_database_url_with_bad_port_fails_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://app:pw@db:33o6/shop")
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load_settings()


def test_masked_never_shows_an_unencoded_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql+pymysql://app:ab#cd@db:3306/shop")
    try:
        s = load_settings()
    except ConfigError as e:  # refusing the URL is a fix too, if the message keeps the secret out
        assert "ab#cd" not in str(e)
        return
    assert "ab#cd" not in json.dumps(s.masked())


@pytest.mark.parametrize(
    ("toml", "env"),
    [("[queues.warehouse]\nconcurrency = 3\n", {}), ("", {"ORCH_DEFAULT_QUEUE": "nowhere"})],
)
def test_default_queue_is_always_a_configured_queue(
    monkeypatch: pytest.MonkeyPatch, toml: str, env: dict[str, str]
) -> None:
    write(Path("orchestrator.toml"), toml)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        s = load_settings()
    except ConfigError as e:  # refusing such a config is a fix too
        assert "queue" in str(e)
        return
    assert s.default_queue in s.queues


def test_every_setting_is_read_from_its_environment_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sections are composed into Settings: each key keeps ORCH_<KEY> in the environment, as the
    README documents (the seed names are checked by test_seed_env_names)."""
    from pydantic import AliasChoices

    env_name = {"es_timeout_s": "ORCH_ES_TIMEOUT", "db_change_polling_interval_s": "ORCH_DB_CHANGE_POLLING_INTERVAL"}
    env_name |= {name: name.upper() for name in TracingSettings.model_fields}  # the standard OTEL_* names
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names = [alias] if isinstance(alias, str) else list(alias.choices) if isinstance(alias, AliasChoices) else []
        assert env_name.get(name, f"ORCH_{name.upper()}") in names, (name, names)
    monkeypatch.setenv("ORCH_STATE_DIR", "/srv/state")
    monkeypatch.setenv("PLUGINS_DIR", "/srv/plugins")
    s = load_settings()
    assert (s.state_dir, s.plugins_dir, s.venv_dir) == (
        Path("/srv/state"),
        Path("/srv/plugins"),
        Path("/srv/state/venvs"),
    )


# -- unknown keys in the file (the environment is exempt: it holds unrelated names) --
@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("shutdown_grase_s = 5\n", "unknown key 'shutdown_grase_s' (did you mean 'shutdown_grace_s'?)"),
        ("[plugins.x.throtle]\nrate = 1\n", "unknown section 'plugins.x.throtle' (did you mean 'plugins.x.throttle'?)"),
        ("[queues.bulk]\nconcurency = 2\n", "unknown key 'queues.bulk.concurency' (did you mean 'queues.bulk.concurrency'?)"),
        ('[[schedules]]\nid = "a"\nplugn = "p"\nevery = "1h"\n', "unknown key 'schedules[0].plugn' (did you mean 'schedules[0].plugin'?)"),
        ('[cdc]\nchangelog_tabel = "x"\n', "unknown key 'cdc.changelog_tabel' (did you mean 'cdc.changelog_table'?)"),
        ("zzz_unrelated = 1\n", "unknown key 'zzz_unrelated'\n"),
    ],
)  # fmt: skip
def test_unknown_keys_in_the_file_name_the_closest_valid_one(toml: str, message: str) -> None:
    write(Path("orchestrator.toml"), toml)
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert message.rstrip("\n") in str(e.value)
    assert "\n" not in str(e.value)
    if message.endswith("\n"):  # nothing close enough: no guess
        assert "did you mean" not in str(e.value)


def test_orchestrator_config_exits_2_on_an_unknown_key(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = write(tmp_path / "custom.toml", "shutdown_grase_s = 5\n")
    r = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--config", str(config), "config"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 2, r.stdout
    assert "unknown key 'shutdown_grase_s' (did you mean 'shutdown_grace_s'?)" in r.stderr
    assert "Traceback" not in r.stderr


def test_known_keys_and_aliases_in_the_file_pass_and_the_environment_is_exempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write(
        Path("orchestrator.toml"),
        'shutdown_grace_s = 5\nREDIS_URL = "redis://h:1/0"\nhttp_allowed_hosts = ["orch.example"]\n'
        '[queues.bulk]\nconcurrency = 2\n[cdc.monitored_tables.orders]\ntriggers = ["p"]\n',
    )
    monkeypatch.setenv("ORCH_SHUTDOWN_GRASE_S", "5")  # a stray name in the environment is not ours to judge
    monkeypatch.setenv("SOME_OTHER_TOOL", "1")
    s = load_settings()
    assert s.shutdown_grace_s == 5 and s.queues["bulk"].concurrency == 2 and s.http_allowed_hosts == ["orch.example"]


def test_http_allowed_hosts_from_the_environment_is_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_HTTP_ALLOWED_HOSTS", "Orch.Example, proxy.internal,")
    assert load_settings().http_allowed_hosts == ["orch.example", "proxy.internal"]


@pytest.mark.parametrize("url", ["redis://:ab#cd@127.0.0.1:6399/0", "redis://:ab?cd@h:1/0", "redis://u:a/b@h/0"])
def test_a_raw_special_character_in_the_redis_password_is_one_line_without_it(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("REDIS_URL", url)
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert "percent-encoded" in str(e.value) and "\n" not in str(e.value)
    assert url.split("@")[0].split(":")[-1] not in str(e.value)  # no part of the password
    monkeypatch.setenv("REDIS_URL", url.replace("#", "%23").replace("?", "%3F").replace("a/b", "a%2Fb"))
    assert load_settings().redis_url is not None
