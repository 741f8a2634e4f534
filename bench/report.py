"""Turns a results file into medians, ratios and target checks (render.py writes the markdown).

render.py imports this module, never the other way round: re-rendering the README tables from a
results file is `.venv/bin/python bench/render.py bench/results/<date>.json`.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

RECORD_PREFIXES = ("orch:job:", "orch:state:", "orch:plugin-jobs:", "orch:jobs", "orch:log:")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def classify_monitor(lines: list[str], w0: float, w1: float, n: int) -> dict[str, Any]:
    """Per job, from `redis-cli monitor` lines inside [w0, w1]: client-sent vs inside-Lua commands, and how
    many touch the orchestrator's record/indexes first (script calls themselves are not counted as record)."""
    top: dict[str, int] = {}
    lua = record = 0
    for raw in lines:
        parts = raw.split(" ", 3)
        if len(parts) < 4:
            continue
        try:
            ts = float(parts[0])
        except ValueError:
            continue
        if not w0 <= ts <= w1:
            continue
        tokens = _QUOTED.findall(parts[3])
        if not tokens:
            continue
        name = tokens[0].lower()
        if parts[2].startswith("lua]"):
            lua += 1
        else:
            top[name] = top.get(name, 0) + 1
        if name not in ("evalsha", "eval", "fcall") and len(tokens) > 1 and tokens[1].startswith(RECORD_PREFIXES):
            record += 1
    return {
        "n": n,
        "client_cmds_per_job": round(sum(top.values()) / n, 2),
        "lua_cmds_per_job": round(lua / n, 2),
        "record_cmds_per_job": round(record / n, 2),
        "client_cmds_by_name": dict(sorted(top.items(), key=lambda kv: -kv[1])),
    }


