"""The /api contract against a real `orchestrator run`: no input gives a 5xx, the OpenAPI document
lists every route, and schemathesis finds no server error and no response outside its schema."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from orchestrator.monitor.http import MAX_BODY_BYTES
from tests.jobs.helpers import make_plugin, make_settings, run_app
from tests.monitor.conftest import TOKEN, Server

WRITE_ROUTES_WITH_A_BODY = ["/api/jobs", "/api/batches", "/api/jobs/purge", "/api/workflows"]


def _raw(server: Server, path: str, data: bytes, content_type: str = "application/json") -> tuple[int, str]:
    req = urllib.request.Request(server.url + path, data=data, method="POST")
    req.add_header("Content-Type", content_type)
    req.add_header("Authorization", f"Bearer {TOKEN}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.parametrize("path", WRITE_ROUTES_WITH_A_BODY)
def test_bad_bodies_are_4xx_naming_the_problem(server: Server, path: str) -> None:
    import json

    cases = {
        "not UTF-8": (b"\xff\xfe{\x00", "application/json", 400, "UTF-8"),
        "not JSON": (b"{plugin: probe", "application/json", 400, "not JSON"),
        "a JSON string": (b'"probe"', "application/json", 400, "JSON object"),
        "wrong content type": (b"plugin=probe", "application/x-www-form-urlencoded", 415, "application/json"),
        "too large": (b"[" + b" " * (MAX_BODY_BYTES + 10) + b"]", "application/json", 413, ""),
    }
    for name, (data, content_type, status, word) in cases.items():
        got, text = _raw(server, path, data, content_type)
        assert got == status, (name, got, text)
        assert word in json.loads(text)["error"], (name, text)


def test_wrong_types_name_the_field(server: Server) -> None:
    status, body = server.request("POST", "/api/jobs", {"plugin": "probe", "defer_s": "soon"})
    assert status == 400 and "defer_s" in body["error"]
    status, body = server.request("POST", "/api/jobs", {"plugin": "probe", "priority": "urgent"})
    assert status == 400 and "priority" in body["error"]
    status, body = server.request("POST", "/api/jobs", {"plugin": "probe", "param": {}})
    assert status == 400 and "param" in body["error"]  # a typo is refused, not ignored
    status, body = server.request("POST", "/api/batches", {"jobs": [{"plugin": "probe", "params": []}]})
    assert status == 400 and "jobs.0.params" in body["error"]
    status, body = server.request("GET", "/api/jobs?limit=many")
    assert status == 400 and "limit" in body["error"]
    status, body = server.request("GET", "/api/jobs?state=lost")
    assert status == 400 and "state" in body["error"]
    status, body = server.request("GET", "/api/nothing-here")
    assert status == 404 and body["error"]
    status, body = server.request("DELETE", "/api/stats")
    assert status == 405 and body["error"]


async def test_the_document_lists_every_route_the_app_registers(tmp_path: Path, redis_url: str) -> None:
    make_plugin(tmp_path / "plugins")
    async with run_app(make_settings(tmp_path, redis_url)) as app:
        assert app.http is not None
        registered = {
            (r.method, r.resource.canonical)
            for r in app.http.app.router.routes()
            if r.method != "HEAD" and r.resource is not None and r.resource.canonical != "/api/openapi.json"
        }
        from orchestrator.monitor.routes import ROUTES, openapi

        document = openapi(ROUTES, "test")
    documented = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert registered == documented
    for path, ops in document["paths"].items():
        for op in ops.values():
            assert op["responses"], path
            if "security" in op:
                assert "401" in op["responses"] and "403" in op["responses"], path


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_schemathesis_finds_no_server_error(server: Server, tmp_path: Path) -> None:
    """The fuzzer drives every operation (token set) with generated and boundary inputs; a 5xx or a
    response outside the documented schema fails the test."""
    server.trigger(name="seed")  # something to list
    schemathesis = Path(sys.executable).with_name("schemathesis")
    env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
    result = subprocess.run(
        [
            str(schemathesis), "run", f"{server.url}/api/openapi.json",
            "--checks", "not_a_server_error,response_schema_conformance",
            "-H", f"Authorization: Bearer {TOKEN}",
            "--max-examples", "25", "--seed", "20261130", "--no-color",
        ],
        check=False, capture_output=True, text=True, timeout=280, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout
