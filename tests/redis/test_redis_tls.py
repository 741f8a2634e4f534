"""TLS (rediss://) with a verified CA and a client certificate; a wrong CA, a missing file and a
refused connection each end a command with one line (exit 2 for a setting, 1 for Redis away)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from orchestrator.client import Client, connect_redis
from orchestrator.config import Settings
from orchestrator.redis.connection import RedisOptions
from tests.jobs.helpers import cli, make_plugin, make_settings, run_app
from tests.redis.servers import RedisProc
from tests.services import free_port


def tls_settings(tmp_path: Path, server: RedisProc, certs: dict[str, Path], ca: str = "ca") -> Settings:
    return make_settings(
        tmp_path,
        f"rediss://127.0.0.1:{server.port}/0",
        redis_ca_file=certs[ca],
        redis_cert_file=certs["client_crt"],
        redis_key_file=certs["client_key"],
    )


def tls_env(certs: dict[str, Path], ca: str = "ca") -> dict[str, str]:
    return {
        "ORCH_REDIS_CA_FILE": str(certs[ca]),
        "ORCH_REDIS_CERT_FILE": str(certs["client_crt"]),
        "ORCH_REDIS_KEY_FILE": str(certs["client_key"]),
    }


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


async def test_tls_with_the_ca_runs_the_job_path(tmp_path: Path, tls_redis: RedisProc, certs: dict[str, Path]) -> None:
    make_plugin(tmp_path / "plugins")
    settings = tls_settings(tmp_path, tls_redis, certs)
    redis = connect_redis(settings.redis_url or "", RedisOptions.from_settings(settings))
    await redis.flushall()
    async with run_app(settings) as app, Client(redis, owns_redis=True) as client:
        job = await client.trigger("probe", {"name": "over-tls"})
        result = await client.result(job.job_id, timeout_s=30)
        assert result["state"] == "succeeded" and result["result"] == {"name": "over-tls", "attempt": 1}
        assert app.http is not None
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{app.http.bound_port}/status") as r:
            status = await r.json()
        assert status["redis"]["url"] == f"rediss://127.0.0.1:{tls_redis.port}/0"
        connections = status["redis"]["connections"]
        assert connections["max"] == settings.redis_max_connections
        assert 0 < connections["budget"]["total"] <= connections["max"]
    # the CLI goes through the same settings
    out = await cli(settings, "jobs", "stats", "--json", **tls_env(certs))
    assert out.rc == 0, out.err
    assert out.json()["states"]["succeeded"] == 1


async def test_a_wrong_ca_stops_run_at_start_up_naming_the_setting(
    tmp_path: Path, tls_redis: RedisProc, certs: dict[str, Path]
) -> None:
    settings = tls_settings(tmp_path, tls_redis, certs, ca="wrong_ca")
    out = await cli(settings, "run", **tls_env(certs, ca="wrong_ca"))
    assert out.rc == 2, out.err
    line = one_error_line(out.err)
    assert line.startswith("error: redis_ca_file:") and "certificate verify failed" in line, line
    assert str(certs["wrong_ca"]) in line
    # a short command too
    out = await cli(settings, "jobs", "list", **tls_env(certs, ca="wrong_ca"))
    assert out.rc == 2 and one_error_line(out.err).startswith("error: redis_ca_file:"), out.err


async def test_a_missing_ca_file_is_a_setting_error(
    tmp_path: Path, tls_redis: RedisProc, certs: dict[str, Path]
) -> None:
    settings = tls_settings(tmp_path, tls_redis, certs)
    env = {**tls_env(certs), "ORCH_REDIS_CA_FILE": str(tmp_path / "nope.crt")}
    out = await cli(settings, "run", **env)
    assert out.rc == 2, out.err
    assert one_error_line(out.err) == f"error: redis_ca_file: {tmp_path / 'nope.crt'} does not exist or is not a file"


async def test_a_refused_connection_is_one_line_with_the_password_masked(tmp_path: Path) -> None:
    make_plugin(tmp_path / "plugins")
    port = free_port()
    settings = make_settings(tmp_path, f"redis://orch:s3cret@127.0.0.1:{port}/0")
    for args in (["jobs", "stats"], ["trigger", "probe"], ["run"]):
        if args == ["run"]:
            out = await cli(settings, *args, ORCH_REDIS_CONNECT_TIMEOUT_S="1")
        else:
            out = await cli(settings, *args)
        assert out.rc == 1, (args, out.err)
        line = one_error_line(out.err)
        assert line.startswith(
            f"error: redis: cannot connect to redis://orch:***@127.0.0.1:{port}/0 (connection refused)"
        )
        assert "s3cret" not in out.err + out.out


async def test_a_refused_password_is_one_line_and_run_does_not_wait(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    url = redis_url.replace("redis://", "redis://nobody:wrong-pw@")
    settings = make_settings(tmp_path, url)
    for args in (["jobs", "stats"], ["run"]):  # run: no retry can mend a password, so no waiting either
        out = await cli(settings, *args)
        assert out.rc == 1, (args, out.err)
        line = one_error_line(out.err)
        masked = url.replace("wrong-pw", "***")
        assert line.startswith(f"error: redis: cannot connect to {masked} (authentication failed"), line
        assert "wrong-pw" not in out.err
