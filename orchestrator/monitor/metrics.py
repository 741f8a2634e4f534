"""Prometheus metrics, collected at scrape time from Redis (no global registry)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest


class Metrics:
    """A private registry per process, so tests and several apps never share state."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Gauge("orchestrator_jobs", "Jobs by state (kept records)", ["state"], registry=self.registry)
        self.queue_depth = Gauge(
            "orchestrator_queue_depth", "Jobs waiting per queue", ["queue"], registry=self.registry
        )
        self.queue_running = Gauge(
            "orchestrator_queue_running", "Jobs running per queue", ["queue"], registry=self.registry
        )
        self.worker_jobs = Gauge(
            "orchestrator_worker_jobs_total", "Jobs this process finished", ["outcome"], registry=self.registry
        )
        self.up = Gauge("orchestrator_up", "1 when every component is healthy", registry=self.registry)

    def render(self, stats: dict[str, Any], worker: dict[str, Any], healthy: bool) -> bytes:
        for state, n in stats["states"].items():
            self.jobs.labels(state).set(n)
        for queue, q in stats["queues"].items():
            self.queue_depth.labels(queue).set(q["depth"])
            self.queue_running.labels(queue).set(q["running"])
        for outcome in ("completed", "failed", "retried"):
            self.worker_jobs.labels(outcome).set(worker.get(outcome, 0))
        self.up.set(1 if healthy else 0)
        return generate_latest(self.registry)
