"""Tracing on against off: pooled round trip and throughput, the two sides interleaved (bench_ab's method).

    .venv/bin/python bench/bench_tracing.py [--rounds 4] [--sampler always_on] [--sampler-arg X] [--output FILE]

Both sides are this checkout, each with its own redis-server and `orchestrator run`. "on" has the
OTEL_* variables set (always_on sampler, the SDK's batch processor, OTLP/HTTP to a local receiver
that decodes every request and counts the spans; `--sampler` sets OTEL_TRACES_SAMPLER), for the `run` and for the load generator (so each
job makes a trigger, a job and a plugin span); "off" has none. Every round measures both sides back
to back, the order alternating; the summary is the paired difference per round. Jobs/s on a shared
machine swing with the neighbours' load, so each throughput measure also records CPU seconds per job
of the `run` process (/proc) and of the load generator (getrusage of the finished child): the cost
tracing adds, in microseconds per job, is far steadier than the rate.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ab import ROOT, Side, quartiles
from procs import free_port

# The receiver, run by the project's interpreter: counts spans, answers as a collector would.
_RECEIVER = """
import sys
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest as Req
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse as Resp
seen = {"spans": 0, "posts": 0}
async def traces(request):
    message = Req()
    message.ParseFromString(await request.read())
    seen["posts"] += 1
    seen["spans"] += sum(len(s.spans) for r in message.resource_spans for s in r.scope_spans)
    return web.Response(body=Resp().SerializeToString(), content_type="application/x-protobuf")
async def count(request):
    return web.json_response(seen)
app = web.Application()
app.router.add_post("/v1/traces", traces)
app.router.add_get("/count", count)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def cpu_s(pid: int) -> float:
    """utime + stime of a live process, in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(side: Side, n: int) -> dict[str, float]:
    """jobs/s, and CPU microseconds per job of the worker (`run`) and of the caller (the load generator)."""
    run_pid = side.procs[-1].pid
    worker0, caller0 = cpu_s(run_pid), resource.getrusage(resource.RUSAGE_CHILDREN)
    jobs_per_s = side.measure("throughput", n)["jobs_per_s"]
    caller1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    caller = caller1.ru_utime + caller1.ru_stime - caller0.ru_utime - caller0.ru_stime
    return {
        "jobs_per_s": jobs_per_s,
        "worker_cpu_us_per_job": round((cpu_s(run_pid) - worker0) / n * 1e6, 1),
        "caller_cpu_us_per_job": round(caller / n * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--latency-n", type=int, default=500, help="sequential round trips per side and round")
    parser.add_argument("--throughput-n", type=int, default=2000, help="jobs per side and round")
    parser.add_argument("--sampler", default="always_on", help="OTEL_TRACES_SAMPLER of the `on` side")
    parser.add_argument("--sampler-arg", help="OTEL_TRACES_SAMPLER_ARG (e.g. 0.1 for parentbased_traceidratio)")
    parser.add_argument("--output", type=Path, help="write the rounds and the summary as JSON")
    args = parser.parse_args()
    port = free_port()
    receiver = subprocess.Popen([str(ROOT / ".venv/bin/python"), "-c", _RECEIVER, str(port)])
    on_env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_TRACES_SAMPLER": args.sampler,
        "OTEL_SERVICE_NAME": "bench",
        **({"OTEL_TRACES_SAMPLER_ARG": args.sampler_arg} if args.sampler_arg else {}),
    }
    sides = [Side("off", ROOT), Side("on", ROOT, on_env)]
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
                row[side.name].update(throughput(side, args.throughput_n))
            rounds.append(row)
            print(i, json.dumps(row), flush=True)
        time.sleep(6)  # the batch processors' last exports (5 s schedule delay by default)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5) as response:
            received: dict[str, Any] = json.loads(response.read())
    finally:
        for side in sides:
            side.stop()
        receiver.terminate()
        receiver.wait(10)
    rt = [r["on"]["p50_ms"] - r["off"]["p50_ms"] for r in rounds]
    tp = [r["on"]["jobs_per_s"] / r["off"]["jobs_per_s"] for r in rounds]
    cpu = {
        f"{who}_cpu_us_per_job": {
            s.name: statistics.median(r[s.name][f"{who}_cpu_us_per_job"] for r in rounds) for s in sides
        }
        for who in ("worker", "caller")
    }
    summary = {
        **cpu,
        "round_trip_p50_ms": {s.name: statistics.median(r[s.name]["p50_ms"] for r in rounds) for s in sides},
        "jobs_per_s": {s.name: statistics.median(r[s.name]["jobs_per_s"] for r in rounds) for s in sides},
        "paired_round_trip_diff_ms": {"median": round(statistics.median(rt), 3), "quartiles": quartiles(rt)},
        "paired_throughput_ratio": {"median": round(statistics.median(tp), 3), "quartiles": quartiles(tp)},
        "receiver": received,
    }
    print(json.dumps(summary, indent=2))
    if args.output:
        sampler = {"sampler": args.sampler, "sampler_arg": args.sampler_arg}
        args.output.write_text(json.dumps({**sampler, "rounds": rounds, **summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
