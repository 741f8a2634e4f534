"""Stopping and killing the container: SIGTERM from `podman stop` drains the running job, and a
`podman kill` mid-load loses no acknowledged job: a new container on the same /data volume (the
embedded Redis's append-only file) finds every one and runs again the ones that were running.

The probe plugin (tests/jobs/helpers.py) is mounted read-only and writes what it did to a
host folder, so the host sees each start and end whatever the container's fate.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.container.podman import Container, Podman, podman, wait_until
from tests.jobs.helpers import make_plugin, read_events

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

# A killed instance's running jobs go back to the queue once its heartbeat key expires.
FAST_RECOVERY = {"ORCH_HEARTBEAT_INTERVAL_S": "0.5", "ORCH_INSTANCE_TTL_S": "2"}


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A host folder the container's user (uid 10001) can read (plugins) and write (records)."""
    with tempfile.TemporaryDirectory(prefix="orch-container-") as name:
        folder = Path(name)
        folder.chmod(0o755)
        make_plugin(folder / "plugins")
        for path in (folder / "plugins").rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        (folder / "plugins").chmod(0o755)
        (folder / "records").mkdir(mode=0o777)
        (folder / "records").chmod(0o777)
        yield folder


def _start(pods: Podman, volume: str, shared: Path, **env: str) -> Container:
    container = pods.run(
        "--read-only", "--tmpfs", "/tmp", "-v", f"{volume}:/data",
        "-v", f"{shared / 'plugins'}:/plugins:ro", "-v", f"{shared / 'records'}:/records",
        env={"PLUGINS_DIR": "/plugins", **env},
    )  # fmt: skip
    container.wait_healthy()
    return container


def test_podman_stop_drains_the_running_job(pods: Podman, shared_dir: Path) -> None:
    volume = pods.volume()
    first = _start(pods, volume, shared_dir)
    record = "/records/stop.jsonl"
    job_id = first.trigger("probe", {"sleep": 3, "record": record})
    first.wait_job(job_id, "running")

    podman("stop", "-t", "30", first.name, timeout=60)

    assert first.exit_code() == 0, first.logs()  # 137 would mean the runtime had to SIGKILL it
    events = [e for e in read_events(shared_dir / "records" / "stop.jsonl") if e["job"] == job_id]
    assert [e["event"] for e in events] == ["start", "end"]
    # the outcome was written before the exit: a new container on the volume reads it
    second = _start(pods, volume, shared_dir)
    job = second.job(job_id)
    assert (job["state"], job["attempt"]) == ("succeeded", 1), job


def test_podman_kill_mid_load_loses_no_acknowledged_job(pods: Podman, shared_dir: Path) -> None:
    volume = pods.volume()
    first = _start(pods, volume, shared_dir, **FAST_RECOVERY)
    records = shared_dir / "records" / "kill.jsonl"
    acknowledged: list[str] = []
    stop_load = threading.Event()

    def load() -> None:
        # Triggers until the container is gone (or 40 jobs): an id counts once the API answered with it.
        # The first four run long, so they are surely running when the kill comes.
        n = 0
        while not stop_load.is_set() and n < 40:
            status, body = first.api("POST", "/api/jobs", {
                "plugin": "probe", "params": {"name": f"j{n}", "sleep": 5 if n < 4 else 0.3, "record": f"/records/{records.name}"},
            })  # fmt: skip
            if status not in (200, 201):
                return
            acknowledged.append(body["job_id"])
            n += 1

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        wait_until("four probe jobs running", lambda: len(_starts(records)) >= 4 and len(acknowledged) >= 10)
        podman("kill", first.name)
    finally:
        stop_load.set()
        loader.join(timeout=30)
    killed_during = {job for job, events in _by_job(records).items() if "end" not in events}
    assert killed_during, "no job was running when the container was killed"

    second = _start(pods, volume, shared_dir, **FAST_RECOVERY)
    for job_id in acknowledged:
        job = second.wait_job(job_id, "succeeded", "failed", timeout_s=90)
        assert job["state"] == "succeeded", job
    runs = _by_job(records)
    for job_id in killed_during:
        # a run cut short by a kill is not a failed attempt: the same attempt runs again
        assert runs[job_id].count("start") == 2 and runs[job_id][-1] == "end", (job_id, runs[job_id])


def _starts(path: Path) -> list[dict[str, Any]]:
    return [e for e in read_events(path) if e["event"] == "start"]


def _by_job(path: Path) -> dict[str, list[str]]:
    runs: dict[str, list[str]] = {}
    for event in read_events(path):
        runs.setdefault(event["job"], []).append(event["event"])
    return runs
