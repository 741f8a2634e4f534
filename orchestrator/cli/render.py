"""Terminal output for people (rich) and for scripts (--json). No logic lives here."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

STATE_STYLE = {
    "ready": "green",
    "succeeded": "green",
    "running": "cyan",
    "queued": "white",
    "deferred": "yellow",
    "not-ready": "yellow",
    "failed": "red",
    "invalid": "red",
    "cancelled": "magenta",
}


class Output:
    """stdout for results, stderr for errors; JSON when asked.

    rich is imported on first use: `orchestrator run` never draws a table, and its idle memory counts.
    """

    def __init__(self, *, as_json: bool = False) -> None:
        self.as_json = as_json
        self._out: Console | None = None
        self._err: Console | None = None

    @property
    def out(self) -> Console:
        if self._out is None:
            from rich.console import Console

            # Piped output is read by scripts and grep: never fold names and ids at 80 columns.
            self._out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
        return self._out

    @property
    def err(self) -> Console:
        if self._err is None:
            from rich.console import Console

            self._err = Console(stderr=True, soft_wrap=True)
        return self._err

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        sys.stdout.flush()

    def error(self, message: str) -> None:
        self.err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)

    def note(self, message: str) -> None:
        self.err.print(message, highlight=False)

    def line(self, text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def styled(state: str | None) -> str:
    if state is None:
        return "-"
    return f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"


def plugins_table(plugins: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(title="plugins")
    for col in ("name", "version", "enabled", "state", "queue"):
        table.add_column(col, no_wrap=True)
    for col in ("tags", "venv", "reason"):
        table.add_column(col, overflow="fold")
    for p in plugins:
        table.add_row(
            p["name"],
            str(p.get("version") or "-"),
            "yes" if p.get("enabled") else "no",
            styled(p.get("state")),
            str(p.get("queue") or "-"),
            ", ".join(p.get("tags") or []),
            str(p.get("venv") or "-"),
            p.get("reason") or "",
        )
    return table


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(title=f"jobs ({len(jobs)})")
    for col in (
        "job_id",
        "plugin",
        "state",
        "queue",
        "prio",
        "attempt",
        "source",
        "enqueued_at",
        "duration_s",
    ):
        table.add_column(col, no_wrap=True)
    table.add_column("error", overflow="fold")
    for j in jobs:
        table.add_row(
            j["job_id"],
            j["plugin"] or "-",
            styled(j["state"]),
            j.get("queue") or "-",
            str(j.get("priority")),
            str(j.get("attempt")),
            j.get("source") or "-",
            j.get("enqueued_at") or "-",
            f"{j['duration_s']:.3f}" if j.get("duration_s") is not None else "-",
            (j.get("error") or "")[:80],
        )
    return table


def stats_table(stats: dict[str, Any]) -> Table:
    from rich.table import Table

    table = Table(title="jobs by state")
    for state in stats["states"]:
        table.add_column(styled(state))
    table.add_row(*(str(n) for n in stats["states"].values()))
    return table


def queues_table(stats: dict[str, Any]) -> Table:
    from rich.table import Table

    table = Table(title="queues")
    for col in ("queue", "depth", "running", "concurrency"):
        table.add_column(col)
    for name, q in stats["queues"].items():
        table.add_row(name, str(q["depth"]), str(q["running"]), str(q["concurrency"]))
    return table


def job_detail(job: dict[str, Any]) -> Table:
    from rich.table import Table

    table = Table(show_header=False, title=f"job {job['job_id']}")
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in job.items():
        if key in {"traceback", "log_tail"} or value is None:
            continue
        shown = styled(value) if key == "state" else json.dumps(value) if isinstance(value, dict | list) else str(value)
        table.add_row(key, shown)
    return table
