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
        # -- change capture (cdc/poller.py status) --
        self.cdc_delivered = Gauge(
            "orchestrator_cdc_delivered_total",
            "Jobs change capture enqueued, per rule",
            ["rule"],
            registry=self.registry,
        )
        self.cdc_lag = Gauge(
            "orchestrator_cdc_lag_seconds", "Age of the newest change delivered, per rule", ["rule"],
            registry=self.registry,
        )  # fmt: skip
        self.cdc_rule_error = Gauge(
            "orchestrator_cdc_rule_error", "1 when a rule reports an error", ["rule"], registry=self.registry
        )
        self.cdc_up = Gauge(
            "orchestrator_cdc_up", "1 when change capture runs and reaches its database", registry=self.registry
        )

    def observe_cdc(self, cdc: dict[str, Any] | None) -> None:
        """Change capture's status block (`{"enabled", "last_error", "rules": [...]}`) as gauges."""
        cdc = cdc or {}
        self.cdc_up.set(1 if cdc.get("enabled") and not cdc.get("last_error") else 0)
        for rule in cdc.get("rules", []):
            self.cdc_delivered.labels(rule["name"]).set(rule.get("delivered") or 0)
            self.cdc_lag.labels(rule["name"]).set(rule.get("lag_s") or 0)
            self.cdc_rule_error.labels(rule["name"]).set(1 if rule.get("last_error") else 0)

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
