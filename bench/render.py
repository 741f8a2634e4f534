"""The generated part of bench/README.md: markdown tables from a results file's summary.

    .venv/bin/python bench/render.py bench/results/<date>.json      # re-render the README tables

Only the text between `<!-- bench:begin -->` and `<!-- bench:end -->` is rewritten; everything else
(the "Plugin launch" section included) is left as it is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from report import console_summary, effective_isolation, finalize, fmt, med, ratio, rng, summarize, targets

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
    eff = effective_isolation(s, "pooled")

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
    eff_pooled, eff_process = effective_isolation(s, "pooled"), effective_isolation(s, "process")
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
        f"{p['orchestrator_concurrency']}. Ratios are orchestrator ÷ that row (above 1: the orchestrator is faster). "
        "CPU per job: the worker's whole process tree (children too), redis-server, the load generator, and "
        "their sum: every process of the run shares the machine's cores, so a rate R needs the sum to stay under "
        "cores x 1000 / R ms."
    )
    w("")
    w(
        "| system | jobs/s (median) | min-max | jobs done / N | worker CPU ms/job | Redis CPU ms/job "
        "| load generator CPU ms/job | all processes CPU ms/job | pooled ÷ | process ÷ |"
    )
    w("|---|---|---|---|---|---|---|---|---|---|")
    for key, e in tp.items():
        cut = e.get("cut_runs", 1 if e["cut_at_deadline"] else 0)
        done = f"{fmt(med(e['done']))} / {e['n']:,}" + (
            f" ({cut} of {e.get('runs', cut)} cut at the deadline)" if cut else ""
        )
        w(
            f"| {LABELS.get(key, key)} | {fmt(e['median'])} | {rng(e['jobs_per_s'])} | {done} | "
            f"{fmt(e['worker_cpu_ms_per_job'], 2)} | {fmt(e['redis_cpu_ms_per_job'], 2)} | "
            f"{fmt(e.get('loadgen_cpu_ms_per_job'), 2)} | {fmt(e.get('all_cpu_ms_per_job'), 2)} | "
            f"{ratio(pooled, e['median'])} | {ratio(process, e['median'])} |"
        )
    sp = s["spawn"]
    w(
        f"| bare spawn `{' '.join(Path(c).name if i == 0 else c for i, c in enumerate(sp['command'] or []))}`, "
        f"concurrency {sp['concurrency']} | {fmt(sp['spawns_per_s'])} | {rng(sp['spawns_per_s_all'])} | | | | | | "
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
    missed = [(k, e) for k, e in lat.items() if e.get("missed_notifications")]
    w(
        f"| bare JSON-line child spawn (`-I -S`, echo one line) | | {fmt(sp['jsonline_p50_ms'], 2)} | "
        f"{rng(sp['jsonline_p50_all'], 2)} | | {ratio(lp, sp['jsonline_p50_ms'])} | {ratio(lq, sp['jsonline_p50_ms'])} |"
    )
    w("")
    for key, e in missed:
        w(
            f"{ROUNDTRIP_LABELS.get(key, key)}: {e['missed_notifications']} of {e['jobs']} round trips missed their "
            "notification (SAQ's `refresh()` reads the job and then subscribes: a job finishing in between is "
            "not notified; the load generator re-reads after 1 s), which shows in the p99."
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


def _launch_rows(o: dict[str, Any]) -> list[str]:
    """Latency rows from whatever `launch_*` sections bench_launcher.py printed (its shape evolves)."""
    rows = []
    for section, x in o.items():
        if not section.startswith("launch_") or not isinstance(x, dict):
            continue
        bare = (x.get("bare") or {}).get("p50_ms")
        ratios = x.get("ratio_p50_to_bare") or {}
        for mode, v in x.items():
            if mode == "launcher" and "process" in x:
                continue  # an older name for the same figure
            if isinstance(v, dict) and "p50_ms" in v:
                r = ratios.get(mode, x.get("ratio_p50") if mode == "launcher" else None)
                if r is None and bare and mode != "bare":
                    r = round(v["p50_ms"] / bare, 2)
                rows.append(
                    f"| {section[len('launch_') :]} | {mode} | {v['p50_ms']} | {v.get('p99_ms', '-')} | "
                    f"{'' if mode == 'bare' else r} |"
                )
    return rows


def _throughput_rows(o: dict[str, Any]) -> list[str]:
    rows = []
    for section, x in o.items():
        if not section.startswith("throughput_") or not isinstance(x, dict):
            continue
        for conc, modes in x.items():
            if not isinstance(modes, dict):
                continue
            for mode, v in modes.items():
                if isinstance(v, dict) and "jobs_per_s" in v:
                    rows.append(
                        f"| {section[len('throughput_') :]} | {conc} | {mode} | {v['jobs_per_s']} | "
                        f"{v.get('parent_cpu_ms_per_job', '-')} |"
                    )
    return rows


def _sec_launcher(data: dict[str, Any], s: dict[str, Any], tg: list[dict[str, Any]], results_path: str) -> list[str]:
    L: list[str] = []
    w = L.append
    w("### Plugin launch (this run)")
    w("")
    la = data.get("launcher") or {}
    o = la.get("output")
    if not o:
        w(f"Not measured: {la.get('error', 'bench_launcher.py was not run')}.")
        w("")
        return L
    w(
        f"`{' '.join(Path(c).name if i < 2 else c for i, c in enumerate(la['cmd']))}` "
        "(the Plugin launch section above says what it measures; its full output is in the results file):"
    )
    w("")
    rows = _launch_rows(o)
    if rows:
        w("| plugin | mode | p50 ms | p99 ms | p50 ÷ bare |")
        w("|---|---|---|---|---|")
        L.extend(rows)
        w("")
    rows = _throughput_rows(o)
    if rows:
        w("| plugin | concurrency | mode | jobs/s | parent CPU ms/job |")
        w("|---|---|---|---|---|")
        L.extend(rows)
        w("")
    vb = o.get("venv_build") or {}
    if vb:
        w(
            f"Venv build for `{vb.get('dependency')}`: cold {vb.get('cold_s')} s, warm uv cache "
            f"{vb.get('warm_uv_cache_s')} s, already built {(vb.get('cached_ensure') or {}).get('p50_ms')} ms."
        )
        w("")
    return L


def _sec_cdc(data: dict[str, Any], s: dict[str, Any], tg: list[dict[str, Any]], results_path: str) -> list[str]:
    L: list[str] = []
    w = L.append
    w("### Change capture (CDC)")
    w("")
    w(
        "Not measured yet: changes/s and commit-to-enqueued latency come with change capture (a later issue). "
        "Where it plugs in: a step per repetition in `bench/harness.py` `main()` (next to the start-ups) that "
        "starts a private MariaDB as shared/TESTING.md shows and `orchestrator run` with `DATABASE_URL` and one "
        "rule, plus a load generator under `bench/` that commits rows and waits for their jobs; "
        "`bench/report.py` summarizes its runs and `bench/render.py` puts the table here."
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
    root, results = readme.parent.resolve(), results.resolve()  # `--output` may be relative to the cwd
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


if __name__ == "__main__":
    path = Path(sys.argv[1])
    d = json.loads(path.read_text())
    finalize(d)
    write_readme(d, Path(__file__).resolve().parent / "README.md", path.resolve())
    print(console_summary(d))
