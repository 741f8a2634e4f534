"""Fixtures of the dashboard tests: a real `orchestrator run` child and Debian's chromium.

The browser tests are plain (sync) tests: Playwright's sync API must not run inside an event
loop, and the server is a separate process anyway, so nothing here needs pytest-asyncio.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.jobs.helpers import make_plugin
from tests.services import RedisServer

TOKEN = "dashboard-test-token"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CHATTY_MAIN = """
import sys

def run(lines, **ctx):
    for i in range(lines):
        print(f"line {i}", file=sys.stderr if i % 10 == 9 else sys.stdout, flush=True)
    return {"printed": lines}
"""
_LISTENING = re.compile(r"listening on http://([^:\s]+):(\d+)")


@dataclass
class Server:
    """A running `orchestrator run` with the probe plugin and an API token."""

    url: str
    redis_url: str  # the server's own Redis (see `server_redis`)
    tmp: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    triggered: list[str] = field(default_factory=list)

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = TOKEN) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def trigger(self, plugin: str = "probe", **params: Any) -> str:
        status, body = self.request("POST", "/api/jobs", {"plugin": plugin, "params": params})
        assert status == 201, body
        self.triggered.append(body["job_id"])
        return str(body["job_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        status, body = self.request("GET", f"/api/jobs/{job_id}")
        assert status == 200, body
        return dict(body)

    def wait_state(self, job_id: str, *states: str, timeout_s: float = 30) -> dict[str, Any]:
        job: dict[str, Any] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["state"] in states:
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} is {job.get('state')}, not {states}")

    def leader(self, timeout_s: float = 30) -> dict[str, Any]:
        """The lease holder as /status shows it, once the instance has taken the lease."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            leader = self.request("GET", "/status")[1].get("leader")
            if leader and leader["instance_id"]:  # null fields until an instance takes the lease
                return dict(leader)
            time.sleep(0.05)
        raise AssertionError("no leader in /status")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _env(redis_url: str, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "REDIS_URL", "PLUGINS_DIR"))}
    env.update(
        REDIS_URL=redis_url,
        PLUGINS_DIR=str(tmp / "plugins"),
        ORCH_STATE_DIR=str(tmp / "state"),
        ORCH_API_TOKEN=TOKEN,
        ORCH_HTTP_PORT="0",
        ORCH_LOG_FORMAT="json",
        ORCH_RETRY_BACKOFF_S="0.1",
        ORCH_HEARTBEAT_INTERVAL_S="0.5",
        ORCH_SHUTDOWN_GRACE_S="2",
        ORCH_KILL_GRACE_S="1",
        ORCH_QUEUES=json.dumps({"default": {"concurrency": 4}, "warehouse": {"concurrency": 1}}),
    )
    return env


@pytest.fixture(scope="module")
def server_redis(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The module server's own redis-server, apart from the session one.

    The module's other tests take `redis_url`, which FLUSHALLs the session Redis while this
    server still runs: that wiped its heartbeat, lease and claims under it (it took itself for
    presumed dead and stopped a running job, whose record stayed `running` until reconcile put it
    back, 20 s later). Against an external Redis (ORCH_TEST_REDIS_URL) there is only that one.
    """
    if redis_server.external:
        yield redis_server
        return
    own = RedisServer.from_env_or_start(tmp_path_factory.mktemp("server-redis"))
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture(scope="module")
def server(server_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One `orchestrator run` for the module's browser tests (starting one per test costs seconds)."""
    if not server_redis.running:
        server_redis.start()
    with redis.Redis.from_url(server_redis.url) as r:
        r.flushall()
    tmp = tmp_path_factory.mktemp("dashboard")
    make_plugin(tmp / "plugins", "probe", max_retries=0)
    make_plugin(tmp / "plugins", "other", queue="warehouse")
    chatty = make_plugin(tmp / "plugins", "chatty", parameters={"lines": {"type": "integer", "required": True}})
    (chatty / "main.py").write_text(CHATTY_MAIN)
    broken = tmp / "plugins" / "broken"
    broken.mkdir()
    (broken / "plugin.json").write_text('{"name": "broken", "version": "1.0.0"')  # cut short: invalid JSON
    log_path = tmp / "run.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "run"], env=_env(server_redis.url, tmp), cwd=tmp,
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (match := _LISTENING.search(log_path.read_text(errors="replace"))):
            assert proc.poll() is None, f"orchestrator run exited:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"no listening line:\n{log_path.read_text()}"
            time.sleep(0.05)
        yield Server(f"http://{match.group(1)}:{match.group(2)}", server_redis.url, tmp, log_path, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium package")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class PageProbe:
    """A page with what went wrong on it: console errors and uncaught exceptions."""

    page: Any
    console_errors: list[str]
    page_errors: list[str]
    shots: Path

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        # ORCH_TEST_SCREENSHOTS=docs/screenshots refreshes the README's pictures from a run.
        if copy_to := os.environ.get("ORCH_TEST_SCREENSHOTS"):
            shutil.copy(path, Path(copy_to) / path.name)
        return path


NewPage = Callable[..., PageProbe]


@pytest.fixture
def new_page(browser: Any, server: Server, tmp_path: Path) -> Iterator[NewPage]:
    """Open the dashboard in a fresh browser context (own localStorage); screenshots go to tmp_path."""
    contexts: list[Any] = []
    shots = tmp_path / "screenshots"
    shots.mkdir()

    def open_page(fragment: str = "", *, width: int = 1280, height: int = 900, token: str | None = None) -> PageProbe:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        if token is not None:
            context.add_init_script(f"localStorage.setItem('orchestrator.apiToken', {json.dumps(token)})")
        page = context.new_page()
        probe = PageProbe(page, [], [], shots)
        page.on("console", lambda m: probe.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: probe.page_errors.append(str(e)))
        page.goto(server.url + "/" + fragment)
        page.wait_for_selector("body[data-loaded='1']", timeout=15_000)
        return probe

    yield open_page
    for context in contexts:
        context.close()
