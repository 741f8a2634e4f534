"""Prometheus metrics, collected at scrape time from Redis (no global registry)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector


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
        self.schedules = ScheduleCounters()  # schedules
        self.registry.register(self.schedules)  # schedules

    def render(
        self,
        stats: dict[str, Any],
        worker: dict[str, Any],
        healthy: bool,
        schedules: list[dict[str, Any]] | None = None,
    ) -> bytes:
        self.schedules.rows = schedules or []  # schedules
        for state, n in stats["states"].items():
            self.jobs.labels(state).set(n)
        for queue, q in stats["queues"].items():
            self.queue_depth.labels(queue).set(q["depth"])
            self.queue_running.labels(queue).set(q["running"])
        for outcome in ("completed", "failed", "retried"):
            self.worker_jobs.labels(outcome).set(worker.get(outcome, 0))
        self.up.set(1 if healthy else 0)
        return generate_latest(self.registry)


# -- schedules (begin) --
class ScheduleCounters(Collector):
    """Fires, misfires (skipped slots) and overlap skips per schedule, as the leader counted them in
    Redis and published in its status: counters, though this process only reports them."""

    FAMILIES = (
        ("fires", "fires", "Jobs a schedule enqueued"),
        ("misfires", "misfires", "Slots a schedule skipped (missed by more than its misfire grace)"),
        ("overlap_skips", "overlap_skips", "Slots skipped because the previous run was still queued or running"),
        ("errors", "errors", "Slots whose job was refused (unknown plugin, bad params, disabled plugin)"),
    )

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def collect(self) -> Iterator[Metric]:
        for name, key, text in self.FAMILIES:
            family = CounterMetricFamily(f"orchestrator_schedule_{name}", text, labels=["schedule"])
            for row in self.rows:
                family.add_metric([str(row["id"])], float(row.get(key) or 0))
            yield family


# -- schedules (end) --
