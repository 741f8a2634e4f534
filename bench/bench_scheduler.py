"""The scheduler: fire accuracy and idle CPU.

    .venv/bin/python bench/bench_scheduler.py [--fires 300] [--schedules 1000] [--window 30] [--rounds 3]

Measures, against a private redis-server and real `orchestrator run` processes:
1. Idle CPU of the orchestrator process (utime+stime from /proc, over `--window` seconds after a
   settle pause) with no schedules, and with `--schedules` cron schedules defined that do not fire
   during the window (their slots are 12 h away). The two configurations take turns, `--rounds`
   times; medians are reported. redis-server's CPU over the same windows is reported too (the
   leader's status, which lists every schedule, is published to Redis every 2 s).
2. Fire accuracy: one `every = "1s"` schedule (overlap allowed, a no-op plugin, workers on), for
   `--fires` slots. "Enqueued" is when a subscriber of the queue's wake-up channel receives the
   job id (the enqueue script publishes it in the same atomic step as the job and the
   schedule's next-fire); the delay is that moment minus the slot time, on the same clock.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import benchlib
import redis
from procs import PROJECT_PY, ROOT, Procs, base_env, free_port, machine_facts, wait_http

NOOP = "def run(**kwargs):\n    return {'ok': 1}\n"


def write_plugin(plugins: Path) -> None:
    folder = plugins / "noop"
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(NOOP)
    manifest = {
        "name": "noop",
        "version": "1.0.0",
        "description": "bench",
        "author": "bench",
        "entry_point": "main.run",
    }
    (folder / "plugin.json").write_text(json.dumps(manifest))


def config_text(schedules: list[dict[str, Any]]) -> str:
    lines = []
    for s in schedules:
        lines.append("[[schedules]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in s.items()]
        lines.append("")
    return "\n".join(lines)


def idle_schedules(n: int) -> list[dict[str, Any]]:
    hour = (datetime.now(UTC).hour + 12) % 24  # never due during the window
    return [{"id": f"idle-{i:04d}", "plugin": "noop", "cron": f"{i % 60} {hour} * * *", "params": {}} for i in range(n)]


class Orchestrator:
    def __init__(self, procs: Procs, work: Path, redis_url: str, schedules: list[dict[str, Any]], name: str) -> None:
        self.procs = procs
        self.port = free_port()
        config = work / f"{name}.toml"
        config.write_text(config_text(schedules))
        env = {
            **base_env(),
            "REDIS_URL": redis_url,
            "PLUGINS_DIR": str(work / "plugins"),
            "ORCH_STATE_DIR": str(work / f"state-{name}"),
            "ORCH_HTTP_PORT": str(self.port),
            "ORCH_LOG_FORMAT": "json",
        }
        cmd = [str(PROJECT_PY), "-m", "orchestrator", "--config", str(config), "run"]
        self.proc = procs.start(cmd, env=env, cwd=work, log=work / f"{name}.log")
        if wait_http(f"http://127.0.0.1:{self.port}/live", 60) is None:
            sys.exit(f"orchestrator {name} did not start: see {work / f'{name}.log'}")

    def stop(self) -> None:
        self.procs.stop(self.proc)


def measure_idle(procs: Procs, work: Path, url: str, redis_pid: int, args: argparse.Namespace) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    samples: dict[int, list[tuple[float, float]]] = {0: [], args.schedules: []}
    for r in range(args.rounds):
        for n, rows in samples.items():
            client.flushall()
            orch = Orchestrator(procs, work, url, idle_schedules(n), f"idle-{n}-{r}")
            # settle: the leader takes the lease, syncs the config, the venv builder finishes
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and client.hlen("orch:schedules") < n:
                time.sleep(0.2)
            time.sleep(5)
            cpu0, rcpu0, t0 = benchlib.cpu_s(orch.proc.pid), benchlib.cpu_s(redis_pid), time.monotonic()
            time.sleep(args.window)
            cpu1, rcpu1, t1 = benchlib.cpu_s(orch.proc.pid), benchlib.cpu_s(redis_pid), time.monotonic()
            fired = len(list(client.scan_iter("orch:job:sched:*", count=1000)))
            orch.stop()
            if fired:
                sys.exit(f"{fired} job(s) fired during the idle window: the idle schedules are not idle")
            rows.append(((cpu1 - cpu0) / (t1 - t0) * 100, (rcpu1 - rcpu0) / (t1 - t0) * 100))
            print(f"idle round {r + 1}: {n} schedules: orchestrator {rows[-1][0]:.2f}% CPU, "
                  f"redis {rows[-1][1]:.2f}%", flush=True)  # fmt: skip
    return {
        str(n): {
            "orchestrator_cpu_pct_median": round(statistics.median(s[0] for s in rows), 3),
            "redis_cpu_pct_median": round(statistics.median(s[1] for s in rows), 3),
            "orchestrator_cpu_pct": [round(s[0], 3) for s in rows],
        }
        for n, rows in samples.items()
    }


def measure_accuracy(procs: Procs, work: Path, url: str, args: argparse.Namespace) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    client.flushall()
    arrivals: dict[str, float] = {}
    done = threading.Event()
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("orch:wake:default")

    def listen() -> None:
        while not done.is_set():
            message = pubsub.get_message(timeout=0.5)
            if message is not None:
                job_id = message["data"].decode()
                if job_id.startswith("sched:acc:"):
                    arrivals.setdefault(job_id, time.time())

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    schedule = {"id": "acc", "plugin": "noop", "every": "1s", "overlap": "allow", "params": {}}
    orch = Orchestrator(procs, work, url, [schedule], "accuracy")
    first = time.monotonic()
    while len(arrivals) < args.fires + 5 and time.monotonic() - first < args.fires * 2 + 60:
        time.sleep(1)
    orch.stop()
    done.set()
    listener.join()
    slots = sorted(arrivals)[5:]  # the first few fires come while the process is still starting up
    delays = []
    for job_id in slots:
        delays.append(arrivals[job_id] - _slot(job_id))
    history = [json.loads(h) for h in client.lrange("orch:schedule-history:acc", 0, -1)]
    skipped = sum(h.get("count", 0) for h in history if h["kind"] == "skipped")
    numbers = sorted(int(_slot(j)) for j in slots)
    gaps = sum(b - a - 1 for a, b in itertools.pairwise(numbers))
    return {
        "fires": len(delays),
        "p50_ms": round(statistics.median(delays) * 1000, 2),
        "p99_ms": round(benchlib.percentile(delays, 99) * 1000, 2),
        "max_ms": round(max(delays) * 1000, 2),
        "min_ms": round(min(delays) * 1000, 2),
        "skipped_slots": skipped,
        "missing_slots": gaps,
    }


def _slot(job_id: str) -> float:
    return datetime.strptime(job_id.rsplit(":", 1)[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fires", type=int, default=300)
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the finally below stops Redis and the orchestrators
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    procs = Procs()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sched-") as tmp:
            work = Path(tmp)
            write_plugin(work / "plugins")
            port = free_port()
            server = procs.start(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(work)],
                env=base_env(), cwd=work, log=work / "redis.log",
            )  # fmt: skip
            url = f"redis://127.0.0.1:{port}/0"
            client = redis.Redis.from_url(url)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            result: dict[str, Any] = {"machine": machine_facts(), "args": vars(args), "root": str(ROOT)}
            if not args.skip_idle:
                result["idle"] = measure_idle(procs, work, url, server.pid, args)
            if not args.skip_accuracy:
                result["accuracy"] = measure_accuracy(procs, work, url, args)
            print(json.dumps(result, indent=2))
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
