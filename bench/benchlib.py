"""Shared by the harness and every load generator: stdlib only, so each peer's venv can import it.

- /proc readers: CPU time and RSS/PSS of a process tree (live descendants plus reaped children).
- A tiny RESP client for INFO snapshots (no dependency on the system's own Redis library).
- Percentiles and the JSON line every load generator prints last.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import time
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- /proc ----------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode(errors="replace")
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'
    return raw[raw.rindex(")") + 2 :].split()


def children_of() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if fields is None:
            continue
        kids.setdefault(int(fields[1]), []).append(int(name))
    return kids


def tree(pid: int) -> list[int]:
    """pid and every live descendant."""
    kids = children_of()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if _stat_fields(p) is None:
            continue
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_s(pid: int, *, reaped: bool = True) -> float:
    """utime+stime of one process, plus (reaped=True) the CPU of the children it has waited for."""
    f = _stat_fields(pid)
    if f is None:
        return 0.0
    # after ')': state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    ticks = int(f[11]) + int(f[12])
    if reaped:
        ticks += int(f[13]) + int(f[14])
    return ticks / CLK_TCK


def tree_cpu_s(pid: int) -> float:
    return sum(cpu_s(p) for p in tree(pid))


def _proc_kb(path: str, field: str) -> int:
    """The kB figure of the line starting `field` in a /proc file; 0 when the process is gone."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kb(pid: int) -> int:
    return _proc_kb(f"/proc/{pid}/status", "VmRSS:")


def pss_kb(pid: int) -> int:
    return _proc_kb(f"/proc/{pid}/smaps_rollup", "Pss:")


def tree_memory(pid: int) -> dict[str, Any]:
    pids = tree(pid)
    return {
        "rss_mb": round(sum(rss_kb(p) for p in pids) / 1024, 1),
        "pss_mb": round(sum(pss_kb(p) for p in pids) / 1024, 1),
        "processes": len(pids),
        "per_process_rss_mb": {str(p): round(rss_kb(p) / 1024, 1) for p in pids},
    }


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


# -- Redis INFO over a raw socket -----------------------------------------------------------------


