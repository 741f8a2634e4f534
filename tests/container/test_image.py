"""The image as an operator runs it: read-only root, the /data volume, a tmpfs /tmp, non-root.

One container for the module (starting one is the slow part); each test checks one promise.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.container.podman import Container, Podman, podman

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def served(image: str) -> Iterator[Container]:
    runner = Podman(image)
    try:
        volume = runner.volume()
        container = runner.run("--read-only", "--tmpfs", "/tmp", "-v", f"{volume}:/data")
        container.wait_healthy()
        yield container
    finally:
        runner.cleanup()


def test_starts_with_the_example_plugins_and_answers_health(served: Container) -> None:
    status, plugins = served.api("GET", "/api/plugins")
    assert status == 200
    states = {plugin["name"]: plugin["state"] for plugin in plugins}
    # es_indexer builds its venv from PyPI at start: ready or not depends on the network, not the image
    assert set(states) == {"data_processor", "es_indexer"}
    assert states["data_processor"] == "ready"
    status, health = served.api("GET", "/health")
    assert status == 200
    assert health["status"] == "ok"


def test_podman_healthcheck_run_passes(served: Container) -> None:
    # --format docker keeps the HEALTHCHECK (the OCI format drops it): `orchestrator health` inside
    check = podman("healthcheck", "run", served.name, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    config = podman("inspect", "--format", "{{json .Config.Healthcheck.Test}}", served.name).stdout
    assert "orchestrator" in config and "health" in config


def test_a_job_triggered_from_the_host_runs(served: Container) -> None:
    records = [{"id": 1, "name": " Ada "}, {"id": 2, "name": "Grace"}]
    job_id = served.trigger("data_processor", {"operation": "clean_data", "records": records})
    job = served.wait_job(job_id, "succeeded", "failed")
    assert job["state"] == "succeeded", job
    assert job["result"] is not None


def test_runs_as_non_root_on_a_read_only_root(served: Container) -> None:
    assert podman("exec", served.name, "id", "-u").stdout.strip() == "10001"
    assert podman("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", served.name).stdout.strip() == "true"
    denied = podman("exec", served.name, "touch", "/app/written", check=False)
    assert denied.returncode != 0
    # what it writes goes to the volume and the tmpfs
    state = podman("exec", served.name, "ls", "/data/redis").stdout.split()
    assert "appendonlydir" in state or any(name.startswith("appendonly") for name in state), state
    podman("exec", served.name, "touch", "/tmp/written")


def test_pid_1_is_tini_so_orphans_are_reaped(served: Container) -> None:
    # the daemonized embedded redis-server and a killed plugin's grandchildren go to PID 1
    assert podman("exec", served.name, "cat", "/proc/1/comm").stdout.strip() == "tini"
    zombies = podman("exec", served.name, "sh", "-c", "grep -l '^State:.*Z' /proc/[0-9]*/status || true").stdout
    assert zombies.strip() == ""
