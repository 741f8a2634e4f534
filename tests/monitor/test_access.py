"""Who reads what on the status endpoint, which Host names it answers, its connection limits, and
inputs that used to answer 500 (a real `orchestrator run` with a token, and an in-process app
without one on a non-loopback bind)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from orchestrator.app import Orchestrator
from orchestrator.monitor.routes import ROUTES
from tests.jobs.helpers import make_plugin, make_settings, run_app
from tests.monitor.conftest import TOKEN, Server

# Every GET that returns job data, with a path that reaches its handler.
DATA_READS = {
    "/api/plugins": "/api/plugins",
    "/api/plugins/{name}": "/api/plugins/probe",
    "/api/plugins/{name}/throttle": "/api/plugins/probe/throttle",
    "/api/jobs": "/api/jobs",
    "/api/jobs/{job_id}": "/api/jobs/{job}",
    "/api/jobs/{job_id}/logs": "/api/jobs/{job}/logs",
    "/api/batches/{batch_id}": "/api/batches/nope",
    "/api/finished": "/api/finished",
    "/api/schedules": "/api/schedules",
    "/api/schedules/{id}": "/api/schedules/nope",
    "/api/schedules/{id}/history": "/api/schedules/nope/history",
    "/api/workflows": "/api/workflows",
    "/api/workflows/{workflow_id}": "/api/workflows/nope",
}
# Probes, counts, metrics and the page itself: open to anyone who reaches the port.
OPEN_READS = {"/", "/dashboard/{name}", "/live", "/health", "/status", "/metrics", "/api/stats", "/api/throughput"}


async def raw(port: int, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (headers aiohttp's client would refuse to send); the status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")))
        return status, await reader.readexactly(length)
    finally:
        writer.close()


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def get(server: Server, path: str, token: str | None = None, **headers: str) -> tuple[int, dict[str, object]]:
    """A GET with optional extra headers (urllib sets Host from the URL unless one is given)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(server.url + path, headers=headers)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if resp.headers.get_content_type() == "application/json" else {}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_every_get_route_is_either_job_data_or_open() -> None:
    gets = {r.path: r.data for r in ROUTES if r.method == "GET"}
    assert {p for p, data in gets.items() if data} == set(DATA_READS)
    assert {p for p, data in gets.items() if not data} == OPEN_READS


def test_job_data_needs_the_token_and_probes_stay_open(server: Server) -> None:
    job = server.trigger(name="secret-params")
    server.wait_state(job, "succeeded")
    for route, path in DATA_READS.items():
        path = path.format(job=job)
        status, body = get(server, path)
        assert status == 401, (route, status, body)
        assert "bearer token" in str(body["error"])
        assert get(server, path, token="wrong")[0] == 401, route
        assert get(server, path, token=TOKEN)[0] in (200, 404), route
    for path in ("/live", "/health", "/metrics", "/status", "/api/stats", "/api/throughput"):
        assert get(server, path)[0] in (200, 503), path  # /health may be 503: still answered without a token
    job_body = get(server, f"/api/jobs/{job}", token=TOKEN)[1]
    assert job_body["params"]["name"] == "secret-params"


async def test_an_authorization_header_that_is_not_utf8_is_refused_not_an_error(server: Server) -> None:
    port = port_of(server)
    for line in (b"GET /api/jobs HTTP/1.1", b"POST /api/jobs/purge HTTP/1.1"):
        status, body = await raw(
            port, line + b"\r\nHost: localhost\r\nAuthorization: Bearer \xff\xfe\x80\r\nContent-Length: 0\r\n\r\n"
        )
        assert status == 401, body
    assert "internal error" not in server.log()


@pytest.mark.parametrize("path", ["/api/jobs", "/api/batches", "/api/schedules", "/api/jobs/purge"])
def test_json_nested_a_thousand_deep_is_a_400(server: Server, path: str) -> None:
    import urllib.error
    import urllib.request

    for depth in (1000, 100):  # past Python's recursion limit, and past the 64-level cap
        data = ('{"plugin": "probe", "params": {"x": ' + "[" * depth + "]" * depth + "}}").encode()
        req = urllib.request.Request(server.url + path, data=data, method="POST")
        req.add_header("Content-Type", "application/json")
        req.add_header("Authorization", f"Bearer {TOKEN}")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 400, depth
        assert "nested deeper than 64 levels" in json.loads(e.value.read())["error"]


