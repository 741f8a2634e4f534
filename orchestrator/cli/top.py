"""`orchestrator top`: the cluster at a glance in a terminal, redrawn every second.

Queues, running jobs with their elapsed time, the last finished jobs, the latest workflows, the
failure rate of the last hour, the instances and the leader. It needs only `REDIS_URL` (queues and plugins are read as the
running instances published them), so it works from any machine that reaches Redis. Every number
comes from the client's read side, the same reads behind `/status` and the dashboard.

`q` (or Ctrl-C, or SIGTERM) leaves; the terminal's modes and screen are restored on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from orchestrator.cli.context import Command
from orchestrator.cli.exit_codes import FAILED, OK
from orchestrator.cli.render import STATE_STYLE
from orchestrator.logs import mask_url

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table

    from orchestrator.client import Client

_RUNNING_ROWS = 15
_FINISHED_ROWS = 10
_WORKFLOW_ROWS = 5


def add_parser(sub: Any) -> None:
    """`orchestrator top` in the CLI's subcommands (cli.py calls this once)."""
    top = sub.add_parser("top", help="a live view of queues, running jobs and instances (q to quit)")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    top.add_argument("--once", action="store_true", help="print one frame and exit (also when not on a terminal)")


@dataclass(frozen=True)
class Snapshot:
    """One frame's worth of reads."""

    at: float
    stats: dict[str, Any]
    running: list[dict[str, Any]]
    finished: list[dict[str, Any]]
    throughput: dict[str, Any]
    instances: dict[str, dict[str, Any]]
    leader: dict[str, Any] | None
    throttles: dict[str, Any]
    workflows: list[dict[str, Any]]


async def read_snapshot(client: Client) -> Snapshot:
    stats, running, finished, throughput, instances, leader = await asyncio.gather(
        client.stats(),
        client.jobs_page(state="running", limit=_RUNNING_ROWS),
        client.finished(limit=_FINISHED_ROWS),
        client.throughput(window_s=3600, bucket_s=3600),
        client.instances(),
        client.leader(),
    )
    throttles = await client.throttles()
    workflows = await client.recent_workflows(_WORKFLOW_ROWS)  # more reads: gather's typing stops at six
    return Snapshot(time.time(), stats, running, finished, throughput, instances, leader, dict(throttles), workflows)


# -- rendering (data goes in as rich Text, never as markup) --
def _ago(value: str | float | None, now: float) -> str:
    if value is None:
        return "-"
    ts = value if isinstance(value, float | int) else datetime.fromisoformat(value).timestamp()
    return _span(now - ts)


def _span(seconds: float) -> str:
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _state(state: str | None) -> Any:
    from rich.text import Text

    return Text(state or "-", style=STATE_STYLE.get(state or "", "white"))


def _table(title: str, *columns: str) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in columns:
        table.add_column(col, no_wrap=col not in {"error", "queues"}, overflow="ellipsis")
    return table


def render(snap: Snapshot, redis_label: str) -> RenderableType:
    from rich.console import Group
    from rich.text import Text

    states = snap.stats["states"]
    rate = snap.throughput.get("failure_rate")
    leader = snap.leader["instance_id"] if snap.leader else None
    alive = sum(1 for i in snap.instances.values() if i.get("alive"))
    header = Text.assemble(
        ("orchestrator top", "bold"),
        f"  {time.strftime('%H:%M:%S', time.localtime(snap.at))}  redis {redis_label}  ",
        (f"leader {leader} (token {snap.leader['token']})" if snap.leader else "no leader", "cyan"),
        f"  instances {alive}/{len(snap.instances)} alive",
        "  failure rate (1h) ",
        ("-" if rate is None else f"{rate * 100:.1f}%", "red" if rate else "green"),
        ("   q to quit", "dim"),
    )
    counts = Text("jobs  ")
    for state, n in states.items():
        counts.append(f"{state} ", style=STATE_STYLE.get(state, "white"))
        counts.append(f"{n}   ", style="bold")

    queues = _table("queues", "queue", "depth", "running", "concurrency")
    for name, q in snap.stats["queues"].items():
        queues.add_row(Text(name), str(q["depth"]), str(q["running"]), str(q["concurrency"]))

    running = _table(
        f"running ({states.get('running', 0)})", "job", "plugin", "queue", "attempt", "elapsed", "instance"
    )
    for job in snap.running:
        running.add_row(
            Text(job["job_id"]), Text(job["plugin"] or "-"), Text(job["queue"] or "-"), str(job["attempt"]),
            _ago(job["started_at"], snap.at), Text(job.get("instance") or "-"),
        )  # fmt: skip

    finished = _table("last finished", "job", "plugin", "state", "duration", "finished", "error")
    for job in snap.finished:
        duration = f"{job['duration_s']:.2f}s" if job.get("duration_s") is not None else "-"
        error = (job.get("error") or "").strip().split("\n", 1)[0][:120]
        finished.add_row(
            Text(job["job_id"]), Text(job["plugin"] or "-"), _state(job["state"]), duration,
            _ago(job["finished_at"], snap.at) + " ago", Text(error, style="red"),
        )  # fmt: skip

    workflows = _table("latest workflows", "workflow", "name", "state", "jobs", "started", "ended")
    for wf in snap.workflows:
        ended = _ago(wf["finished_at"], snap.at) + " ago" if wf.get("finished_at") else "-"
        workflows.add_row(
            Text(wf["workflow_id"]), Text(wf.get("name") or "-"), _state(wf["state"]), str(wf["jobs"]),
            _ago(wf["created_at"], snap.at) + " ago", ended,
        )  # fmt: skip

    instances = _table("instances", "instance", "role", "queues", "up", "seen")
    for instance_id, info in snap.instances.items():
        name = Text(instance_id, style="" if info.get("alive") else "dim strike")
        if instance_id == leader:
            name.append(" ★ leader", style="cyan")
        instances.add_row(
            name, Text(str(info.get("role") or "-")),
            Text(", ".join(f"{q}({c})" for q, c in (info.get("queues") or {}).items()) or "none"),
            _ago(info.get("started_at"), snap.at), _ago(info.get("seen_at"), snap.at) + " ago",
        )  # fmt: skip
    parts: list[RenderableType] = [header, counts, queues, running, finished]
    if snap.workflows:
        parts.append(workflows)
    parts.append(instances)
    if snap.throttles:
        parts.append(_throttles(snap.throttles))
    return Group(*parts)