def med(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def rng(values: list[float], digits: int = 1) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return "(1 run)"
    return f"{fmt(min(vals), digits)}-{fmt(max(vals), digits)}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


# -- summary --------------------------------------------------------------------------------------


ORDER = ["orchestrator", "celery-solo", "celery-prefork", "celery-threads", "saq", "arq-default", "arq-tuned"]


VARIANTS = ["process", "pooled", "pubsub", "apply", "default", "tuned"]


def _order(key: str) -> tuple[int, int, str]:
    system, _, variant = key.partition(":")
    return (
        ORDER.index(system) if system in ORDER else len(ORDER),
        VARIANTS.index(variant) if variant in VARIANTS else len(VARIANTS),
        key,
    )


def _runs(data: dict[str, Any], bench: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in data["runs"]:
        if r["bench"] == bench and r["ok"] and r["rep"] >= 0:
            key = f"{r['system']}:{r['variant']}" if bench != "footprint" else r["system"]
            out.setdefault(key, []).append(r["result"])
    return {k: out[k] for k in sorted(out, key=_order)}


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {"throughput": {}, "latency": {}, "redis": {}, "footprint": {}}
    for key, rs in _runs(data, "throughput").items():
        s["throughput"][key] = {
            "jobs_per_s": [r["jobs_per_s"] for r in rs],
            "median": med([r["jobs_per_s"] for r in rs]),
            "n": rs[0]["n"],
            "done": [r["done"] for r in rs],
            "cut_at_deadline": any(r["cut_at_deadline"] for r in rs),
            "cut_runs": sum(1 for r in rs if r["cut_at_deadline"]),
            "runs": len(rs),
            "worker_cpu_ms_per_job": med([r.get("worker_cpu_ms_per_job") for r in rs]),
            "redis_cpu_ms_per_job": med([r.get("redis_cpu_ms_per_job") for r in rs]),
            "worker_main_cpu_ms_per_job": med([r.get("worker_main_cpu_ms_per_job") for r in rs]),
            "loadgen_cpu_ms_per_job": med([r.get("loadgen_cpu_ms_per_job") for r in rs]),
            "all_cpu_ms_per_job": med([r.get("all_cpu_ms_per_job") for r in rs]),
            "enqueue_per_s": med([r.get("enqueue_per_s") for r in rs]),
            "failed": sum(r.get("failed", 0) for r in rs),
        }
    foot = _runs(data, "footprint")
    for key, rs in foot.items():
        entry = {
            "rss_mb": [r["worker"]["rss_mb"] for r in rs],
            "rss_median": med([r["worker"]["rss_mb"] for r in rs]),
            "pss_median": med([r["worker"]["pss_mb"] for r in rs]),
            "cpu_pct": [r["worker"]["cpu_pct"] for r in rs],
            "cpu_median": med([r["worker"]["cpu_pct"] for r in rs]),
            "processes": rs[-1]["worker"]["processes"],
            # the tree's root (the worker process itself) comes first in per_process_rss_mb
            "main_rss_median": med([next(iter(r["worker"]["per_process_rss_mb"].values()), None) for r in rs]),
            "redis_cmds_per_s": med([r["redis_cmds_per_s"] for r in rs]),
            "redis_reads_per_s": med([r["redis_reads_per_s"] for r in rs]),
            "window_s": rs[-1]["window_s"],
        }
        if "with_beat" in rs[0]:
            entry["with_beat_rss_median"] = med([r["with_beat"]["rss_mb"] for r in rs])
            entry["with_beat_rss"] = [r["with_beat"]["rss_mb"] for r in rs]
            entry["with_beat_cpu_median"] = med([r["with_beat"]["cpu_pct"] for r in rs])
        if "health" in rs[-1]:
            entry["health_components"] = sorted(rs[-1]["health"].get("components", {}))
        s["footprint"][key] = entry
    for key, rs in _runs(data, "latency").items():
        s["latency"][key] = {
            "p50": [r["p50_ms"] for r in rs],
            "p50_median": med([r["p50_ms"] for r in rs]),
            "p99_median": med([r["p99_ms"] for r in rs]),
            "n": rs[0]["n"],
            "effective_isolation": [r.get("effective_isolation") for r in rs if "effective_isolation" in r],
            "distinct_plugin_pids": [r.get("distinct_plugin_pids") for r in rs if "distinct_plugin_pids" in r],
        }
        if any("missed_notifications" in r for r in rs):
            s["latency"][key]["missed_notifications"] = sum(r.get("missed_notifications", 0) for r in rs)
            s["latency"][key]["jobs"] = sum(r["n"] for r in rs)
        phases = [r["phases_ms"] for r in rs if r.get("phases_ms")]
        if phases:
            s["latency"][key]["phases_ms"] = {k: med([ph.get(k) for ph in phases]) for k in phases[0]}
        idle = foot.get(key.split(":")[0])
        idle_rate = med([f["redis_cmds_per_s"] for f in idle]) if idle else None
        idle_reads = med([f["redis_reads_per_s"] for f in idle]) if idle else None
        per_job, reads, net, net_reads = [], [], [], []
        for r in rs:
            d, n = r.get("redis_delta") or {}, r["n"]
            if not d:
                continue
            per_job.append(d.get("total_commands_processed", 0) / n)
            reads.append(d.get("total_reads_processed", 0) / n)
            if idle_rate is not None:
                net.append((d.get("total_commands_processed", 0) - idle_rate * r["elapsed_s"]) / n)
                net_reads.append((d.get("total_reads_processed", 0) - (idle_reads or 0) * r["elapsed_s"]) / n)
        mon = data.get("monitor", {}).get(key)
        s["redis"][key] = {
            "cmds_per_job": med(per_job),
            "cmds_per_job_net": med(net),
            "reads_per_job": med(reads),
            "reads_per_job_net": med(net_reads),
            "idle_cmds_per_s": idle_rate,
            "monitor": mon,
        }
    spawns = [b for b in data.get("spawn_baseline", []) if "concurrent" in b]
    s["spawn"] = {
        "spawns_per_s": med([b["concurrent"]["spawns_per_s"] for b in spawns]),
        "spawns_per_s_all": [b["concurrent"]["spawns_per_s"] for b in spawns],
        "seq_p50_ms": med([b["sequential"]["p50_ms"] for b in spawns]),
        "jsonline_p50_ms": med([b["jsonline_roundtrip"]["p50_ms"] for b in spawns]),
        "jsonline_p50_all": [b["jsonline_roundtrip"]["p50_ms"] for b in spawns],
        "command": spawns[0]["command"] if spawns else None,
        "concurrency": spawns[0]["concurrent"]["concurrency"] if spawns else None,
    }
    ups = [u["healthy_s"] for u in data.get("startup", []) if u.get("healthy_s") is not None]
    s["startup"] = {
        "healthy_s": ups,
        "median": med(ups),
        "failed": sum(1 for u in data.get("startup", []) if u.get("healthy_s") is None),
        "rss_with_embedded_redis_mb": med(
            [u["memory_at_healthy"]["rss_mb"] for u in data.get("startup", []) if u.get("memory_at_healthy")]
        ),
    }
    s["nproc"] = (data.get("machine") or {}).get("nproc")
    return s


def cpu_budget(s: dict[str, Any], rate: float | None) -> str:
    """What reaching `rate` pooled jobs/s would allow per job on this machine, against what this run spent.

    Every process of a throughput run shares the machine's cores (load generator, Redis, the worker
    and its children), so `rate` is out of reach while they spend more CPU per job than the cores
    give at that rate, however the time is spread.
    """
    e = s["throughput"].get("orchestrator:pooled") or {}
    spent, nproc = e.get("all_cpu_ms_per_job"), s.get("nproc")
    if not rate or spent is None or not nproc:
        return ""
    budget = nproc * 1000 / rate
    main, tree = e.get("worker_main_cpu_ms_per_job"), e.get("worker_cpu_ms_per_job")
    children = tree - main if main is not None and tree is not None else None
    return (
        f"; CPU: {nproc} cores at {fmt(rate)} jobs/s give {fmt(budget, 3)} ms per job to every process together, "
        f"this run spent {fmt(spent, 3)} (load generator {fmt(e.get('loadgen_cpu_ms_per_job'), 3)}, "
        f"Redis {fmt(e.get('redis_cpu_ms_per_job'), 3)}, `orchestrator run` {fmt(main, 3)}, "
        f"its plugin children {fmt(children, 3)})"
    )


def effective_isolation(s: dict[str, Any], variant: str) -> str:
    modes = s["latency"].get(f"orchestrator:{variant}", {}).get("effective_isolation") or []
    if not modes:
        return "unknown"
    return modes[-1] if len(set(modes)) == 1 else "/".join(modes)


def targets(s: dict[str, Any]) -> list[dict[str, Any]]:
    tp, lat, red, foot = s["throughput"], s["latency"], s["redis"], s["footprint"]

    def t(key: str) -> float | None:
        return tp.get(key, {}).get("median")

    def p50(key: str) -> float | None:
        return lat.get(key, {}).get("p50_median")

    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float | None, ok: bool | None, detail: str) -> None:
        out.append(
            {"target": name, "value": value, "limit": limit, "met": None if ok is None else bool(ok), "detail": detail}
        )

    pooled, process = t("orchestrator:pooled"), t("orchestrator:process")
    eff = effective_isolation(s, "pooled")
    prefork, saq = t("celery-prefork:default"), t("saq:pubsub")
    mode_note = f"measured mode: {eff}"
    # issue 15's targets (the earlier ones, 1.5x prefork and >= SAQ, are implied by these)
    for factor, peer, peer_name in ((3, prefork, "Celery prefork"), (2, saq, "SAQ")):
        limit = None if peer is None else factor * peer
        add(
            f"pooled jobs/s >= {factor}x {peer_name}",
            pooled,
            limit,
            None if pooled is None or limit is None else pooled >= limit,
            f"{fmt(pooled)} vs {factor} x {fmt(peer)}; {mode_note}" + cpu_budget(s, limit),
        )
    wcpu = tp.get("orchestrator:pooled", {}).get("worker_cpu_ms_per_job")
    add(
        "worker CPU per job <= 0.4 ms (pooled)",
        wcpu,
        0.4,
        None if wcpu is None else wcpu <= 0.4,
        f"{fmt(wcpu, 3)} ms (SAQ {fmt(tp.get('saq:pubsub', {}).get('worker_cpu_ms_per_job'), 3)} ms)",
    )
    spawn = s["spawn"]["spawns_per_s"]
    add(
        "process jobs/s >= 0.8x bare spawn rate",
        process,
        None if spawn is None else 0.8 * spawn,
        None if None in (process, spawn) else process >= 0.8 * spawn,  # type: ignore[operator]
        f"{fmt(process)} vs 0.8 x {fmt(spawn)} bare `-I -S -c pass` spawns/s at concurrency "
        f"{s['spawn']['concurrency']}",
    )
    rp = p50("orchestrator:pooled")
    add("round trip p50 <= 3 ms (pooled)", rp, 3.0, None if rp is None else rp <= 3.0, f"{fmt(rp, 2)} ms; {mode_note}")
    peers = [p for p in (p50("celery-solo:default"), p50("saq:pubsub")) if p is not None]
    add(
        "round trip p50 (pooled) <= 0.8x the fastest of Celery's and SAQ's pub/sub paths",
        rp,
        0.8 * min(peers) if peers else None,
        None if rp is None or not peers else rp <= 0.8 * min(peers),
        f"{fmt(rp, 2)} ms vs 0.8 x min(Celery solo {fmt(p50('celery-solo:default'), 2)} ms, "
        f"SAQ {fmt(p50('saq:pubsub'), 2)} ms)",
    )
    rproc, jl = p50("orchestrator:process"), s["spawn"]["jsonline_p50_ms"]
    add(
        "process round trip p50 <= 1.5x bare JSON-line child spawn",
        rproc,
        None if jl is None else 1.5 * jl,
        None if None in (rproc, jl) else rproc <= 1.5 * jl,  # type: ignore[operator]
        f"{fmt(rproc, 2)} ms vs 1.5 x {fmt(jl, 2)} ms",
    )
    om, am = (
        (red.get("orchestrator:pooled") or {}).get("monitor"),
        (red.get("arq-default:default") or {}).get("monitor"),
    )
    if om and am:
        o_all = om["client_cmds_per_job"] + om["lua_cmds_per_job"]
        a_all = am["client_cmds_per_job"] + am["lua_cmds_per_job"]
        rec = om.get("record_cmds_per_job", 0.0)
        add(
            "Redis commands per job <= arq's + the job record",
            o_all,
            a_all + rec,
            o_all <= a_all + rec,
            f"orchestrator {fmt(o_all)} (of which {fmt(rec)} on its record and indexes) vs arq {fmt(a_all)} "
            f"(MONITOR, client-sent + inside Lua)",
        )
    orr = (red.get("orchestrator:pooled") or {}).get("reads_per_job_net")
    arr = (red.get("arq-default:default") or {}).get("reads_per_job_net")
    add(
        "Redis round trips per job <= arq's",
        orr,
        arr,
        None if None in (orr, arr) else orr <= arr,  # type: ignore[operator]
        f"{fmt(orr)} vs {fmt(arr)} socket reads per job, net of idle polling",
    )
    of = foot.get("orchestrator") or {}
    main = of.get("main_rss_median")
    add(
        "idle RSS <= 60 MB",
        of.get("rss_median"),
        60.0,
        None if of.get("rss_median") is None else of["rss_median"] <= 60.0,
        f"{fmt(of.get('rss_median'))} MB over {of.get('processes', '-')} process(es)"
        + (
            f" (`orchestrator run` itself {fmt(main)} MB, its children {fmt(of['rss_median'] - main)} MB)"
            if main is not None and of.get("processes", 1) > 1
            else ""
        ),
    )
    add(
        "`orchestrator run` alone <= 45 MB RSS idle",
        main,
        45.0,
        None if main is None else main <= 45.0,
        f"{fmt(main)} MB (the process itself, without its warm children)",
    )
    add(
        "idle CPU < 1% of a core",
        of.get("cpu_median"),
        1.0,
        None if of.get("cpu_median") is None else of["cpu_median"] < 1.0,
        f"{fmt(of.get('cpu_median'), 2)} % over {of.get('window_s', '-')} s",
    )
    up = s["startup"]["median"]
    add(
        "start-up to healthy < 2 s (embedded Redis)",
        up,
        2.0,
        None if up is None else up < 2.0,
        f"{fmt(up, 2)} s median of {len(s['startup']['healthy_s'])}",
    )
    return out


def throughput_misses(data: dict[str, Any]) -> list[str]:
    """Orchestrator modes whose throughput or latency target is missed (they get a profile)."""
    s = summarize(data)
    missed = []
    for t in targets(s):
        if t["met"] is False and t["target"].startswith(("pooled", "round trip p50")):
            missed.append("pooled")
        if t["met"] is False and t["target"].startswith("process"):
            missed.append("process")
    return sorted(set(missed))


def finalize(data: dict[str, Any]) -> None:
    data["summary"] = summarize(data)
    data["targets"] = targets(data["summary"])


# -- py-spy ---------------------------------------------------------------------------------------


def summarize_pyspy(raw: Path, cmd: list[str], duration_s: float, rate: int) -> dict[str, Any]:
    """Top frames from py-spy's raw (collapsed) output: self time by line, inclusive time by function."""
    try:
        lines = raw.read_text().splitlines()
    except OSError as e:
        return {"error": f"no profile: {e}", "cmd": cmd}
    total, self_t, incl, pkg = 0, {}, {}, {}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        total += n
        leaf = frames[-1] if frames else "?"
        self_t[leaf] = self_t.get(leaf, 0) + n
        m = re.search(r"\(([^/:]+)", leaf)
        top = m.group(1) if m else "?"
        pkg[top] = pkg.get(top, 0) + n
        for fn in {re.sub(r":\d+\)$", ")", f) for f in frames}:
            incl[fn] = incl.get(fn, 0) + n

    def top(d: dict[str, int], k: int = 12) -> list[list[Any]]:
        return [[name, n, round(100 * n / total, 1)] for name, n in sorted(d.items(), key=lambda kv: -kv[1])[:k]]

    return {
        "cmd": cmd,
        "samples": total,
        "gil_held_pct_of_wall": round(100 * total / (duration_s * rate), 1),
        "self_top": top(self_t),
        "inclusive_top": top(incl, 15),
        "self_by_package": top(pkg, 8),
    }


# -- markdown -------------------------------------------------------------------------------------


def console_summary(data: dict[str, Any]) -> str:
    out = []
    for t in data.get("targets", []):
        met = "n/a " if t["met"] is None else ("ok  " if t["met"] else "MISS")
        out.append(f"  [{met}] {t['target']}: {t['detail']}")
    return "targets:\n" + "\n".join(out)
