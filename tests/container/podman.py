"""Podman as the container tests drive it: the flags this kind of machine needs, containers and
volumes with names unique to the run (removed afterwards), and the orchestrator's HTTP API.

Flags (../shared/TESTING.md "Containers: podman"): `--runtime runc` (crun refuses this kernel's
hybrid cgroups), ulimits at or below the machine's own, `--network host` (each container gets its
own free HTTP port; the embedded Redis listens on a unix socket only).

Fixtures and these helpers block (subprocess, urllib, time.sleep in a wait loop): no event loop here.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tests.services import free_port

PODMAN = ["podman", "--runtime", "runc"]
LIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
TOKEN = "container-test-token"
T = TypeVar("T")


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """One podman command; its output is kept (podman logs harmless systemd-timer errors on stderr)."""
    proc = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc


def unique(prefix: str) -> str:
    return f"orch-test-{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(what: str, probe: Callable[[], T | None], timeout_s: float = 60, interval_s: float = 0.2) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(interval_s)


def http(
    port: int, method: str, path: str, body: Any = None, *, token: str | None = TOKEN, host: str = "127.0.0.1"
) -> tuple[int, Any]:
    """(status, JSON body) of one request to host:port; (0, None) while nothing answers."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{host}:{port}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None


@dataclass
class Container:
    """One `podman run -d` of the image; `port` is its ORCH_HTTP_PORT on the host network."""

    name: str
    port: int

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return http(self.port, method, path, body)

    def wait_healthy(self, timeout_s: float = 60) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            status, body = http(self.port, "GET", "/health", token=None)
            if status == 0 and not self.running():
                raise AssertionError(f"{self.name} exited before /health answered:\n{self.logs()}")
            return body if status == 200 else None

        return wait_until(f"{self.name} /health 200", probe, timeout_s)

    def trigger(self, plugin: str, params: dict[str, Any] | None = None, **extra: Any) -> str:
        status, body = self.api("POST", "/api/jobs", {"plugin": plugin, "params": params or {}, **extra})
        assert status in (200, 201), (status, body)
        return str(body["job_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        status, body = self.api("GET", f"/api/jobs/{job_id}")
        assert status == 200, (status, body)
        return dict(body)

    def wait_job(self, job_id: str, *states: str, timeout_s: float = 60) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            record = self.job(job_id)
            return record if record["state"] in states else None

        return wait_until(f"job {job_id} in {states} on {self.name}", probe, timeout_s)

    def running(self) -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return state.stdout.strip() == "true"

    def exit_code(self) -> int:
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout.strip())

    def logs(self) -> str:
        return podman("logs", self.name, check=False).stdout[-4000:]


@dataclass
class Podman:
    """Starts containers and volumes for one test and removes every one of them afterwards."""

    image: str
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    def volume(self) -> str:
        name = unique("data")
        podman("volume", "create", name)
        self.volumes.append(name)
        return name

    def run(self, *options: str, env: dict[str, str] | None = None, command: tuple[str, ...] = ()) -> Container:
        """`podman run -d` of the image on the host network with the API token and a free port."""
        container = Container(unique("run"), free_port())
        values = {"ORCH_HTTP_PORT": str(container.port), "ORCH_API_TOKEN": TOKEN, **(env or {})}
        env_args = [arg for key, value in values.items() for arg in ("-e", f"{key}={value}")]
        self.containers.append(container.name)
        podman("run", "-d", "--name", container.name, "--network", "host", *LIMITS, *env_args, *options,
               self.image, *command)  # fmt: skip
        return container

    def cleanup(self) -> None:
        for name in self.containers:
            podman("rm", "--force", "--volumes", "--time", "0", name, check=False)
        for name in self.volumes:
            podman("volume", "rm", "--force", name, check=False)
