"""No secret is printed: a real `orchestrator run` with planted secrets in every place one may hide
(a Redis password as a URL query parameter, DATABASE_URL, ES_HOSTS and ES_PASSWORD, the API token,
index credentials in a plugin's dependencies, one of them refused as an option), then its whole output, `orchestrator config`, /status and
/api/plugins are searched for each of them. And a '#' in a Redis password is one line that shows
no part of it."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp
import pytest

from orchestrator.client import connect_redis
from orchestrator.errors import ConfigError
from orchestrator.logs import mask_secrets, mask_url
from tests.jobs.helpers import RunProcess, cli, make_plugin, make_settings, wait_for
from tests.redis.servers import RedisProc
from tests.services import free_port

REDIS_SECRET = "redisQ-s3cret"
SECRETS = {
    "redis": REDIS_SECRET,
    "db": "dbpw-s3cret",
    "es_url": "esurl-s3cret",
    "es": "espw-s3cret",
    "token": "apitok-s3cret",
    "index": "idxtok-s3cret",
    "option": "opttok-s3cret",
}


@pytest.mark.timeout(120)
async def test_a_full_run_prints_no_planted_secret(tmp_path: Path) -> None:
    server = RedisProc(tmp_path / "redis", ["--requirepass", REDIS_SECRET])
    server.ping_args = ["--no-auth-warning", "-a", REDIS_SECRET]
    server.start()
    refused = free_port()  # nothing listens: the database, Elasticsearch and the index fail to connect
    make_plugin(tmp_path / "plugins")
    make_plugin(
        tmp_path / "plugins",
        "withdeps",
        dependencies=[f"idna @ http://build:{SECRETS['index']}@127.0.0.1:{refused}/idna-3.7-py3-none-any.whl"],
    )
    # refused as an option (plugins/manifest.requirement_problem): the reason names the option only
    make_plugin(
        tmp_path / "plugins",
        "optdeps",
        dependencies=[f"--extra-index-url http://u:{SECRETS['option']}@idx.local/simple"],
    )
    http_port = free_port()
    url = f"redis://127.0.0.1:{server.port}/0?password={REDIS_SECRET}"
    settings = make_settings(tmp_path, url, http_port=http_port)
    env = {
        "DATABASE_URL": f"mysql+asyncmy://app:{SECRETS['db']}@127.0.0.1:{refused}/shop",
        "ES_HOSTS": f"http://elastic:{SECRETS['es_url']}@127.0.0.1:{refused}",
        "ES_PASSWORD": SECRETS["es"],
        "ORCH_API_TOKEN": SECRETS["token"],
        "UV_HTTP_RETRIES": "0",  # the build fails at once
    }
    run = RunProcess(settings, tmp_path / "run.log", **env)
    await run.start()
    config_printed = asyncio.create_task(cli(settings, "config", **env))  # meanwhile: the CLI starts slowly
    try:
        auth = {"Authorization": f"Bearer {SECRETS['token']}"}
        async with aiohttp.ClientSession(headers=auth) as http:

            async def plugins() -> list[dict[str, object]] | None:
                try:
                    async with http.get(f"http://127.0.0.1:{http_port}/api/plugins") as r:
                        body = await r.json()
                except aiohttp.ClientError:
                    return None
                built = any(p["name"] == "withdeps" and p["reason"] for p in body)
                return body if built else None  # once the venv build failed

            listed = await wait_for(plugins, timeout_s=60, interval_s=0.2)
            async with http.get(f"http://127.0.0.1:{http_port}/status") as r:
                status = await r.text()
        assert json.loads(status)["redis"]["url"] == f"redis://127.0.0.1:{server.port}/0?password=***"
        config = await config_printed
        assert config.rc == 0, config.err
        assert await run.signal_and_wait(signal.SIGTERM) == 0, run.log()
        texts = {
            "run output": run.log(),
            "config": config.out + config.err,
            "/status": status,
            "/api/plugins": json.dumps(listed),
        }
        assert "idna @ http://build:***@127.0.0.1" in texts["/api/plugins"]
        assert "'--extra-index-url' is not a requirement but an installer option" in texts["run output"]
        leaks = [(where, name) for where, text in texts.items() for name, s in SECRETS.items() if s in text]
        assert leaks == [], leaks
    finally:
        await asyncio.gather(config_printed, return_exceptions=True)
        if run.proc is not None and run.proc.returncode is None:
            await run.kill9()
        server.stop()


async def test_a_hash_in_the_redis_password_is_one_line_without_the_password(tmp_path: Path) -> None:
    url = "redis://:Ab#cdEF-s3cret@127.0.0.1:6379/0"
    with pytest.raises(ConfigError) as raised:  # a Client given the URL directly
        connect_redis(url)
    assert "Ab" not in str(raised.value) and "s3cret" not in str(raised.value)
    settings = make_settings(tmp_path, "redis://127.0.0.1:6379/0")
    out = await cli(settings, "jobs", "stats", REDIS_URL=url)  # the setting is refused before any connection
    assert out.rc == 2 and out.out == ""
    [line] = out.err.strip().splitlines()
    assert "must be percent-encoded" in line and "Ab" not in line and "s3cret" not in line


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h:6379/0?password=pw&db=1", "redis://h:6379/0?password=***&db=1"),
        ("redis://h/0?Username=u&PASSWORD=p#q", "redis://h/0?Username=***&PASSWORD=***"),
        ("https://es:9200/?api_token=t&client_secret=s&x=1", "https://es:9200/?api_token=***&client_secret=***&x=1"),
        ("redis://:pa#ss@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://:pw@h/0?client_name=a@b", "redis://:***@h/0?client_name=a@b"),
        ("redis://h/0?client_name=a@b", "redis://h/0?client_name=a@b"),
    ],
)
def test_mask_url_masks_credential_query_parameters(url: str, expected: str) -> None:
    assert mask_url(url) == expected


def test_mask_secrets_masks_urls_inside_requirement_lines() -> None:
    line = "--extra-index-url http://user:tok@idx.example/simple idna @ https://a:b@h/idna.whl"
    assert mask_secrets(line) == "--extra-index-url http://user:***@idx.example/simple idna @ https://a:***@h/idna.whl"
