"""Prometheus metrics: the process's job counters and histograms, loop lag and Redis round trip,
plus what Redis says about every job and queue, collected at scrape time (no global registry).

prometheus-client is imported by the first scrape, never by a process nobody scrapes. Names follow
Prometheus conventions (`_total` counters, `_seconds`, base units); `promtool check metrics`
passes on a live scrape (tests/monitor/test_metrics.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from orchestrator.cdc.status import CdcStatus
from orchestrator.cluster.status import InstanceEntry
from orchestrator.index.status import ElasticsearchStatus, IndexStatus
from orchestrator.jobs.model import Keys
from orchestrator.jobs.observer import Histogram, JobObserver
from orchestrator.jobs.throttle import PluginThrottle
from orchestrator.monitor.loop import LoopMonitor
from orchestrator.monitor.status import ProcessStatus
from orchestrator.schedules.status import ScheduleRow

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric


class Metrics:
    """One per process.

    Args:
        redis: for the round-trip gauge.
        observer: the workers' job counters (None for `--role leader`: no workers).
        loop: the loop-lag probe.
    """

    def __init__(self, redis: Redis, observer: JobObserver | None, loop: LoopMonitor | None) -> None:
        self.redis = redis
        self.observer = observer
        self.loop = loop

    async def render(
        self,
        stats: dict[str, Any],
        status: ProcessStatus,
        instances: dict[str, InstanceEntry],
        *,
        healthy: bool,
        throttles: Mapping[str, PluginThrottle] | None = None,
    ) -> bytes:
        """`stats`: Client.stats(); `status`: the components' (as in /status); `instances`: Client.instances();
        `throttles`: Client.throttles()."""
        from prometheus_client import CollectorRegistry, generate_latest

        rtt = await self._redis_rtt()
        families = list(self._families(stats, status, instances, healthy, rtt))
        families += _throttle_families(throttles or {})
        families.append(await self._workflow_ends())

        class _Snapshot:
            def collect(self) -> Iterable[Metric]:
                return families

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot())
        return generate_latest(registry)

    async def _workflow_ends(self) -> Metric:
        """Workflow ends by outcome, across the cluster (counted in Redis by the script that ends one;
        a resumed workflow ends again)."""
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            "orchestrator_workflows_ended", "Workflows that ended, by outcome (all instances)", labels=["outcome"]
        )
        raw: dict[bytes, bytes] = await self.redis.hgetall(Keys.workflow_outcomes)  # type: ignore[misc]
        counts = {k.decode(): int(v) for k, v in raw.items()}
        for outcome in ("succeeded", "failed", "cancelled"):
            family.add_metric([outcome], counts.get(outcome, 0))
        return family

    async def _redis_rtt(self) -> float | None:
        started = time.perf_counter()
        try:
            await self.redis.ping()
        except (RedisError, OSError):
            return None
        return time.perf_counter() - started

    def _families(
        self,
        stats: dict[str, Any],
        status: ProcessStatus,
        instances: dict[str, InstanceEntry],
        healthy: bool,
        rtt: float | None,
    ) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        jobs = GaugeMetricFamily("orchestrator_jobs", "Jobs by state (records kept in Redis)", labels=["state"])
        for state, n in stats["states"].items():
            jobs.add_metric([state], n)
        yield jobs
        for name, key, help_text in (
            ("orchestrator_queue_depth", "depth", "Jobs waiting per queue"),
            ("orchestrator_queue_running", "running", "Jobs running per queue (all instances)"),
            ("orchestrator_queue_concurrency", "concurrency", "Configured concurrency per queue"),
        ):
            family = GaugeMetricFamily(name, help_text, labels=["queue"])
            for queue, q in stats["queues"].items():
                family.add_metric([queue], q[key])
            yield family

        if self.observer is not None:
            started = CounterMetricFamily(
                "orchestrator_jobs_started", "Job attempts this process started", labels=["plugin", "queue"]
            )
            for (plugin, queue), n in sorted(self.observer.started.items()):
                started.add_metric([plugin, queue], n)
            yield started
            finished = CounterMetricFamily(
                "orchestrator_jobs_finished",
                "Job attempts this process ended, by outcome (succeeded, failed, retried, cancelled, interrupted, "
                "abandoned)",
                labels=["plugin", "queue", "outcome"],
            )
            for (plugin, queue, outcome), n in sorted(self.observer.finished.items()):
                finished.add_metric([plugin, queue, outcome], n)
            yield finished
            yield _histogram(
                HistogramMetricFamily(
                    "orchestrator_job_duration_seconds", "Job attempt run time per plugin", labels=["plugin"]
                ),
                self.observer.durations.items(),
            )
            yield _histogram(
                HistogramMetricFamily(
                    "orchestrator_job_wait_seconds",
                    "Time from enqueued (or due) to started, per queue",
                    labels=["queue"],
                ),
                self.observer.waits.items(),
            )
            yield _histogram(
                HistogramMetricFamily(
                    "orchestrator_plugin_launch_seconds",
                    "From a run's start until its child had the request, per isolation mode",
                    labels=["isolation"],
                ),
                self.observer.launches.items(),
            )

        if self.loop is not None:
            yield GaugeMetricFamily(
                "orchestrator_loop_lag_current_seconds", "Event-loop lag at the last probe", value=self.loop.current_s
            )
            yield _histogram(
                HistogramMetricFamily("orchestrator_loop_lag_seconds", "Event-loop lag per probe", labels=[]),
                [((), self.loop.histogram)],
            )
        if rtt is not None:
            yield GaugeMetricFamily("orchestrator_redis_rtt_seconds", "Redis PING round trip at scrape time", value=rtt)
        yield GaugeMetricFamily(
            "orchestrator_instances",
            "Instances alive (heartbeat present)",
            value=sum(1 for i in instances.values() if i["alive"]),
        )
        leader = status.get("leader")
        yield GaugeMetricFamily(
            "orchestrator_is_leader",
            "1 when this instance holds the leader lease",
            value=1 if leader is not None and leader["is_leader"] else 0,
        )
        components = GaugeMetricFamily("orchestrator_component_up", "1 while a component runs", labels=["component"])
        for name, c in status["components"].items():
            components.add_metric([name], 1 if c["state"] in {"running", "standby"} else 0)
        yield components
        yield GaugeMetricFamily("orchestrator_up", "1 when every component is healthy", value=1 if healthy else 0)
        yield from _schedule_families(status.get("schedules", []))
        yield from _cdc_families(status.get("cdc"))
        yield from _index_families(status.get("index"), status.get("elasticsearch"))


def _throttle_families(throttles: Mapping[str, PluginThrottle]) -> Iterator[Metric]:
    """Each throttle's use, cluster-wide (the counts live in Redis: every instance reports the same)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    running = GaugeMetricFamily(
        "orchestrator_throttle_running", "Jobs running under a plugin's throttle, per key", labels=["plugin", "key"]
    )
    held = GaugeMetricFamily(
        "orchestrator_throttle_held_jobs", "Jobs a plugin's throttle holds back now, per key", labels=["plugin", "key"]
    )
    limit = GaugeMetricFamily(
        "orchestrator_throttle_limit",
        "A plugin's throttle limits (per key when it has one)",
        labels=["plugin", "limit"],
    )
    counters = {
        name: CounterMetricFamily(f"orchestrator_throttle_{name}", help_text, labels=["plugin"])
        for name, help_text in (
            ("held", "Times a job was held back by its plugin's throttle"),
            ("refused", "Jobs refused by a plugin's max_queued"),
            ("over_cap", "Jobs schedules or change capture enqueued past a plugin's max_queued"),
        )
    }
    for plugin, entry in throttles.items():
        for key in entry["keys"]:
            running.add_metric([plugin, key["key"]], key["running"])
            held.add_metric([plugin, key["key"]], key["held"])
        for name in ("concurrency", "max_queued"):
            if isinstance(value := entry["limits"].get(name), int):
                limit.add_metric([plugin, name], value)
        counters["held"].add_metric([plugin], entry["throttled"])
        counters["refused"].add_metric([plugin], entry["refused"])
        counters["over_cap"].add_metric([plugin], entry["over_cap"])
    yield from (running, held, limit, *counters.values())