class Resp:
    """Just enough RESP2 for INFO / FLUSHALL / PING against the bench Redis (loopback only)."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def _reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode(errors="replace")
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected reply {line[:40]!r}")

    def call(self, *args: str) -> Any:
        out = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))
        return self._reply()


def parse_info(text: str) -> dict[str, str]:
    info = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            info[k] = v
    return info


def redis_counters(host: str, port: int) -> dict[str, int]:
    """Per-command call counts (commands run inside Lua included) and socket reads (~round trips)."""
    r = Resp(host, port)
    try:
        info = parse_info(r.call("INFO", "all"))
    finally:
        r.close()
    out = {
        "total_reads_processed": int(info.get("total_reads_processed", 0)),
        "total_commands_processed": int(info.get("total_commands_processed", 0)),
    }
    for k, v in info.items():
        if k.startswith("cmdstat_"):
            calls = v.split(",", 1)[0].split("=", 1)[1]
            out[k[len("cmdstat_") :]] = int(calls)
    return out


def counters_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after) if after.get(k, 0) != before.get(k, 0)
    }


# -- numbers and output ---------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def latency_summary(samples_s: list[float]) -> dict[str, Any]:
    ms = [x * 1000 for x in samples_s]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "min_ms": round(min(ms), 3) if ms else None,
        "max_ms": round(max(ms), 3) if ms else None,
        "mean_ms": round(sum(ms) / len(ms), 3) if ms else None,
    }


def emit(result: dict[str, Any]) -> None:
    """The last stdout line of every load generator: one JSON object."""
    sys.stdout.write("BENCH-RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


def loadgen_args(variants: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["ready", "throughput", "latency"])
    p.add_argument("--variant", choices=variants, default=variants[0])
    p.add_argument("--redis-host", default="127.0.0.1")
    p.add_argument("--redis-port", type=int, required=True)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--deadline-s", type=float, default=60.0)
    p.add_argument("--worker-pid", type=int, default=0)
    p.add_argument("--redis-pid", type=int, default=0)
    p.add_argument("--count-commands", action="store_true", help="INFO snapshots around the timed loop")
    p.add_argument("--concurrency", type=int, default=50, help="enqueue calls in flight (async clients)")
    return p.parse_args()


class Meter:
    """Wall clock plus CPU around a timed section: the worker tree (and its root process alone),
    redis-server, and this load generator itself (so a run can say what every process spent per job)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.wall0 = time.time()
        self.wcpu0 = tree_cpu_s(self.args.worker_pid) if self.args.worker_pid else 0.0
        self.mcpu0 = cpu_s(self.args.worker_pid, reaped=False) if self.args.worker_pid else 0.0
        self.lcpu0 = time.process_time()
        self.rcpu0 = cpu_s(self.args.redis_pid) if self.args.redis_pid else 0.0
        self.cmd0 = redis_counters(self.args.redis_host, self.args.redis_port) if self.args.count_commands else None

    def stop(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.t0
        wall1 = time.time()
        out: dict[str, Any] = {
            "elapsed_s": round(elapsed, 4),
            "window": [self.wall0, wall1],
            "loadgen_cpu_s": round(time.process_time() - self.lcpu0, 3),
        }
        if self.args.worker_pid:
            out["worker_cpu_s"] = round(tree_cpu_s(self.args.worker_pid) - self.wcpu0, 3)
            out["worker_main_cpu_s"] = round(cpu_s(self.args.worker_pid, reaped=False) - self.mcpu0, 3)
        if self.args.redis_pid:
            out["redis_cpu_s"] = round(cpu_s(self.args.redis_pid) - self.rcpu0, 3)
        if self.cmd0 is not None:
            delta = counters_delta(self.cmd0, redis_counters(self.args.redis_host, self.args.redis_port))
            delta.pop("info", None)  # our own snapshot
            delta["total_commands_processed"] = delta.get("total_commands_processed", 0) - 1
            delta["total_reads_processed"] = delta.get("total_reads_processed", 0) - 1
            out["redis_delta"] = delta
        return out


class KeyProgress:
    """Counts finished jobs from per-job result keys, assuming jobs finish roughly in order.

    Only a window of 200 keys is checked per poll (one EXISTS), so the check costs Redis little.
    """

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.ptr = 0

    def done_sync(self, exists: Any) -> int:
        while self.ptr < len(self.keys):
            chunk = self.keys[self.ptr : self.ptr + 200]
            n = exists(*chunk)
            if n < len(chunk):
                return self.ptr + n
            self.ptr += len(chunk)
        return self.ptr

    async def done_async(self, exists: Any) -> int:
        while self.ptr < len(self.keys):
            chunk = self.keys[self.ptr : self.ptr + 200]
            n = await exists(*chunk)
            if n < len(chunk):
                return self.ptr + n
            self.ptr += len(chunk)
        return self.ptr


POLL_S = 0.02  # how often a load generator checks for completion during a throughput run


async def throughput_async(args: argparse.Namespace, enqueue_one: Any, done_count: Any) -> dict[str, Any]:
    """Enqueue args.n jobs (args.concurrency calls in flight), then wait until all are done or the deadline.

    The clock runs from the first enqueue to the poll that sees the last job done.
    """
    import asyncio

    meter = Meter(args)
    meter.start()
    n, conc = args.n, max(1, args.concurrency)
    for start in range(0, n, conc):
        await asyncio.gather(*(enqueue_one() for _ in range(min(conc, n - start))))
    enqueue_s = time.perf_counter() - meter.t0
    done = 0
    while True:
        done = await done_count()
        if done >= n or time.perf_counter() - meter.t0 > args.deadline_s:
            break
        await asyncio.sleep(POLL_S)
    out = meter.stop()
    return finish_throughput(out, n, done, enqueue_s)


def throughput_sync(args: argparse.Namespace, enqueue_one: Any, done_count: Any) -> dict[str, Any]:
    meter = Meter(args)
    meter.start()
    n = args.n
    for _ in range(n):
        enqueue_one()
    enqueue_s = time.perf_counter() - meter.t0
    done = 0
    while True:
        done = done_count()
        if done >= n or time.perf_counter() - meter.t0 > args.deadline_s:
            break
        time.sleep(POLL_S)
    out = meter.stop()
    return finish_throughput(out, n, done, enqueue_s)


def finish_throughput(out: dict[str, Any], n: int, done: int, enqueue_s: float) -> dict[str, Any]:
    elapsed = out["elapsed_s"]
    out.update(
        n=n,
        done=done,
        cut_at_deadline=done < n,
        enqueue_s=round(enqueue_s, 4),
        enqueue_per_s=round(n / enqueue_s, 1) if enqueue_s > 0 else None,
        jobs_per_s=round(done / elapsed, 1) if elapsed > 0 else None,
    )
    if done and "worker_cpu_s" in out:
        out["worker_cpu_ms_per_job"] = round(out["worker_cpu_s"] * 1000 / done, 3)
    if done and "redis_cpu_s" in out:
        out["redis_cpu_ms_per_job"] = round(out["redis_cpu_s"] * 1000 / done, 3)
    if done:
        out["loadgen_cpu_ms_per_job"] = round(out["loadgen_cpu_s"] * 1000 / done, 3)
    if done and "worker_main_cpu_s" in out:
        out["worker_main_cpu_ms_per_job"] = round(out["worker_main_cpu_s"] * 1000 / done, 3)
    if done and "worker_cpu_s" in out and "redis_cpu_s" in out:
        # every process of the run: what the machine's cores had to carry per job
        spent = out["loadgen_cpu_s"] + out["worker_cpu_s"] + out["redis_cpu_s"]
        out["all_cpu_ms_per_job"] = round(spent * 1000 / done, 3)
    return out


async def latency_async(args: argparse.Namespace, roundtrip: Any) -> dict[str, Any]:
    meter = Meter(args)
    samples: list[float] = []
    meter.start()
    for _ in range(args.n):
        t = time.perf_counter()
        await roundtrip()
        samples.append(time.perf_counter() - t)
    out = meter.stop()
    out.update(latency_summary(samples))
    return out


def latency_sync(args: argparse.Namespace, roundtrip: Any) -> dict[str, Any]:
    meter = Meter(args)
    samples: list[float] = []
    meter.start()
    for _ in range(args.n):
        t = time.perf_counter()
        roundtrip()
        samples.append(time.perf_counter() - t)
    out = meter.stop()
    out.update(latency_summary(samples))
    return out
