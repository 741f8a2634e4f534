"""/metrics as Prometheus reads it: `promtool check metrics` on a live scrape after jobs of every
state ran, the counters by plugin and outcome, and the alert rules through `promtool check rules`."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.monitor.conftest import Server


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: scripts/test installs Debian's prometheus package")
    return path


def _scrape(server: Server) -> str:
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        return resp.read().decode()


def test_a_live_scrape_passes_promtool_after_jobs_of_every_state(server: Server, tmp_path: Path) -> None:
    ok = server.trigger(name="fine")
    failed = server.trigger(fail_until_file=str(tmp_path / "never"))  # probe: no retries
    retried = server.trigger("other", fail_until_file=str(tmp_path / "later"))  # other: retried, then gate opens
    slow = server.trigger(sleep=30)
    deferred_status, deferred = server.request("POST", "/api/jobs", {"plugin": "probe", "defer_s": 3600})
    assert deferred_status == 201
    server.wait_state(ok, "succeeded")
    server.wait_state(failed, "failed")
    _wait_attempt(server, retried, 2)  # its first attempt failed: a retry is on record
    (tmp_path / "later").write_text("open")
    server.wait_state(retried, "succeeded", "failed")
    server.wait_state(slow, "running")
    assert server.request("POST", f"/api/jobs/{slow}/cancel")[0] == 200
    server.wait_state(slow, "cancelled")

    text = _scrape(server)
    check = subprocess.run(
        [_promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr + text

    def value(pattern: str) -> float:
        match = re.search(pattern + r" ([0-9.e+-]+)$", text, re.MULTILINE)
        assert match, pattern
        return float(match.group(1))

    assert value(r'orchestrator_jobs_finished_total\{outcome="failed",plugin="probe",queue="default"\}') >= 1
    assert value(r'orchestrator_jobs_finished_total\{outcome="retried",plugin="other",queue="warehouse"\}') >= 1
    assert value(r'orchestrator_jobs_finished_total\{outcome="cancelled",plugin="probe",queue="default"\}') >= 1
    assert value(r'orchestrator_jobs_started_total\{plugin="probe",queue="default"\}') >= 3
    assert value(r'orchestrator_job_duration_seconds_count\{plugin="probe"\}') >= 2
    assert value(r'orchestrator_job_wait_seconds_count\{queue="warehouse"\}') >= 2
    assert value(r'orchestrator_plugin_launch_seconds_count\{isolation="process"\}') >= 4
    assert value(r'orchestrator_jobs\{state="deferred"\}') >= 1
    assert value(r"orchestrator_instances") == 1
    assert value(r"orchestrator_is_leader") == 1
    assert value(r"orchestrator_loop_lag_seconds_count") > 0
    assert value(r"orchestrator_redis_rtt_seconds") > 0
    assert value(r"orchestrator_up") == 1
    server.request("POST", f"/api/jobs/{deferred['job_id']}/cancel")


def _wait_attempt(server: Server, job_id: str, attempt: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while (job := server.job(job_id))["attempt"] < attempt and job["state"] not in {"succeeded", "failed"}:
        assert time.monotonic() < deadline, job
        time.sleep(0.02)


def test_the_alert_rules_pass_promtool() -> None:
    rules = REPO_ROOT / "docs" / "prometheus" / "alerts.yml"
    check = subprocess.run(
        [_promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=30, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "3 rules found" in check.stdout