def test_a_reload_name_is_a_plugin_name_never_a_path(server: Server) -> None:
    outside = server.tmp / "outside"
    make_plugin(server.tmp, "outside")
    assert (outside / "plugin.json").is_file()
    for name in ("../outside", "..%2F..%2Fx", "probe\n"):
        status, body = server.request("POST", f"/api/plugins/{urllib.parse.quote(name, safe='%')}/reload")
        assert status == 400, (name, status, body)
        assert "bad plugin name" in str(body["error"])
    assert server.request("GET", "/api/plugins/outside")[0] == 404


def test_job_ids_with_control_characters_are_refused(server: Server) -> None:
    for job_id in ("a\r\nforged log line", "tab\there", "nul\x00", "bidi\u202e"):
        status, body = server.request("POST", "/api/jobs", {"plugin": "probe", "job_id": job_id})
        assert status == 400, (job_id, body)
        assert "printable characters only" in body["error"]
    status, body = server.request("POST", "/api/jobs", {"plugin": "probe", "job_id": "order 42/ünïcode"})
    assert status == 201, body


def test_a_loopback_bind_answers_only_its_own_host_names(server: Server) -> None:
    port = port_of(server)
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "[::1]", "127.0.0.2", "app.localhost"):
        assert get(server, "/live", Host=host)[0] == 200, host
    for host in ("attacker.example", f"attacker.example:{port}", "localhost.attacker.example", "127.0.0.1.nip.io"):
        status, body = get(server, "/api/jobs", token=TOKEN, Host=host)
        assert status == 421, (host, status)
        assert "http_allowed_hosts" in str(body["error"])


@pytest.fixture
async def open_bind(tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Orchestrator]:
    """No token, bound to every address, behind a proxy named orch.example, short idle timeout."""
    make_plugin(tmp_path / "plugins")
    settings = make_settings(
        tmp_path, redis_url, http_host="0.0.0.0", http_allowed_hosts="orch.example", http_idle_timeout_s=0.5
    )
    with caplog.at_level(logging.WARNING, logger="orchestrator.monitor.http"):
        async with run_app(settings) as app:
            yield app


async def test_a_non_loopback_bind_without_a_token_serves_counts_only(
    open_bind: Orchestrator, caplog: pytest.LogCaptureFixture
) -> None:
    records = caplog.get_records("setup")  # logged while the fixture started the app
    warnings = [r.getMessage() for r in records if "not a loopback address" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert open_bind.http is not None
    base = f"http://127.0.0.1:{open_bind.http.bound_port}"
    async with aiohttp.ClientSession() as http:
        for path in (
            "/api/jobs",
            "/api/jobs/any-id",
            "/api/jobs/any-id/logs",
            "/api/plugins",
            "/api/finished",
            "/api/schedules",
        ):
            async with http.get(base + path) as r:
                assert r.status == 403, path
                assert "set ORCH_API_TOKEN" in (await r.json())["error"]
        for path in ("/api/stats", "/status", "/metrics", "/live"):
            async with http.get(base + path) as r:
                assert r.status == 200, path
        async with http.get(base + "/live", headers={"Host": "orch.example:443"}) as r:
            assert r.status == 200  # the proxy's name, configured
        async with http.get(base + "/live", headers={"Host": "attacker.example"}) as r:
            assert r.status == 421  # the list applies on any bind once it is set


async def closed_within(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, drip: bytes | None) -> bool:
    """Whether the server closes the connection within 10 s (20 times the idle timeout), dripping
    `drip` every 0.1 s meanwhile (a slowloris)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if drip is not None:
                writer.write(drip)
                await writer.drain()
            if await asyncio.wait_for(reader.read(65536), timeout=0.1) == b"":
                return True
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


async def test_slow_headers_and_idle_connections_are_cut_off(open_bind: Orchestrator) -> None:
    assert open_bind.http is not None
    port = open_bind.http.bound_port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:  # a request whose headers never end
        writer.write(b"GET /live HTTP/1.1\r\nHost: localhost\r\n")
        assert await closed_within(reader, writer, b"X-Slow: a\r\n")
    finally:
        writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:  # a keep-alive connection left idle after its request
        writer.write(b"GET /live HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert b"200 OK" in await reader.readuntil(b"\r\n\r\n")
        assert await closed_within(reader, writer, None)
    finally:
        writer.close()