_SCHEDULE_COUNTERS: tuple[tuple[Literal["fires", "misfires", "overlap_skips", "errors"], str], ...] = (
    ("fires", "Jobs a schedule enqueued"),
    ("misfires", "Slots a schedule skipped: missed by more than its misfire grace"),
    ("overlap_skips", "Slots skipped because the schedule's previous run was still queued or running"),
    ("errors", "Slots whose job was refused (unknown plugin, bad params, disabled plugin)"),
)


def _schedule_families(rows: list[ScheduleRow]) -> Iterator[Metric]:
    """Per schedule, as the leader counted them in Redis and published in its status."""
    from prometheus_client.core import CounterMetricFamily

    for key, help_text in _SCHEDULE_COUNTERS:
        family = CounterMetricFamily(f"orchestrator_schedule_{key}", help_text, labels=["schedule"])
        for row in rows:
            family.add_metric([row["id"]], float(row[key]))
        yield family


def _histogram(family: Any, items: Iterable[tuple[Any, Histogram]]) -> Any:
    for label, h in items:
        labels = list(label) if isinstance(label, tuple) else [label]
        family.add_metric(labels, h.cumulative(), h.total)
    return family


def _cdc_families(cdc: CdcStatus | None) -> Iterator[Metric]:
    """Change capture (cdc/poller.py), from its status block as the leader published it."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    up = 1 if cdc is not None and cdc["enabled"] and not cdc["last_error"] else 0
    yield GaugeMetricFamily("orchestrator_cdc_up", "1 when change capture runs and reaches its database", value=up)
    rules = cdc["rules"] if cdc is not None else []
    delivered = CounterMetricFamily(
        "orchestrator_cdc_delivered", "Jobs change capture enqueued, per rule", labels=["rule"]
    )
    lag = GaugeMetricFamily(
        "orchestrator_cdc_lag_seconds", "Age of the newest change delivered, per rule", labels=["rule"]
    )
    errors = GaugeMetricFamily("orchestrator_cdc_rule_error", "1 when a rule reports an error", labels=["rule"])
    for rule in rules:
        delivered.add_metric([rule["name"]], rule["delivered"])
        lag.add_metric([rule["name"]], rule["lag_s"] or 0)
        errors.add_metric([rule["name"]], 1 if rule["last_error"] else 0)
    yield from (delivered, lag, errors)
    binlog = cdc.get("binlog") if cdc is not None and cdc["enabled"] else None
    if binlog is not None:
        yield GaugeMetricFamily(
            "orchestrator_cdc_binlog_purged",
            "1 when binlog capture's stored position was purged from the server (`cdc snapshot` is the way back)",
            value=1 if binlog["purged"] else 0,
        )


def _index_families(index: IndexStatus | None, es: ElasticsearchStatus | None) -> Iterator[Metric]:
    """The index sink (index/sink.py) and the ES probe, from their status blocks; nothing without ES."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    if es is not None:
        yield GaugeMetricFamily("orchestrator_es_up", "1 when Elasticsearch answers", value=1 if es["up"] else 0)
    if index is None:
        return
    yield CounterMetricFamily(
        "orchestrator_index_documents_indexed", "Documents the index sink had accepted (upserts and deletes)",
        value=index["indexed"],
    )  # fmt: skip
    yield CounterMetricFamily(
        "orchestrator_index_documents_failed", "Documents Elasticsearch refused (recorded as failed jobs)",
        value=index["failed"],
    )  # fmt: skip
    yield GaugeMetricFamily(
        "orchestrator_index_backlog",
        "Index actions waiting in Redis for Elasticsearch",
        value=index["backlog"],
    )
