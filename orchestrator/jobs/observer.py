"""What the workers did, for operators: one log line per job start and end, and the counters and
histograms `/metrics` exports. Plain Python on the job path: prometheus-client is loaded only by a
scrape (monitor/metrics.py reads these)."""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from dataclasses import dataclass, field

from orchestrator.jobs.model import JobRecord, now

logger = logging.getLogger("orchestrator.jobs")

# Seconds: from a no-op pooled job (ms) to the seeds' 30-minute hard limit.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800)
LAUNCH_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600)


@dataclass
class Histogram:
    """Cumulative-on-read buckets, as Prometheus wants them."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return out


class JobObserver:
    """Counts and logs job starts and ends.

    Args:
        log_jobs: one INFO line per start and end (`ORCH_LOG_JOBS=false` turns them off for very high
            rates); failures and retries are logged either way, at WARNING.
    """

    def __init__(self, *, log_jobs: bool = True) -> None:
        self.log_jobs = log_jobs
        self.started: Counter[tuple[str, str]] = Counter()  # (plugin, queue)
        self.finished: Counter[tuple[str, str, str]] = Counter()  # (plugin, queue, outcome)
        self.durations: dict[str, Histogram] = {}  # plugin
        self.waits: dict[str, Histogram] = {}  # queue: enqueued (or due) -> started
        self.launches: dict[str, Histogram] = {}  # isolation mode: run start -> the child has its request

    def launched(self, isolation: str, launch_s: float) -> None:
        self.launches.setdefault(isolation, Histogram(LAUNCH_BUCKETS)).observe(launch_s)

    def job_started(self, record: JobRecord) -> None:
        self.started[(record.plugin, record.queue)] += 1
        ready_at = max(record.enqueued_at or 0.0, record.defer_until or 0.0)
        if ready_at and record.started_at:
            self.waits.setdefault(record.queue, Histogram(WAIT_BUCKETS)).observe(max(record.started_at - ready_at, 0.0))
        if self.log_jobs:
            logger.info(
                "start %-32s %s@%s attempt %d",
                record.job_id, record.plugin, record.queue, record.attempt,
                extra=_fields(record, "start"),
            )  # fmt: skip

    def job_ended(self, record: JobRecord, outcome: str, *, error: str | None = None, delay_s: float = 0.0) -> None:
        """`outcome`: succeeded, failed, retried, cancelled, interrupted (put back at shutdown) or abandoned."""
        self.finished[(record.plugin, record.queue, outcome)] += 1
        duration = now() - record.started_at if record.started_at else 0.0
        if outcome in {"succeeded", "failed", "retried"}:
            self.durations.setdefault(record.plugin, Histogram(DURATION_BUCKETS)).observe(duration)
        head = (error or "").strip().splitlines()[0][:160] if error else ""
        level = logging.WARNING if outcome in {"failed", "retried", "abandoned"} else logging.INFO
        if not self.log_jobs and level == logging.INFO:
            return
        retry = f" retry in {delay_s:.1f}s" if outcome == "retried" else ""
        logger.log(
            level,
            "end   %-32s %s@%s attempt %d %s %.3fs%s%s",
            record.job_id, record.plugin, record.queue, record.attempt, outcome, duration, retry,
            f": {head}" if head else "",
            extra={**_fields(record, "end"), "outcome": outcome, "duration_s": round(duration, 6), "error": head or None},
        )  # fmt: skip


def _fields(record: JobRecord, event: str) -> dict[str, object]:
    return {"event": f"job.{event}", "job_id": record.job_id, "plugin": record.plugin, "queue": record.queue,
            "attempt": record.attempt}  # fmt: skip