def _throttles(throttles: dict[str, Any]) -> Table:
    """Each throttled plugin's limits and, per key in use, its running and held jobs."""
    from rich.text import Text

    table = _table("throttles", "plugin", "key", "running", "held", "limits", "refused")
    for plugin, entry in throttles.items():
        limits = ", ".join(f"{k} {v}" for k, v in entry["limits"].items()) + (" (live)" if entry["live"] else "")
        rows = entry["keys"] or [{"key": "", "running": 0, "held": 0}]
        for key in rows:
            table.add_row(
                Text(plugin), Text(key["key"] or "(all)"), str(key["running"]), str(key["held"]), Text(limits),
                str(entry["refused"]),
            )  # fmt: skip
    return table


def render_error(error: Exception, redis_label: str) -> RenderableType:
    from rich.text import Text

    return Text.assemble(
        ("orchestrator top", "bold"), f"  redis {redis_label}\n\n", ("redis unavailable: ", "red"), str(error),
        ("\n\nretrying every second; q to quit", "dim"),
    )  # fmt: skip


# -- the terminal --
@contextlib.contextmanager
def _keys(on_quit: Any) -> Iterator[None]:
    """stdin in cbreak mode (keys without Enter, no echo; Ctrl-C still signals), restored on exit."""
    import termios
    import tty

    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)

    def on_input() -> None:
        try:
            data = os.read(fd, 64)
        except OSError:
            data = b""
        if not data or b"q" in data.lower():  # q, Q, or stdin closed
            on_quit()

    tty.setcbreak(fd, termios.TCSANOW)
    loop.add_reader(fd, on_input)
    try:
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def top(args: argparse.Namespace, cmd: Command) -> int:
    from redis.exceptions import RedisError
    from rich.console import Console

    from orchestrator.client import Client

    redis, url = await cmd.redis()
    # Queues and manifests as the running instances published them: no local config needed.
    client = Client(redis, result_ttl_s=cmd.settings.result_ttl_s)
    label = mask_url(url)
    if args.once or not (sys.stdin.isatty() and sys.stdout.isatty()):
        try:
            frame = render(await read_snapshot(client), label)
        except (RedisError, OSError) as e:
            cmd.out.error(f"redis unavailable at {label}: {e}")
            return FAILED
        # Piped into a file or grep: do not cut ids at 80 columns.
        Console(width=None if sys.stdout.isatty() else 200).print(frame)
        return OK
    await _live(client, label, max(args.interval, 0.1))
    return OK


async def _live(client: Client, label: str, interval_s: float) -> None:
    from redis.exceptions import RedisError
    from rich.console import Console
    from rich.live import Live

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        with _keys(stop.set), Live(console=Console(), screen=True, auto_refresh=False, transient=True) as live:
            while not stop.is_set():
                try:
                    frame = render(await read_snapshot(client), label)
                except (RedisError, OSError) as e:
                    frame = render_error(e, label)
                live.update(frame, refresh=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
