"""The side-by-side benchmark driver behind `bench/run` (stdlib only; run with the project venv).

For each repetition, for each system in turn (A B C A B C, never AAA BBB): start its worker as
a separate process like a user would, wait until it has run one job, then measure
  1. footprint: idle CPU and RSS of the worker's process tree (+ Redis commands/s while idle),
  2. round trip: sequential trigger -> run -> result at the caller, with an idle worker,
  3. Redis commands per job (INFO commandstats deltas around the round-trip loop; MONITOR on the
     first repetition to split client-sent commands from those run inside Lua),
  4. queue path: enqueue N no-op jobs, clock until all are done (or the deadline),
then stop it. Per repetition also: the bare-spawn baseline and `orchestrator run` start-ups with
embedded Redis. Once: bench/bench_launcher.py, and a py-spy profile of the orchestrator during a
throughput run when a target is missed. Writes bench/results/<date>.json; report.py sums it up, render.py writes the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import benchlib
import render
import report
from procs import PEERS, PROJECT_PY, Procs, base_env, free_port, git_facts, machine_facts, versions, wait_http
from systems import ORCH_CONCURRENCY, Params, System, params_for, systems


class Harness:
    def __init__(self, p: Params, work: Path) -> None:
        self.p = p
        self.work = work
        self.procs = Procs()
        self.runs: list[dict[str, Any]] = []
        self.commands: dict[str, Any] = {"workers": {}, "loadgen": {}, "work_dir": str(work)}
        self.extra: dict[str, Any] = {"spawn_baseline": [], "startup": [], "monitor": {}}
        self.plugins_dir = work / "plugins"

    # redis
    def start_redis(self) -> None:
        self.redis_port = free_port()
        d = self.work / "redis"
        d.mkdir()
        cmd = [
            "redis-server",
            "--port",
            str(self.redis_port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(d),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]
        self.redis = self.procs.start(cmd, env=base_env(), cwd=d, log=d / "redis.log")
        self.commands["redis"] = cmd
        for _ in range(200):
            with contextlib.suppress(OSError, ConnectionError, RuntimeError):
                r = benchlib.Resp("127.0.0.1", self.redis_port)
                ok = r.call("PING") == "PONG"
                r.close()
                if ok:
                    return
            time.sleep(0.02)
        raise SystemExit("bench redis-server did not start")

    def redis_call(self, *args: str) -> Any:
        r = benchlib.Resp("127.0.0.1", self.redis_port)
        try:
            return r.call(*args)
        finally:
            r.close()

    # workers
    def worker_env(self, s: System) -> dict[str, str]:
        env = base_env()
        url = f"redis://127.0.0.1:{self.redis_port}/0"
        if s.name == "orchestrator":
            self.http_port = free_port()
            env.update(
                REDIS_URL=url,
                PLUGINS_DIR=str(self.plugins_dir),
                ORCH_STATE_DIR=str(self.work / "orch-state"),
                PLUGIN_VENV_DIR=str(self.work / "orch-venvs"),
                ORCH_HTTP_PORT=str(self.http_port),
                ORCH_QUEUES=json.dumps({"default": {"concurrency": ORCH_CONCURRENCY}}),
                ORCH_SHUTDOWN_GRACE_S="5",
                ORCH_LOG_LEVEL="INFO",
            )
        else:
            env.update(BENCH_REDIS_URL=url, PYTHONPATH=f"{BENCH / 'peers'}:{BENCH}")
        env.update(s.env)
        return env

    def start_worker(self, s: System, rep: int) -> subprocess.Popen[bytes]:
        self.redis_call("FLUSHALL")
        env = self.worker_env(s)
        cwd = self.work if s.name == "orchestrator" else BENCH / "peers"
        proc = self.procs.start(s.worker, env=env, cwd=cwd, log=self.work / f"{s.name}-worker.log")
        shown = {k: v for k, v in env.items() if k not in base_env()}
        self.commands["workers"][s.name] = {"cmd": s.worker, "env": shown, "cwd": str(cwd)}
        if s.name == "orchestrator" and wait_http(f"http://127.0.0.1:{self.http_port}/health", 30) is None:
            raise RuntimeError("orchestrator run did not become healthy in 30 s (see its log)")
        # The orchestrator runs one job of each bench plugin, so a pooled plugin's warm child exists (and counts
        # in the footprint) as it would in a deployment that uses it.
        for variant in s.latency if s.name == "orchestrator" else s.latency[:1]:
            if self.loadgen(s, "ready", variant, n=1, rep=rep, record=False) is None:
                raise RuntimeError(f"{s.name}: worker never ran its first job ({variant})")
        return proc

    def loadgen(
        self,
        s: System,
        mode: str,
        variant: str,
        *,
        n: int,
        rep: int,
        worker_pid: int = 0,
        count_commands: bool = False,
        record: bool = True,
        bench: str | None = None,
        deadline_s: float | None = None,
    ) -> dict[str, Any] | None:
        deadline_s = deadline_s or self.p.deadline_s
        cmd = [
            *s.loadgen,
            mode,
            "--variant",
            variant,
            "--redis-port",
            str(self.redis_port),
            "--n",
            str(n),
            "--deadline-s",
            str(deadline_s),
            "--redis-pid",
            str(self.redis.pid),
        ]
        if worker_pid:
            cmd += ["--worker-pid", str(worker_pid)]
        if count_commands:
            cmd.append("--count-commands")
        env = base_env()
        env["PYTHONPATH"] = f"{BENCH / 'peers'}:{BENCH}"
        key = f"{s.name}:{bench or mode}:{variant}"
        shown = [
            *s.loadgen,
            mode,
            "--variant",
            variant,
            "--redis-port",
            "<port>",
            "--n",
            str(n),
            "--deadline-s",
            str(deadline_s),
            "--redis-pid",
            "<pid>",
        ]
        self.commands["loadgen"][key] = (
            shown + (["--worker-pid", "<pid>"] if worker_pid else []) + (["--count-commands"] if count_commands else [])
        )
        try:
            proc = subprocess.run(
                cmd, env=env, cwd=BENCH / "peers", capture_output=True, text=True, timeout=deadline_s + 120, check=False
            )
            line = [x for x in proc.stdout.splitlines() if x.startswith("BENCH-RESULT ")]
            result = json.loads(line[-1][len("BENCH-RESULT ") :]) if line else None
            error = None if result else f"exit {proc.returncode}: {proc.stderr.strip()[-800:]}"
        except subprocess.TimeoutExpired:
            result, error = None, "load generator timed out"
        if error:
            print(f"    ! {key}: {error}", flush=True)
        if record:
            self.runs.append(
                {
                    "rep": rep,
                    "system": s.name,
                    "bench": bench or mode,
                    "variant": variant,
                    "ok": result is not None,
                    "error": error,
                    "result": result,
                }
            )
        return result

    def footprint(self, s: System, worker: subprocess.Popen[bytes], rep: int) -> None:
        beat = None
        if s.beat:
            beat = self.procs.start(
                s.beat, env=self.worker_env(s), cwd=BENCH / "peers", log=self.work / f"{s.name}-beat.log"
            )
            self.commands["workers"][f"{s.name}+beat"] = {"cmd": s.beat, "cwd": str(BENCH / "peers")}
        time.sleep(self.p.settle_s + (1.5 if beat else 0.0))
        roots = [worker.pid] + ([beat.pid] if beat else [])
        cpu0 = [benchlib.tree_cpu_s(r) for r in roots]
        c0 = benchlib.redis_counters("127.0.0.1", self.redis_port)
        t0 = time.perf_counter()
        time.sleep(self.p.idle_window_s)
        elapsed = time.perf_counter() - t0
        cpu1 = [benchlib.tree_cpu_s(r) for r in roots]
        delta = benchlib.counters_delta(c0, benchlib.redis_counters("127.0.0.1", self.redis_port))
        delta.pop("info", None)
        mem = [benchlib.tree_memory(r) for r in roots]
        result: dict[str, Any] = {
            "window_s": round(elapsed, 3),
            "worker": {"cpu_pct": round((cpu1[0] - cpu0[0]) / elapsed * 100, 3), **mem[0]},
            "redis_cmds_per_s": round((delta.get("total_commands_processed", 1) - 1) / elapsed, 2),
            "redis_reads_per_s": round((delta.get("total_reads_processed", 1) - 1) / elapsed, 2),
        }
        if beat:
            result["beat"] = {"cpu_pct": round((cpu1[1] - cpu0[1]) / elapsed * 100, 3), **mem[1]}
            result["with_beat"] = {
                "cpu_pct": round(result["worker"]["cpu_pct"] + result["beat"]["cpu_pct"], 3),
                "rss_mb": round(mem[0]["rss_mb"] + mem[1]["rss_mb"], 1),
                "pss_mb": round(mem[0]["pss_mb"] + mem[1]["pss_mb"], 1),
            }
            self.procs.stop(beat)
        if s.name == "orchestrator":
            url = f"http://127.0.0.1:{self.http_port}/health"
            with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(url, timeout=2) as resp:
                result["health"] = json.loads(resp.read())
        self.runs.append(
            {
                "rep": rep,
                "system": s.name,
                "bench": "footprint",
                "variant": "idle",
                "ok": True,
                "error": None,
                "result": result,
            }
        )

    def monitor_count(self, s: System, variant: str, n: int) -> None:
        """Client-sent vs in-Lua commands per job, from MONITOR (first repetition only: it slows Redis)."""
        out = self.work / f"monitor-{s.name}-{variant}.txt"
        with open(out, "wb") as fh:
            mon = subprocess.Popen(
                ["redis-cli", "-h", "127.0.0.1", "-p", str(self.redis_port), "monitor"],
                stdout=fh,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs.live[mon.pid] = (mon, [mon.pid])  # type: ignore[assignment]
        try:
            time.sleep(0.3)
            res = self.loadgen(s, "latency", variant, n=n, rep=0, record=False, bench="monitor")
            time.sleep(0.3)
        finally:
            self.procs.stop(mon, grace_s=3)
        if res is None:
            return
        w0, w1 = res["window"]
        lines = out.read_text(errors="replace").splitlines()
        self.extra["monitor"][f"{s.name}:{variant}"] = report.classify_monitor(lines, w0, w1, n)

    def session(self, s: System, rep: int) -> None:
        print(f"  {s.name}", flush=True)
        worker = self.start_worker(s, rep)
        try:
            self.footprint(s, worker, rep)
            for v in s.latency:
                n = self.p.latency_polled_n if v in s.polled else self.p.latency_n
                self.loadgen(s, "latency", v, n=n, rep=rep, worker_pid=worker.pid, count_commands=True)
                if rep == 0:
                    self.monitor_count(s, v, max(2, n // 4) if v in s.polled else self.p.monitor_n)
            for i, v in enumerate(s.throughput):
                if i:  # a run cut at the deadline leaves a backlog: the next variant gets a fresh worker and Redis
                    self.stop_worker(s, worker, rep)
                    worker = self.start_worker(s, rep)
                self.loadgen(s, "throughput", v, n=self.p.jobs, rep=rep, worker_pid=worker.pid)
        finally:
            self.stop_worker(s, worker, rep)

    def stop_worker(self, s: System, worker: subprocess.Popen[bytes], rep: int) -> None:
        if worker.pid not in self.procs.live:
            return
        took = self.procs.stop(worker)
        self.runs.append(
            {
                "rep": rep,
                "system": s.name,
                "bench": "stop",
                "variant": "sigterm",
                "ok": True,
                "error": None,
                "result": {"stop_s": round(took, 3)},
            }
        )

    def spawn_baseline(self, rep: int) -> None:
        cmd = [
            str(PROJECT_PY),
            str(BENCH / "orchestrator_bench.py"),
            "spawn",
            "--n",
            str(self.p.spawn_n),
            "--seq",
            str(self.p.spawn_seq),
            "--concurrency",
            str(ORCH_CONCURRENCY),
        ]
        self.commands["spawn_baseline"] = cmd
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=self.work, check=False)
        line = [x for x in proc.stdout.splitlines() if x.startswith("BENCH-RESULT ")]
        res = json.loads(line[-1][13:]) if line else {"error": proc.stderr[-800:]}
        self.extra["spawn_baseline"].append({"rep": rep, **res})

    def startup(self, rep: int, i: int) -> None:
        """`orchestrator run` with embedded Redis (no REDIS_URL) and a fresh state dir, to /health 200."""
        state = Path(f"/tmp/orch-bench-{os.getpid()}-{rep}-{i}")  # short: the unix socket path must fit
        shutil.rmtree(state, ignore_errors=True)
        port = free_port()
        env = base_env()
        env.update(
            PLUGINS_DIR=str(self.plugins_dir),
            ORCH_STATE_DIR=str(state),
            ORCH_HTTP_PORT=str(port),
            ORCH_QUEUES=json.dumps({"default": {"concurrency": ORCH_CONCURRENCY}}),
            ORCH_SHUTDOWN_GRACE_S="5",
        )
        cmd = [str(ROOT / ".venv/bin/orchestrator"), "run"]
        self.commands["startup"] = {"cmd": cmd, "env": {k: v for k, v in env.items() if k not in base_env()}}
        proc = self.procs.start(cmd, env=env, cwd=self.work, log=self.work / "startup.log")
        took = wait_http(f"http://127.0.0.1:{port}/health", 20)
        mem = benchlib.tree_memory(proc.pid) if took is not None else None
        stop_s = self.procs.stop(proc)
        pidfile = state / "redis" / "redis.pid"
        embedded_left = False
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            if "redis-server" in benchlib.cmdline(pid):
                embedded_left = True
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    if not benchlib.cmdline(pid):
                        break
                    time.sleep(0.02)
        shutil.rmtree(state, ignore_errors=True)
        self.extra["startup"].append(
            {
                "rep": rep,
                "healthy_s": None if took is None else round(took, 4),
                "stop_s": round(stop_s, 3),
                "memory_at_healthy": mem,
                "embedded_redis_left_running": embedded_left,
            }
        )

    def launcher_bench(self) -> None:
        script = BENCH / "bench_launcher.py"
        if not script.exists():
            self.extra["launcher"] = {"error": "bench/bench_launcher.py not present"}
            return
        cmd = [str(PROJECT_PY), str(script), "--runs", str(self.p.launcher_runs), "--loop", "uvloop"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT, check=False)
            data = json.loads(proc.stdout) if proc.returncode == 0 else None
            self.extra["launcher"] = {
                "cmd": cmd,
                "output": data,
                "error": None if data else f"exit {proc.returncode}: {proc.stderr[-800:]}",
            }
        except (subprocess.TimeoutExpired, ValueError) as e:
            self.extra["launcher"] = {"cmd": cmd, "output": None, "error": str(e)}

    def profile(self, variants: list[str]) -> None:
        """py-spy on the orchestrator process during an extra (unrecorded) throughput run per variant."""
        pyspy = PEERS / "tools/bin/py-spy"
        if not pyspy.exists():
            self.extra["profile"] = {"error": "py-spy not installed in bench/.peers/tools"}
            return
        s = systems(self.work)[0]
        self.extra["profile"] = {}
        for v in variants:
            worker = self.start_worker(s, rep=-1)
            try:
                raw = self.work / f"pyspy-{v}.txt"
                cmd = [
                    str(pyspy),
                    "record",
                    "--pid",
                    str(worker.pid),
                    "--duration",
                    str(int(self.p.profile_s)),
                    "--rate",
                    "100",
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                    "--gil",
                ]
                spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
                self.procs.live[spy.pid] = (spy, [spy.pid])  # type: ignore[assignment]
                time.sleep(0.5)
                self.loadgen(
                    s,
                    "throughput",
                    v,
                    n=max(self.p.jobs, 10_000),  # enough to keep the worker busy for the whole profile
                    rep=-1,
                    worker_pid=worker.pid,
                    record=False,
                    bench="profile",
                    deadline_s=self.p.profile_s + 1,
                )
                try:
                    spy.wait(timeout=self.p.profile_s + 30)
                finally:
                    self.procs.stop(spy, grace_s=2)
                self.extra["profile"][v] = report.summarize_pyspy(raw, cmd, self.p.profile_s, rate=100)
            finally:
                self.procs.stop(worker)


def main() -> None:
    ap = argparse.ArgumentParser(prog="bench/run")
    ap.add_argument("--quick", action="store_true", help="1 repetition, fewer jobs: under 3 minutes")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3; --quick: 1)")
    ap.add_argument("--only", default="", help="comma-separated systems (debugging; the table will be partial)")
    ap.add_argument("--no-readme", action="store_true", help="write the JSON only")
    ap.add_argument("--output", default=None, help="results file (default bench/results/<date>.json)")
    args = ap.parse_args()
    p = params_for(args.quick, args.reps)
    stamp = dt.datetime.now(dt.UTC)
    work = BENCH / ".work" / stamp.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    h = Harness(p, work)
    h.extra["machine"] = machine_facts()

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    print(
        f"bench: {'quick' if p.quick else 'full'} run, {p.reps} repetition(s), {p.jobs} jobs; work dir {work}",
        flush=True,
    )
    try:
        h.start_redis()
        subprocess.run(
            [str(PROJECT_PY), str(BENCH / "orchestrator_bench.py"), "make-plugins", str(h.plugins_dir)], check=True
        )
        chosen = [s for s in systems(work) if not args.only or s.name in args.only.split(",")]
        for rep in range(p.reps):
            print(f"repetition {rep + 1}/{p.reps} ({time.monotonic() - started:.0f}s)", flush=True)
            h.spawn_baseline(rep)
            for s in chosen:
                try:
                    h.session(s, rep)
                except RuntimeError as e:
                    print(f"    ! {s.name}: {e}", flush=True)
                    h.runs.append(
                        {
                            "rep": rep,
                            "system": s.name,
                            "bench": "session",
                            "variant": "-",
                            "ok": False,
                            "error": str(e),
                            "result": None,
                        }
                    )
            for i in range(p.startups_per_rep):
                h.startup(rep, i)
        print(f"plugin launch: bench/bench_launcher.py ({time.monotonic() - started:.0f}s)", flush=True)
        h.launcher_bench()
        data = collect(h, p, stamp, started)
        missed = report.throughput_misses(data)
        if missed:
            print(f"profiling orchestrator ({', '.join(missed)}) with py-spy", flush=True)
            h.profile(missed)
            data["profile"] = h.extra.get("profile")
        data["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        data["duration_s"] = round(time.monotonic() - started, 1)
    except KeyboardInterrupt as e:
        print(f"bench: interrupted ({e}); stopping every process started here", flush=True)
        h.procs.stop_all()
        raise SystemExit(130) from None
    finally:
        h.procs.stop_all()
    out = Path(args.output) if args.output else BENCH / "results" / f"{stamp.date().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report.finalize(data)
    out.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} ({data['duration_s']}s)", flush=True)
    if not args.no_readme:
        render.write_readme(data, BENCH / "README.md", out)
        print("updated bench/README.md", flush=True)
    print(report.console_summary(data), flush=True)


def collect(h: Harness, p: Params, stamp: dt.datetime, started: float) -> dict[str, Any]:
    facts = h.extra.get("machine") or machine_facts()
    facts["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return {
        "date": stamp.date().isoformat(),
        "started_at": stamp.isoformat(timespec="seconds"),
        "mode": "quick" if p.quick else "full",
        "params": {**p.__dict__, "orchestrator_concurrency": ORCH_CONCURRENCY},
        "machine": facts,
        "versions": versions(),
        "git": git_facts(),
        "commands": h.commands,
        "runs": h.runs,
        "spawn_baseline": h.extra["spawn_baseline"],
        "startup": h.extra["startup"],
        "monitor": h.extra["monitor"],
        "launcher": h.extra.get("launcher"),
        "duration_s": round(time.monotonic() - started, 1),
    }


if __name__ == "__main__":
    main()
