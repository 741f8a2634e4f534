"""`orchestrator workflow ...`: run (a JSON file, stdin or a workflow named in config), status, cancel."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.cli.context import Command
from orchestrator.cli.exit_codes import FAILED, OK
from orchestrator.cli.render import styled


def add_parser(sub: Any, parse_duration: Callable[[str], float]) -> None:
    """Add `workflow` and its actions to the top-level subparsers (durations parsed as main.py does)."""
    wf = sub.add_parser("workflow", help="chains, groups and chords of jobs: run, status, cancel")
    wsub = wf.add_subparsers(dest="workflow_command", required=True, metavar="ACTION")
    run = wsub.add_parser(
        "run", help='start one: a JSON file ({"chain": [...]}), - for stdin, or a name in [workflows]'
    )
    run.add_argument("source", metavar="FILE|-|NAME")
    run.add_argument("--name", help="shown with the workflow (default: the configured name)")
    run.add_argument("--wait", action="store_true", help="wait for its end (exit 1 unless it succeeds)")
    run.add_argument("--timeout", type=parse_duration, help="with --wait: give up after this long")
    run.add_argument("--json", action="store_true")
    for action, text in (("status", "a workflow's state and steps"), ("cancel", "stop a workflow")):
        p = wsub.add_parser(action, help=text)
        p.add_argument("id")
        p.add_argument("--json", action="store_true")


async def run(args: argparse.Namespace, cmd: Command) -> int:
    action = args.workflow_command
    out = cmd.out
    if action == "run":
        return await _run(args, cmd)
    client = await cmd.client()
    if action == "cancel":
        state = await client.cancel_workflow(args.id)
        out.json({"workflow_id": args.id, "state": state}) if args.json else out.line(styled(state))
        return OK
    shown = await client.workflow_status(args.id)
    _show(shown, cmd, as_json=args.json)
    return OK


async def _run(args: argparse.Namespace, cmd: Command) -> int:
    source, name = args.source, args.name
    if source == "-":
        steps: Any = json.loads(await asyncio.to_thread(sys.stdin.read))
    elif source in cmd.settings.workflows and not await asyncio.to_thread(Path(source).exists):
        steps, name = cmd.settings.named_workflow(source), name or source
    else:
        steps = json.loads(await asyncio.to_thread(Path(source).read_text))
    if isinstance(steps, dict) and "name" in steps and not name:
        steps = dict(steps)
        name = steps.pop("name")
    client = await cmd.client(write=True, local_plugins=True)
    workflow_id = await client.workflow(steps, name=name, source="cli")
    if not args.wait:
        cmd.out.json({"workflow_id": workflow_id}) if args.json else cmd.out.line(workflow_id)
        return OK
    try:
        shown = await client.wait(workflow_id, timeout_s=args.timeout)
    except TimeoutError:
        cmd.out.error(f"workflow {workflow_id} still runs after {args.timeout}s")
        return FAILED
    _show(shown, cmd, as_json=args.json)
    return OK if shown["state"] == "succeeded" else FAILED


def _show(shown: dict[str, Any], cmd: Command, *, as_json: bool) -> None:
    if as_json:
        cmd.out.json(shown)
        return
    name = f" ({shown['name']})" if shown.get("name") else ""
    cmd.out.line(f"workflow {shown['workflow_id']}{name}: {styled(shown['state'])}")
    if shown.get("error"):
        cmd.out.line(f"  {shown['error']}")
    for line in _tree_lines(shown["steps"], 1):
        cmd.out.line(line)


def _tree_lines(node: dict[str, Any], depth: int) -> list[str]:
    pad = "  " * depth
    if node["kind"] == "job":
        return [f"{pad}{node['plugin']}  {styled(node['state'])}  {node['job_id']}"]
    head = f"{pad}{node['kind']}" + (" (on_failure=continue)" if node.get("on_failure") == "continue" else "")
    return [head] + [line for child in node["steps"] for line in _tree_lines(child, depth + 1)]
