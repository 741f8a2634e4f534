"""`orchestrator cdc ...`: the parser and the command bodies of change capture (through cdc/admin.py)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from orchestrator.cli.context import Command
from orchestrator.cli.exit_codes import FAILED, OK
from orchestrator.cli.render import Output
from orchestrator.config import Settings
from orchestrator.errors import ConfigError, JobError

if TYPE_CHECKING:
    from orchestrator.cdc.status import CdcStatus


def add_parser(sub: Any) -> None:
    """Add `cdc` and its actions to the top-level subparsers."""
    cdc = sub.add_parser("cdc", help="change capture: status, rules, install triggers, test, replay, snapshot")
    csub = cdc.add_subparsers(dest="cdc_command", required=True, metavar="ACTION")
    csub.add_parser("status", help="per rule: mode, position, lag, delivered, last error").add_argument(
        "--json", action="store_true"
    )
    csub.add_parser("rules", help="the configured rules").add_argument("--json", action="store_true")
    install = csub.add_parser("install", help="create the changelog table and the capture triggers (idempotent)")
    install.add_argument("--dry-run", action="store_true", help="print the SQL, change nothing")
    install.add_argument("--json", action="store_true")
    uninstall = csub.add_parser("uninstall", help="drop the capture triggers (and, with --drop-changelog, the table)")
    uninstall.add_argument("--dry-run", action="store_true", help="print the SQL, change nothing")
    uninstall.add_argument("--drop-changelog", action="store_true")
    uninstall.add_argument("--json", action="store_true")
    for action in ("enable", "disable"):
        p = csub.add_parser(action, help=f"{action} a rule (stored in Redis, seen by the leader's next poll)")
        p.add_argument("rule")
    test = csub.add_parser("test", help="dry run: which conditions match and which jobs would be enqueued")
    test.add_argument("rule")
    test.add_argument("--op", required=True, type=str.upper, choices=["INSERT", "UPDATE", "DELETE"])
    test.add_argument("--row", required=True, help="the row (after the change; for DELETE, the deleted row) as JSON")
    test.add_argument("--before", help="UPDATE/DELETE: the row before, as JSON")
    test.add_argument("--json", action="store_true")
    replay = csub.add_parser("replay", help="re-deliver a rule's changes from a changelog id (fresh job ids)")
    replay.add_argument("rule")
    replay.add_argument("--from", dest="from_id", type=int, required=True, metavar="CHANGE_ID")
    replay.add_argument("--json", action="store_true")
    snapshot = csub.add_parser("snapshot", help="enqueue every existing row as an INSERT event (resumable)")
    snapshot.add_argument("rule")
    snapshot.add_argument("--where", help="an SQL condition on the table's rows (trusted: it is your own SQL)")
    snapshot.add_argument("--restart", action="store_true", help="start over instead of resuming")
    snapshot.add_argument(
        "--no-wait", action="store_true", help="binlog mode: store the request and return (the leader takes it)"
    )
    snapshot.add_argument("--json", action="store_true")


def _rules_from_config(settings: Settings) -> list[dict[str, Any]]:
    """`cdc rules` without a Redis to ask for enable flags: the config as written."""
    return [r.model_dump(mode="json", exclude_none=True) for r in settings.cdc.all_rules()]


def _object(text: str | None, flag: str) -> dict[str, Any] | None:
    if text is None:
        return None
    value = json.loads(text)
    if not isinstance(value, dict):
        raise JobError(f"{flag} must be a JSON object")
    return value


async def run(args: argparse.Namespace, cmd: Command) -> int:
    out = cmd.out
    action = args.cdc_command
    if action == "rules":
        try:
            rules = await (await cmd.cdc_admin()).list_rules()
        except ConfigError:  # no Redis configured or running: the rules as the config has them
            rules = _rules_from_config(cmd.settings)
        return _rules(rules, args, out)
    write = action in {"enable", "disable", "replay", "snapshot"}
    admin = await cmd.cdc_admin(write=write, validates=action in {"test", "replay", "snapshot"})
    if action == "status":
        return _status(await admin.status(), args, out)
    if action in {"install", "uninstall"}:
        if action == "install":
            steps = await admin.install(dry_run=args.dry_run)
        else:
            steps = await admin.uninstall(dry_run=args.dry_run, drop_changelog=args.drop_changelog)
        return _steps(steps, args, out)
    if action in {"enable", "disable"}:
        await admin.set_enabled(args.rule, action == "enable")
        out.line(f"{args.rule} {action}d")
        return OK
    if action == "test":
        result = await admin.test(args.rule, args.op, _object(args.row, "--row"), _object(args.before, "--before"))
        return _test(result, args, out)
    if action == "replay":
        result = await admin.replay(args.rule, args.from_id)
        out.json(result) if args.json else out.line(
            f"{args.rule}: {result['changes']} change(s) from id {args.from_id} up to {result['upto']}: "
            f"{result['enqueued']} job(s) enqueued (tag {result['tag']})"
        )
        return OK
    result = await admin.snapshot(args.rule, args.where, restart=args.restart, wait=not args.no_wait)
    stream = f", {result['from_stream']} newer from the stream" if result.get("from_stream") else ""
    pending = " (requested: the leader takes it)" if result.get("done") is False else ""
    out.json(result) if args.json else out.line(
        f"{args.rule}: snapshot {result['snapshot_id']}{' (resumed)' if result['resumed'] else ''}{pending}: "
        f"{result['rows']} row(s) read{stream}, {result['enqueued']} job(s) enqueued"
    )
    return OK


def _rules(rules: list[dict[str, Any]], args: argparse.Namespace, out: Output) -> int:
    if args.json:
        out.json(rules)
        return OK
    for rule in rules:
        state = "enabled" if rule["enabled"] else "disabled"
        conditions = ", ".join(f"{c['column']} {c['op']} {c['value']!r}" for c in rule.get("conditions", []))
        targets = list(rule["plugins"]) + ([f"index {rule['index']['name']}"] if rule.get("index") else [])
        out.line(
            f"{rule['name']}: {rule['table']} [{rule['mode']}, {state}] {'/'.join(rule['operations'])} "
            f"-> {', '.join(targets)}" + (f" when {conditions}" if conditions else "")
        )
    return OK


def _status(cdc: CdcStatus, args: argparse.Namespace, out: Output) -> int:
    if args.json:
        out.json(cdc)
        return FAILED if cdc.get("server_checks") else OK
    if not cdc["enabled"]:
        out.line(f"change capture is not running: {cdc['reason']}")
    elif cdc["last_error"]:
        out.line(f"change capture: {cdc['last_error']}")
    checks = cdc.get("server_checks") or []
    for line in checks:
        out.line(f"binlog: {line}")
    for rule in cdc["rules"]:
        lag = f"{rule['lag_s']:.3f}s" if rule["lag_s"] is not None else "-"
        out.line(
            f"{rule['name']}: {rule['mode']} {'enabled' if rule['enabled'] else 'disabled'} "
            f"position={rule['position']} lag={lag} delivered={rule['delivered']}"
            + (f" error: {rule['last_error']}" if rule["last_error"] else "")
        )
    return FAILED if checks else OK


def _steps(steps: list[dict[str, Any]], args: argparse.Namespace, out: Output) -> int:
    if args.json:
        out.json(steps)
    else:
        for step in steps:
            out.line(f"-- {step['target']}: {step['action']}" + (f" ({step['error']})" if step["error"] else ""))
            if step["sql"] and (args.dry_run or step["action"] != "unchanged"):
                out.line(step["sql"] + ";")
    return FAILED if any(s["action"] == "error" for s in steps) else OK


def _test(result: dict[str, Any], args: argparse.Namespace, out: Output) -> int:
    if args.json:
        out.json(result)
        return OK
    for check in result["checks"]:
        out.line(f"{'✓' if check['passed'] else '✗'} {check['check']}")
    if not result["matched"]:
        out.line("no match: no job would be enqueued")
    for job in result["jobs"]:
        if job.get("error"):
            out.line(f"would fail: {job['plugin']}: {job['error']}")
        else:
            out.line(f"would enqueue {job['job_id']} on queue {job['queue']} with params {json.dumps(job['params'])}")
    out.line("(dry run: nothing enqueued)")
    return OK
