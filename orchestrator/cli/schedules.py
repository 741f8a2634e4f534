"""`orchestrator schedules ...`: the parser and the command bodies (cli.py registers them).

Everything goes through the client; `add` validates the expression, the plugin and the params
before anything is stored (exit 2 with the reason otherwise).
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from orchestrator.cli.context import Command
from orchestrator.cli.exit_codes import OK
from orchestrator.cli.render import styled

if TYPE_CHECKING:
    from orchestrator.cli.local_plugins import LocalPlugins


def add_parser(sub: Any) -> None:
    """Add `schedules` and its actions to the top-level subparsers."""
    sched = sub.add_parser("schedules", help="cron and interval schedules: list, add, remove, pause, resume, run")
    ssub = sched.add_subparsers(dest="schedules_command", required=True, metavar="ACTION")
    ssub.add_parser("list", help="every schedule with its next and last run").add_argument(
        "--json", action="store_true"
    )
    show = ssub.add_parser("show", help="one schedule")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    add = ssub.add_parser("add", help="add a schedule (validated first; nothing stored on error)")
    add.add_argument("--id", required=True, dest="schedule_id")
    add.add_argument("--plugin", required=True)
    trigger = add.add_mutually_exclusive_group(required=True)
    trigger.add_argument("--cron", help='5-field cron expression, e.g. "0 2 * * *"')
    trigger.add_argument("--every", help="interval: 30s, 5m, 1h")
    add.add_argument("--timezone", help="time zone of --cron (IANA name; default UTC)")
    add.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="a parameter (repeatable)")
    add.add_argument("--params-json", metavar="JSON", help="parameters as one JSON object")
    add.add_argument("--queue")
    add.add_argument("--priority", help="high, default, low or 0-9")
    add.add_argument("--misfire-grace", help="a missed slot this late still fires once (default 60s)")
    add.add_argument("--overlap", choices=["skip", "allow"], default="skip")
    add.add_argument("--paused", action="store_true", help="store it disabled")
    add.add_argument("--replace", action="store_true", help="replace a schedule with the same id")
    add.add_argument("--json", action="store_true")
    for action, text in (
        ("remove", "delete a schedule"),
        ("pause", "stop firing (the definition is kept)"),
        ("resume", "fire again, from the next slot"),
        ("run", "fire once now"),
    ):
        p = ssub.add_parser(action, help=text)
        p.add_argument("id")
        p.add_argument("--json", action="store_true")
    history = ssub.add_parser("history", help="the last fires (job ids, states, durations) and skipped slots")
    history.add_argument("id")
    history.add_argument("--limit", type=int, default=20)
    history.add_argument("--json", action="store_true")


async def run(args: argparse.Namespace, cmd: Command) -> int:
    out = cmd.out
    action = args.schedules_command
    write = action in {"add", "remove", "pause", "resume", "run"}
    client = await cmd.client(write=write, local_plugins=action in {"add", "run"})
    if action == "list":
        rows = await client.list_schedules()
        out.json(rows) if args.json else out.out.print(schedules_table(rows))
    elif action == "show":
        row = await client.get_schedule(args.id)
        out.json(row) if args.json else out.out.print_json(json.dumps(row, default=str))
    elif action == "add":
        row = await client.add_schedule(_definition(args, await cmd.plugins()), replace=args.replace)
        out.json(row) if args.json else out.line(f"{row['id']}: {row['trigger']}, next run {_when(row)}")
    elif action == "history":
        entries = await client.schedule_history(args.id, limit=args.limit)
        out.json(entries) if args.json else out.out.print(history_table(args.id, entries))
    elif action == "run":
        job_id = await client.run_schedule(args.id)
        out.json({"id": args.id, "job_id": job_id}) if args.json else out.line(job_id)
    else:
        await {
            "remove": client.remove_schedule,
            "pause": client.pause_schedule,
            "resume": client.resume_schedule,
        }[action](args.id)
        done = {"remove": "removed", "pause": "paused", "resume": "resumed"}[action]
        out.json({"id": args.id, "action": done}) if args.json else out.line(f"{args.id} {done}")
    return OK


def _definition(args: argparse.Namespace, local: LocalPlugins) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": args.schedule_id,
        "plugin": args.plugin,
        # typed by the manifest, as for `trigger`; the add then validates them
        "params": local.params(args.plugin, args.param, args.params_json),
        "overlap": args.overlap,
        "enabled": not args.paused,
    }
    for key in ("cron", "every", "timezone", "queue", "priority"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    if args.misfire_grace is not None:
        data["misfire_grace_s"] = args.misfire_grace
    return data


def _local(ts: str | None) -> str:
    if not ts:
        return "-"
    moment = datetime.fromisoformat(ts)
    return f"{moment.astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')} ({moment.strftime('%H:%M:%SZ')})"


def _when(row: dict[str, Any]) -> str:
    return _local(row.get("next_run_at")) if row.get("enabled") else "- (paused)"


def schedules_table(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="schedules")
    for col in ("id", "plugin", "trigger", "next run (local / UTC)", "last run", "last state", "enabled"):
        table.add_column(col, no_wrap=col != "trigger")
    for r in rows:
        table.add_row(
            r["id"] + (" *" if r.get("note") else ""),
            r["plugin"],
            r["trigger"],
            _when(r),
            _local(r.get("last_run_at")),
            styled(r.get("last_state")),
            "yes" if r["enabled"] else "[yellow]paused[/]",
        )
    notes = [f"* {r['id']}: {r['note']}" for r in rows if r.get("note")]
    if notes:
        table.caption = "\n".join(notes)
    return table


def history_table(schedule_id: str, entries: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title=f"history of {schedule_id} (newest first)")
    for col in ("slot", "what", "job", "state", "duration", "detail"):
        table.add_column(col, no_wrap=col in {"slot", "job"})
    for e in entries:
        detail = e.get("reason") or ""
        if e["kind"] == "skipped":
            detail = f"{e['count']} slot(s) up to {e.get('last_slot')}: {detail}"
        table.add_row(
            _local(e.get("slot")),
            e["kind"],
            e.get("job_id") or "-",
            styled(e.get("state")),
            f"{e['duration_s']:.2f}s" if e.get("duration_s") is not None else "-",
            detail,
        )
    return table


__all__ = ["add_parser", "run"]
