"""What is measured and how hard: the run parameters and each system's worker and load generator."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from procs import BENCH, PEERS, PROJECT_PY, ROOT

ORCH_CONCURRENCY = 10


@dataclass
class Params:
    quick: bool
    reps: int
    jobs: int
    deadline_s: float
    latency_n: int
    latency_polled_n: int
    monitor_n: int
    idle_window_s: float
    settle_s: float
    startups_per_rep: int
    spawn_n: int
    spawn_seq: int
    launcher_runs: int
    profile_s: float


def params_for(quick: bool, reps: int | None) -> Params:
    if quick:
        return Params(True, reps or 1, 2000, 8.0, 30, 3, 10, 3.0, 1.0, 3, 200, 50, 30, 3.0)
    return Params(False, reps or 3, 10_000, 20.0, 200, 10, 50, 10.0, 2.0, 2, 500, 200, 100, 8.0)


@dataclass
class System:
    name: str
    worker: list[str]
    loadgen: list[str]
    env: dict[str, str] = field(default_factory=dict)
    throughput: list[str] = field(default_factory=lambda: ["default"])
    latency: list[str] = field(default_factory=lambda: ["default"])
    polled: set[str] = field(default_factory=set)  # latency variants that poll (fewer jobs)
    beat: list[str] | None = None  # started only for the footprint measurement
    label: str = ""


def systems(work: Path) -> list[System]:
    peers = BENCH / "peers"
    cel, saq, arq = PEERS / "celery/bin", PEERS / "saq/bin", PEERS / "arq/bin"
    celery_worker = [str(cel / "celery"), "-A", "celery_bench", "worker", "--loglevel", "WARNING"]
    beat = [
        str(cel / "celery"),
        "-A",
        "celery_bench",
        "beat",
        "--loglevel",
        "WARNING",
        "--schedule",
        str(work / "celerybeat-schedule"),
    ]
    return [
        System(
            "orchestrator",
            [str(ROOT / ".venv/bin/orchestrator"), "run"],
            [str(PROJECT_PY), str(BENCH / "orchestrator_bench.py")],
            throughput=["process", "pooled"],
            latency=["process", "pooled"],
            label=f"orchestrator run, queue concurrency {ORCH_CONCURRENCY}",
        ),
        System(
            "celery-solo",
            [*celery_worker, "--pool", "solo", "--concurrency", "1"],
            [str(cel / "python"), str(peers / "celery_bench.py")],
            beat=beat,
            label="Celery solo",
        ),
        System(
            "celery-prefork",
            [*celery_worker, "--pool", "prefork", "--concurrency", "2"],
            [str(cel / "python"), str(peers / "celery_bench.py")],
            beat=beat,
            label="Celery prefork, 2 children",
        ),
        System(
            "celery-threads",
            [*celery_worker, "--pool", "threads", "--concurrency", "10"],
            [str(cel / "python"), str(peers / "celery_bench.py")],
            beat=beat,
            label="Celery threads, 10",
        ),
        System(
            "saq",
            [str(saq / "saq"), "saq_bench.settings"],
            [str(saq / "python"), str(peers / "saq_bench.py")],
            throughput=["pubsub"],
            latency=["pubsub", "apply"],
            polled={"apply"},
            label="SAQ, concurrency 10",
        ),
        System(
            "arq-default",
            [str(arq / "arq"), "arq_bench.WorkerSettings"],
            [str(arq / "python"), str(peers / "arq_bench.py")],
            env={"BENCH_ARQ_POLL_DELAY": "0.5"},
            polled={"default"},
            label="arq defaults: poll 0.5 s, max_jobs 10",
        ),
        System(
            "arq-tuned",
            [str(arq / "arq"), "arq_bench.WorkerSettings"],
            [str(arq / "python"), str(peers / "arq_bench.py")],
            env={"BENCH_ARQ_POLL_DELAY": "0.01"},
            throughput=["tuned"],
            latency=["tuned"],
            label="arq poll_delay 0.01, max_jobs 10",
        ),
    ]


# -- processes ------------------------------------------------------------------------------------
