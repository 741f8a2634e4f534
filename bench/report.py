"""Turns a results file into medians, ratios, target checks and the tables of bench/README.md.

    .venv/bin/python bench/report.py bench/results/<date>.json      # re-render the README tables

Only the text between `<!-- bench:begin -->` and `<!-- bench:end -->` in bench/README.md is
rewritten; everything else (the "Plugin launch" section included) is left as it is.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

LABELS = {
    "orchestrator:process": "orchestrator, `process` plugin",
    "orchestrator:pooled": "orchestrator, `pooled` plugin",
    "celery-solo:default": "Celery solo",
    "celery-prefork:default": "Celery prefork (2)",
    "celery-threads:default": "Celery threads (10)",
    "saq:pubsub": "SAQ",
    "saq:apply": "SAQ `apply()` (polls)",
    "arq-default:default": "arq defaults (poll 0.5 s)",
    "arq-tuned:tuned": "arq poll_delay 0.01",
}
ROUNDTRIP_LABELS = {
    "orchestrator:process": "orchestrator `process` (trigger + result, pub/sub)",
    "orchestrator:pooled": "orchestrator `pooled` (trigger + result, pub/sub)",
    "celery-solo:default": "Celery solo `.delay().get()` (pub/sub)",
    "celery-prefork:default": "Celery prefork `.delay().get()`",
    "celery-threads:default": "Celery threads `.delay().get()`",
    "saq:pubsub": "SAQ enqueue + `refresh(until_complete)` (pub/sub)",
    "saq:apply": "SAQ `apply()` (polls 0.5 s)",
    "arq-default:default": "arq defaults `job.result()` (polls 0.5 s)",
    "arq-tuned:tuned": "arq tuned `job.result(poll_delay=0.01)`",
}
FOOTPRINT_LABELS = {
    "orchestrator": "`orchestrator run` (workers, heartbeat, HTTP)",
    "celery-solo": "Celery solo worker",
    "celery-prefork": "Celery prefork (2) worker",
    "celery-threads": "Celery threads (10) worker",
    "saq": "SAQ worker",
    "arq-default": "arq worker (poll 0.5 s)",
    "arq-tuned": "arq worker (poll 0.01 s)",
}
# The orchestrator's own bookkeeping on top of arq: its job record hash, state/plugin indexes, log.
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


def _runs(data: dict[str, Any], bench: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in data["runs"]:
        if r["bench"] == bench and r["ok"] and r["rep"] >= 0:
            out.setdefault(f"{r['system']}:{r['variant']}" if bench != "footprint" else r["system"], []).append(
                r["result"]
            )
    return out


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {"throughput": {}, "latency": {}, "redis": {}, "footprint": {}}
    for key, rs in _runs(data, "throughput").items():
        s["throughput"][key] = {
            "jobs_per_s": [r["jobs_per_s"] for r in rs],
            "median": med([r["jobs_per_s"] for r in rs]),
            "n": rs[0]["n"],
            "done": [r["done"] for r in rs],
            "cut_at_deadline": any(r["cut_at_deadline"] for r in rs),
            "worker_cpu_ms_per_job": med([r.get("worker_cpu_ms_per_job") for r in rs]),
            "redis_cpu_ms_per_job": med([r.get("redis_cpu_ms_per_job") for r in rs]),
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
    return s


def _effective(s: dict[str, Any], variant: str) -> str:
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
    eff = _effective(s, "pooled")
    prefork, saq = t("celery-prefork:default"), t("saq:pubsub")
    mode_note = f"measured mode: {eff}"
    add(
        "pooled jobs/s >= 1.5x Celery prefork",
        pooled,
        None if prefork is None else 1.5 * prefork,
        None if None in (pooled, prefork) else pooled >= 1.5 * prefork,  # type: ignore[operator]
        f"{fmt(pooled)} vs 1.5 x {fmt(prefork)}; {mode_note}",
    )
    add(
        "pooled jobs/s >= SAQ",
        pooled,
        saq,
        None if None in (pooled, saq) else pooled >= saq,  # type: ignore[operator]
        f"{fmt(pooled)} vs {fmt(saq)}; {mode_note}",
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
        "round trip p50 (pooled) <= Celery's and SAQ's pub/sub paths",
        rp,
        min(peers) if peers else None,
        None if rp is None or not peers else rp <= min(peers),
        f"{fmt(rp, 2)} ms vs Celery solo {fmt(p50('celery-solo:default'), 2)} ms, SAQ {fmt(p50('saq:pubsub'), 2)} ms",
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
    add(
        "idle RSS <= 60 MB",
        of.get("rss_median"),
        60.0,
        None if of.get("rss_median") is None else of["rss_median"] <= 60.0,
        f"{fmt(of.get('rss_median'))} MB over {of.get('processes', '-')} process(es)",
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


PHASES = (
    ("trigger_call", "`trigger()` call"),
    ("queued_to_started", "enqueued -> started"),
    ("started_to_finished", "started -> finished"),
    ("launcher_duration", "of which the launcher"),
    ("finished_to_caller", "finished -> result at the caller"),
)


def _phase_text(ph: dict[str, Any] | None) -> str:
    if not ph:
        return ""
    return ", ".join(f"{label} {fmt(ph.get(k), 2)} ms" for k, label in PHASES if ph.get(k) is not None)


def misses(data: dict[str, Any], s: dict[str, Any], tg: list[dict[str, Any]]) -> list[str]:
    """One bullet per missed target, with the evidence this run has for it."""
    out: list[str] = []
    prof = data.get("profile") or {}
    eff = _effective(s, "pooled")

    def top_frames(variant: str) -> str:
        pr = prof.get(variant) or {}
        if "self_top" not in pr:
            return ""
        frames = "; ".join(f"`{name}` {pct} %" for name, _, pct in pr["self_top"][:3])
        return f" py-spy (GIL held {pr['gil_held_pct_of_wall']} % of wall time): top self frames {frames}."

    for t in tg:
        if t["met"] is not False:
            continue
        name = t["target"]
        line = f"- **{name}**: {t['detail']}."
        if name.startswith("pooled") or "(pooled)" in name:
            if eff == "process":
                line += (
                    " The `pooled` plugin ran a fresh interpreter per job (one distinct pid per job): the pooled "
                    "mode is not in this build, so this is the per-job process path."
                )
            if name.startswith("pooled"):
                line += top_frames("pooled")
            else:
                line += (
                    " Round-trip phases (p50): "
                    + _phase_text(s["latency"].get("orchestrator:pooled", {}).get("phases_ms"))
                    + "."
                )
        elif name.startswith("process jobs/s"):
            line += top_frames("process")
        elif name.startswith("process round trip"):
            line += (
                " Round-trip phases (p50): "
                + _phase_text(s["latency"].get("orchestrator:process", {}).get("phases_ms"))
                + "."
            )
        elif name.startswith("Redis"):
            om = (s["redis"].get("orchestrator:pooled") or {}).get("monitor") or {}
            am = (s["redis"].get("arq-default:default") or {}).get("monitor") or {}
            if om and am:
                line += (
                    " Client-sent per job (MONITOR): orchestrator "
                    + ", ".join(f"{k} {v / om['n']:.1f}" for k, v in list(om["client_cmds_by_name"].items())[:8])
                    + "; arq "
                    + ", ".join(f"{k} {v / am['n']:.1f}" for k, v in list(am["client_cmds_by_name"].items())[:8])
                    + "."
                )
        out.append(line)
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


def _sec_head(data: dict[str, Any], s: dict[str, Any], tg: list[dict[str, Any]], results_path: str) -> list[str]:
    L: list[str] = []
    w = L.append
    p, m, v = data["params"], data["machine"], data["versions"]
    w(
        f"Recorded {data['started_at']} ({data['mode']} run: {p['reps']} repetition(s), {p['jobs']:,} jobs per "
        f"throughput run, deadline {p['deadline_s']:.0f} s; took {data.get('duration_s', '-')} s). "
        f"Raw numbers: [`{results_path}`]({results_path})."
    )
    w("")
    w(
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['mem_total']} RAM, Linux {m['kernel']}; load average "
        f"{m['loadavg_at_start']} at start, {m.get('loadavg_at_end')} at end. Python {v.get('project', {}).get('python')} "
        f"for every system; {v.get('redis-server', '')}."
    )
    w("")
    pv = v.get("project", {})
    w(
        "Versions: orchestrator {o} (git {g}) with arq {a}, redis-py {r}, hiredis {h}, uvloop {u}; Celery {c} (kombu {k}, "
        "redis-py {cr}); SAQ {sq} (redis-py {sr}); arq {aq} (redis-py {ar}, hiredis {ah}).".format(
            o=pv.get("orchestrator"),
            g=data["git"]["describe"],
            a=pv.get("arq"),
            r=pv.get("redis"),
            h=pv.get("hiredis"),
            u=pv.get("uvloop"),
            c=v.get("celery", {}).get("celery"),
            k=v.get("celery", {}).get("kombu"),
            cr=v.get("celery", {}).get("redis"),
            sq=v.get("saq", {}).get("saq"),
            sr=v.get("saq", {}).get("redis"),
            aq=v.get("arq", {}).get("arq"),
            ar=v.get("arq", {}).get("redis"),
            ah=v.get("arq", {}).get("hiredis"),
        )
    )
    if data["git"]["uncommitted_product_files"]:
        w("")
        w(
            f"The product tree had uncommitted changes while this ran (measured as they were): "
            f"{', '.join(x.split()[-1] for x in data['git']['uncommitted_product_files'])}."
        )
    eff_pooled, eff_process = _effective(s, "pooled"), _effective(s, "process")
    w("")
    w(
        f"**Execution mode actually measured** (from the plugin's pid in each result): the `pooled` bench plugin ran "
        f"as **{eff_pooled}**, the `process` one as **{eff_process}**"
        + (
            " — `pooled` is not implemented in this build yet, so its rows measure the per-job process path."
            if eff_pooled == "process"
            else "."
        )
    )
    w("")
    return L


def _sec_targets(data: dict[str, Any], s: dict[str, Any], tg: list[dict[str, Any]], results_path: str) -> list[str]:
    L: list[str] = []
    w = L.append
    w("### Targets")
    w("")
    w("| target | measured | limit | met |")
    w("|---|---|---|---|")
    for t in tg:
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        w(f"| {t['target']} | {t['detail']} | {fmt(t['limit'], 2)} | {met} |")
    w("")
    return L


def _sec_queue(data: dict[str, Any], s: dict[str, Any], tg: list[dict[str, Any]], results_path: str) -> list[str]:
    L: list[str] = []
    w = L.append
    p = data["params"]
    tp = s["throughput"]
    pooled, process = (
        (tp.get("orchestrator:pooled") or {}).get("median"),
        (tp.get("orchestrator:process") or {}).get("median"),
    )
    miss = misses(data, s, tg)
    if miss:
        w("### Where we miss a target (this run)")
        w("")
        L.extend(miss)
        w("")
    w("### Queue path: no-op jobs/s end to end")
    w("")
    w(
        "Enqueue N no-op jobs from a separate load-generator process, clock from the first enqueue until "
        "the last job is done (or the deadline: then jobs done / time). One worker process per system; "
        "the orchestrator serves one queue at concurrency "
        f"{p['orchestrator_concurrency']}. Ratios are orchestrator ÷ that row (above 1: the orchestrator is faster)."
    )
    w("")
    w(
        "| system | jobs/s (median) | min-max | jobs done / N | worker CPU ms/job | Redis CPU ms/job | pooled ÷ | process ÷ |"
    )
    w("|---|---|---|---|---|---|---|---|")
    for key, e in tp.items():
        done = f"{fmt(med(e['done']))} / {e['n']:,}" + (" (deadline)" if e["cut_at_deadline"] else "")
        w(
            f"| {LABELS.get(key, key)} | {fmt(e['median'])} | {rng(e['jobs_per_s'])} | {done} | "
            f"{fmt(e['worker_cpu_ms_per_job'], 2)} | {fmt(e['redis_cpu_ms_per_job'], 2)} | "
            f"{ratio(pooled, e['median'])} | {ratio(process, e['median'])} |"
        )
    sp = s["spawn"]
    w(
        f"| bare spawn `{' '.join(Path(c).name if i == 0 else c for i, c in enumerate(sp['command'] or []))}`, "
        f"concurrency {sp['concurrency']} | {fmt(sp['spawns_per_s'])} | {rng(sp['spawns_per_s_all'])} | | | | "
        f"{ratio(pooled, sp['spawns_per_s'])} | {ratio(process, sp['spawns_per_s'])} |"
    )
    w("")
    return L


def _sec_latency(data: dict[str, Any], s: dict[str, Any], tg: list[dict[str, Any]], results_path: str) -> list[str]:
    L: list[str] = []
    w = L.append
    lat, sp = s["latency"], s["spawn"]
    lp, lq = (
        (lat.get("orchestrator:pooled") or {}).get("p50_median"),
        (lat.get("orchestrator:process") or {}).get("p50_median"),
    )
    w("### Round trip: trigger -> run -> result at the caller (idle worker, sequential)")
    w("")
    w("Ratios: orchestrator p50 ÷ that row's p50 (below 1: the orchestrator answers sooner).")
    w("")
    w("| system | jobs | p50 ms (median) | p50 min-max | p99 ms | pooled ÷ | process ÷ |")
    w("|---|---|---|---|---|---|---|")
    for key, e in lat.items():
        w(
            f"| {ROUNDTRIP_LABELS.get(key, key)} | {e['n']} | {fmt(e['p50_median'], 2)} | {rng(e['p50'], 2)} | "
            f"{fmt(e['p99_median'], 2)} | {ratio(lp, e['p50_median'])} | {ratio(lq, e['p50_median'])} |"
        )
    phase_rows = [(k, e["phases_ms"]) for k, e in lat.items() if e.get("phases_ms")]
    w(
        f"| bare JSON-line child spawn (`-I -S`, echo one line) | | {fmt(sp['jsonline_p50_ms'], 2)} | "
        f"{rng(sp['jsonline_p50_all'], 2)} | | {ratio(lp, sp['jsonline_p50_ms'])} | {ratio(lq, sp['jsonline_p50_ms'])} |"
    )
    w("")
    if phase_rows:
        w(
            "Where an orchestrator round trip goes (p50 of each phase, from the job records' timestamps, read after "
            "the timed loop):"
        )
        w("")
        w("| plugin | " + " | ".join(label for _, label in PHASES) + " |")
        w("|---|" + "---|" * len(PHASES))
        for key, ph in phase_rows:
            w(f"| `{key.split(':')[1]}` | " + " | ".join(fmt(ph.get(k), 2) for k, _ in PHASES) + " |")
        w("")
    return L


def _sec_redis(data: dict[str, Any], s: dict[str, Any], tg: list[dict[str, Any]], results_path: str) -> list[str]:
    L: list[str] = []
    w = L.append
    w("### Redis commands per job (enqueue -> result, sequential round trips)")
    w("")
    w(
        "`INFO commandstats` and `total_reads_processed` deltas around the round-trip loop, divided by its jobs "
        "(commands run inside Lua scripts included); *net* subtracts the idle background (the worker's polls and "
        "heartbeats measured in the footprint window) for the loop's duration. Socket reads are Redis read events: "
        "about one per round trip, a pipeline counts once. MONITOR (first repetition) splits client-sent commands "
        "from those inside Lua, and for the orchestrator counts those on its own record and indexes."
    )
    w("")
    w(
        "| system | commands/job | net of idle | socket reads/job | net of idle | client-sent (MONITOR) | inside Lua | on the orchestrator's record | idle cmds/s |"
    )
    w("|---|---|---|---|---|---|---|---|---|")
    for key, e in s["redis"].items():
        mon = e.get("monitor") or {}
        w(
            f"| {LABELS.get(key, key)} | {fmt(e['cmds_per_job'])} | {fmt(e['cmds_per_job_net'])} | "
            f"{fmt(e['reads_per_job'])} | {fmt(e['reads_per_job_net'])} | {fmt(mon.get('client_cmds_per_job'))} | "
            f"{fmt(mon.get('lua_cmds_per_job'))} | {fmt(mon.get('record_cmds_per_job')) if key.startswith('orch') else ''} | "
            f"{fmt(e['idle_cmds_per_s'])} |"
        )
    w("")
    return L


def _sec_footprint(data: dict[str, Any], s: dict[str, Any], tg: list[dict[str, Any]], results_path: str) -> list[str]:
    L: list[str] = []
    w = L.append
    foot = s["footprint"]
    of = foot.get("orchestrator") or {}
    w(f"### Footprint: idle worker ({of.get('window_s', '-')} s window after its first job(s) and a settle pause)")
    w("")
    w(
        "RSS is summed over the process tree from /proc (PSS too, which counts shared pages once). The orchestrator "
        "has run one job of each bench plugin first, so a warm `pooled` child (when that mode exists) is counted. "
        "Celery rows also show worker + `celery beat`. Ratio: orchestrator RSS ÷ that row."
    )
    w("")
    w(
        "| system | processes | RSS MB (median) | min-max | PSS MB | idle CPU % of a core | + beat: RSS MB | + beat: CPU % | orchestrator ÷ |"
    )
    w("|---|---|---|---|---|---|---|---|---|")
    for key, e in foot.items():
        base = e.get("with_beat_rss_median") or e["rss_median"]
        w(
            f"| {FOOTPRINT_LABELS.get(key, key)} | {e['processes']} | {fmt(e['rss_median'])} | {rng(e['rss_mb'])} | "
            f"{fmt(e['pss_median'])} | {fmt(e['cpu_median'], 2)} | {fmt(e.get('with_beat_rss_median'))} | "
            f"{fmt(e.get('with_beat_cpu_median'), 2)} | {ratio(of.get('rss_median'), base)} |"
        )
    if of.get("health_components"):
        w("")
        w(
            f"Components reported by the orchestrator's `/health` during the window: "
            f"{', '.join(of['health_components'])} (no scheduler or change capture exists in this build yet)."
        )
    w("")
    return L


def _sec_startup(data: dict[str, Any], s: dict[str, Any], tg: list[dict[str, Any]], results_path: str) -> list[str]:
    L: list[str] = []
    w = L.append
    st = s["startup"]
    w("### Start-up")
    w("")
    w(
        f"`orchestrator run` with no `REDIS_URL` (embedded redis-server started on a unix socket) and a fresh "
        f"`ORCH_STATE_DIR`, from exec to the first `GET /health` 200 (polled every 10 ms): median "
        f"**{fmt(st['median'], 3)} s**, range {rng(st['healthy_s'], 3)} over {len(st['healthy_s'])} start(s)"
        + (f", {st['failed']} failed" if st["failed"] else "")
        + f"; RSS of the `orchestrator run` process tree at that moment {fmt(st['rss_with_embedded_redis_mb'])} MB "
        "(the embedded redis-server counts only if it stays a child; a daemonized one does not)."
    )
    w("")
    return L


def _sec_launcher(data: dict[str, Any], s: dict[str, Any], tg: list[dict[str, Any]], results_path: str) -> list[str]:
    L: list[str] = []
    w = L.append
    w("### Plugin launch (this run)")
    w("")
    la = data.get("launcher") or {}
    if la.get("output"):
        o = la["output"]
        w(
            f"`{' '.join(Path(c).name if i < 2 else c for i, c in enumerate(la['cmd']))}` "
            "(see the Plugin launch section below for what it measures):"
        )
        w("")
        w("| plugin | bare p50 / p99 ms | launcher p50 / p99 ms | ratio of p50s |")
        w("|---|---|---|---|")
        for k, name in (("launch_no_deps", "no deps (`-I -S`)"), ("launch_in_venv", "in a venv (`-I`)")):
            x = o.get(k) or {}
            if x:
                w(
                    f"| {name} | {x['bare']['p50_ms']} / {x['bare']['p99_ms']} | {x['launcher']['p50_ms']} / "
                    f"{x['launcher']['p99_ms']} | {x['ratio_p50']} |"
                )
        vb = o.get("venv_build") or {}
        if vb:
            w("")
            w(
                f"Venv build for `{vb.get('dependency')}`: cold {vb.get('cold_s')} s, warm uv cache "
                f"{vb.get('warm_uv_cache_s')} s, already built {vb.get('cached_ensure', {}).get('p50_ms')} ms."
            )
    else:
        w(f"Not measured: {la.get('error', 'bench_launcher.py was not run')}.")
    w("")
    return L


def _sec_cdc(data: dict[str, Any], s: dict[str, Any], tg: list[dict[str, Any]], results_path: str) -> list[str]:
    L: list[str] = []
    w = L.append
    w("### Change capture (CDC)")
    w("")
    w(
        "Slot reserved: changes/s and commit-to-enqueued latency arrive with change capture (a later issue). "
        "The harness has a place for it: a `System`-like step in `bench/harness.py` (`Harness.session`) that "
        "starts MariaDB the way TESTING.md shows and a load generator under `bench/`, rendered here by "
        "`bench/report.py`."
    )
    return L


def _sec_profiles(data: dict[str, Any], s: dict[str, Any], tg: list[dict[str, Any]], results_path: str) -> list[str]:
    L: list[str] = []
    w = L.append
    prof = data.get("profile")
    if prof:
        w("")
        w("### Profiles (py-spy, orchestrator process, during an extra unrecorded throughput run)")
        for variant, pr in prof.items():
            if not isinstance(pr, dict) or "self_top" not in pr:
                w("")
                w(f"{variant}: {pr}")
                continue
            w("")
            w(
                f"`{variant}` mode: {pr['samples']} samples with the GIL held ({pr['gil_held_pct_of_wall']} % of "
                f"wall time at {pr['cmd'][pr['cmd'].index('--rate') + 1]} Hz). By package (self): "
                + ", ".join(f"{n} {pct}%" for n, _, pct in pr["self_by_package"])
                + "."
            )
            w("")
            w("| self % | frame |")
            w("|---|---|")
            for name, _, pct in pr["self_top"][:8]:
                w(f"| {pct} | `{name}` |")
            w("")
            w("| inclusive % | function |")
            w("|---|---|")
            for name, _, pct in pr["inclusive_top"][:12]:
                w(f"| {pct} | `{name}` |")
    w("")
    return L


def _sec_commands(data: dict[str, Any], s: dict[str, Any], tg: list[dict[str, Any]], results_path: str) -> list[str]:
    L: list[str] = []
    w = L.append
    w("### Exact commands")
    w("")
    c = data["commands"]
    root = str(Path(__file__).resolve().parent.parent) + "/"
    work = c.get("work_dir", "")

    def rel(text: str) -> str:
        return text.replace(work, "$WORK").replace(root, "") if work else text.replace(root, "")

    w(
        "Run from the checkout root; `$WORK` is the run's scratch folder under `bench/.work/`, `<port>`/`<pid>` "
        "are picked per run. Every load generator first runs one job (not timed) to know the worker is up; "
        "MONITOR counts are latency runs with fewer jobs while `redis-cli monitor` records."
    )
    w("")
    w("```")
    w(f"redis-server: {rel(' '.join(repr(x) if x == '' else x for x in c.get('redis', [])))}")
    for name, spec in c.get("workers", {}).items():
        env = " ".join(f"{k}='{val}'" for k, val in (spec.get("env") or {}).items())
        w(rel(f"{name}: (cd {spec.get('cwd')} && {env + ' ' if env else ''}{' '.join(spec['cmd'])})"))
    for name, cmd in c.get("loadgen", {}).items():
        if ":latency:" in name or ":throughput:" in name:
            w(rel(f"{name}: {' '.join(cmd)}"))
    if c.get("spawn_baseline"):
        w(rel(f"spawn baseline: {' '.join(c['spawn_baseline'])}"))
    if c.get("startup"):
        env = " ".join(f"{k}='{val}'" for k, val in c["startup"]["env"].items())
        w(rel(f"start-up: {env} {' '.join(c['startup']['cmd'])}"))
    w("```")
    return L


SECTIONS = (
    _sec_head,
    _sec_targets,
    _sec_queue,
    _sec_latency,
    _sec_redis,
    _sec_footprint,
    _sec_startup,
    _sec_launcher,
    _sec_cdc,
    _sec_profiles,
    _sec_commands,
)


def render(data: dict[str, Any], results_path: str) -> str:
    s = data.get("summary") or summarize(data)
    tg = data.get("targets") or targets(s)
    lines: list[str] = []
    for section in SECTIONS:
        lines.extend(section(data, s, tg, results_path))
    return "\n".join(lines)


def write_readme(data: dict[str, Any], readme: Path, results: Path) -> None:
    root = readme.parent
    rel = str(results.relative_to(root)) if results.is_relative_to(root) else str(results)
    block = f"{BEGIN}\n{render(data, rel)}\n{END}"
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n## Side by side: Celery, SAQ, arq (`bench/run`)\n\n" + block + "\n"
    readme.write_text(text)


def console_summary(data: dict[str, Any]) -> str:
    out = []
    for t in data.get("targets", []):
        met = "n/a " if t["met"] is None else ("ok  " if t["met"] else "MISS")
        out.append(f"  [{met}] {t['target']}: {t['detail']}")
    return "targets:\n" + "\n".join(out)


if __name__ == "__main__":
    path = Path(sys.argv[1])
    d = json.loads(path.read_text())
    finalize(d)
    bench = Path(__file__).resolve().parent
    write_readme(d, bench / "README.md", path.resolve())
    print(console_summary(d))
