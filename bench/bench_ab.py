"""Two checkouts of the orchestrator side by side: pooled round trip and throughput, interleaved.

    .venv/bin/python bench/bench_ab.py --base /path/to/old/checkout [--new .] [--rounds 6] [--output FILE]

For a change that must not move the figures (a refactor): each side runs its own `orchestrator run`
on its own redis-server, both up for the whole run, and every round measures both sides back to back
(the order alternating), so machine noise hits both alike. Each checkout needs its own `.venv` (with
the project installed editable) and uses its own bench/orchestrator_bench.py as the load generator.
The summary is the paired difference per round (new - base round trip p50, new / base jobs/s and
CPU per job of the load generator, Redis, the `run` tree and all three): their medians and
quartiles, which a noisy machine moves far less than single runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import free_port

ROOT = Path(__file__).resolve().parent.parent
# what a throughput round keeps of the load generator's result (bench/benchlib.py)
_THROUGHPUT_FIGURES = (
    "jobs_per_s", "loadgen_cpu_ms_per_job", "redis_cpu_ms_per_job", "worker_cpu_ms_per_job", "all_cpu_ms_per_job",
)  # fmt: skip


class Side:
    """One checkout: its redis-server and its `orchestrator run`, started and stopped here."""

    def __init__(self, name: str, root: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.root = name, root
        self.env = env or {}  # added to both the `run` and the load generator (bench/bench_tracing.py)
        self.work = Path(tempfile.mkdtemp(prefix=f"bench-ab-{name}-"))
        self.redis_port, self.http_port = free_port(), free_port()
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        redis = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", ""]
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.procs.append(subprocess.Popen([*redis, "--appendonly", "no", "--dir", str(self.work)], **quiet))
        self.load("make-plugins", str(self.work / "plugins"))
        env = {
            **os.environ,
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "PLUGINS_DIR": str(self.work / "plugins"),
            "ORCH_STATE_DIR": str(self.work / "state"),
            "PLUGIN_VENV_DIR": str(self.work / "venvs"),
            "ORCH_HTTP_PORT": str(self.http_port),
            "ORCH_QUEUES": json.dumps({"default": {"concurrency": 10}}),  # as bench/run's orchestrator
            **self.env,
        }
        log = (self.work / "run.log").open("wb")
        run = [str(self.root / ".venv/bin/orchestrator"), "run"]
        self.procs.append(subprocess.Popen(run, env=env, cwd=self.work, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/health", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.measure("ready", 10)

    def load(self, *args: str) -> str:
        cmd = [str(self.root / ".venv/bin/python"), str(self.root / "bench/orchestrator_bench.py"), *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, **self.env}).stdout

    def measure(self, mode: str, n: int) -> dict[str, Any]:
        # the CPU of redis-server and of the `run` tree (procs[0], procs[1]) is measured around the
        # timed section by the load generator, as bench/run does; its own CPU too
        pids = ["--redis-pid", str(self.procs[0].pid), "--worker-pid", str(self.procs[1].pid)]
        out = self.load(mode, "--variant", "pooled", "--redis-port", str(self.redis_port), "--n", str(n), *pids)
        line = next(x for x in reversed(out.splitlines()) if x.startswith("BENCH-RESULT "))
        result: dict[str, Any] = json.loads(line.removeprefix("BENCH-RESULT "))
        return result

    def script_cpu(self) -> dict[str, float]:
        """Redis's own CPU per script call (INFO commandstats: EVALSHA and EVAL), in microseconds."""
        cmd = ["redis-cli", "-p", str(self.redis_port), "INFO", "commandstats"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        stats = {}
        for line in out.splitlines():
            name, _, rest = line.partition(":")
            if name in {"cmdstat_evalsha", "cmdstat_eval"}:
                fields = dict(kv.split("=") for kv in rest.split(","))
                stats[name.removeprefix("cmdstat_")] = float(fields["usec_per_call"])
        return stats

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def quartiles(values: list[float]) -> list[float]:
    return [round(q, 3) for q in statistics.quantiles(values, n=4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the checkout to compare against")
    parser.add_argument("--new", type=Path, default=ROOT, help="the checkout under test (default: this one)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--latency-n", type=int, default=1500, help="sequential round trips per side and round")
    parser.add_argument("--throughput-n", type=int, default=3000, help="jobs per side and round")
    parser.add_argument("--output", type=Path, help="write the rounds and the summary as JSON")
    args = parser.parse_args()
    sides = [Side("base", args.base.resolve()), Side("new", args.new.resolve())]
    rounds: list[dict[str, dict[str, float]]] = []
    try:
        for side in sides:
            side.start()
        for i in range(args.rounds):
            order = sides if i % 2 == 0 else sides[::-1]
            row: dict[str, dict[str, float]] = {s.name: {} for s in sides}
            for side in order:
                row[side.name]["p50_ms"] = side.measure("latency", args.latency_n)["p50_ms"]
            for side in order:
                result = side.measure("throughput", args.throughput_n)
                row[side.name] |= {k: result[k] for k in _THROUGHPUT_FIGURES}
            rounds.append(row)
            print(i, json.dumps(row), flush=True)
        script_usec = {side.name: side.script_cpu() for side in sides}
    finally:
        for side in sides:
            side.stop()
    rt = [r["new"]["p50_ms"] - r["base"]["p50_ms"] for r in rounds]
    tp = [r["new"]["jobs_per_s"] / r["base"]["jobs_per_s"] for r in rounds]
    summary = {
        "round_trip_p50_ms": {s.name: statistics.median(r[s.name]["p50_ms"] for r in rounds) for s in sides},
        "jobs_per_s": {s.name: statistics.median(r[s.name]["jobs_per_s"] for r in rounds) for s in sides},
        "paired_round_trip_diff_ms": {"median": round(statistics.median(rt), 3), "quartiles": quartiles(rt)},
        "paired_throughput_ratio": {"median": round(statistics.median(tp), 3), "quartiles": quartiles(tp)},
        # CPU per job of each process (load generator, Redis, the `run` tree, all): medians, and the
        # paired new / base ratio per round
        "cpu_ms_per_job": {
            k: {s.name: round(statistics.median(r[s.name][k] for r in rounds), 3) for s in sides}
            for k in _THROUGHPUT_FIGURES[1:]
        },
        "paired_cpu_ratio": {
            k: {
                "median": round(statistics.median(r["new"][k] / r["base"][k] for r in rounds), 3),
                "quartiles": quartiles([r["new"][k] / r["base"][k] for r in rounds]),
            }
            for k in _THROUGHPUT_FIGURES[1:]
        },
        "redis_usec_per_script_call": script_usec,
    }
    print(json.dumps(summary, indent=2))
    if args.output:
        args.output.write_text(
            json.dumps({"base": str(args.base), "new": str(args.new), "rounds": rounds, **summary}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
