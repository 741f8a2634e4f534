"""Every command. Thin: parse, call the app or the client, render.

Exit codes: 0 success, 1 the thing failed (a job failed, unhealthy, not found), 2 usage or
validation error (nothing was changed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
from collections.abc import Awaitable
from datetime import datetime
from pathlib import Path

from orchestrator.cli import cdc as commands_cdc
from orchestrator.cli import commands
from orchestrator.cli import es as commands_es
from orchestrator.cli import old_verbs as cli_compat
from orchestrator.cli import schedules as commands_schedules
from orchestrator.cli import top as commands_top
from orchestrator.cli import workflows as commands_workflows
from orchestrator.cli.context import Command, Handler, run_command
from orchestrator.cli.render import Output
from orchestrator.config import load_settings
from orchestrator.errors import (
    ChangeFeedError,
    ConfigError,
    ConflictError,
    JobError,
    NotFoundError,
    OrchestratorError,
    PluginError,
    QueueFull,
    StartupError,
)
from orchestrator.logs import configure

EXIT_FAILED, EXIT_USAGE = 1, 2
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text: str) -> float:
    """`30s`, `5m`, `1.5h`, `250ms` or plain seconds."""
    match = _DURATION.fullmatch(text)
    if not match:
        msg = f"bad duration {text!r}: use e.g. 30s, 5m, 2h"
        raise argparse.ArgumentTypeError(msg)
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def parse_at(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError as e:
        msg = f"bad --at {text!r}: use ISO 8601, e.g. 2026-11-24T02:00:00+00:00"
        raise argparse.ArgumentTypeError(msg) from e


def _params_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="a parameter (repeatable)")
    p.add_argument("--params-json", metavar="JSON", help="parameters as one JSON object")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="One process for jobs, schedules, change capture and plugins.",
        epilog=cli_compat.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="TOML config file (default: ./orchestrator.toml if present)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run workers, scheduler, change capture and the status endpoint")
    run.add_argument("--config", type=Path, dest="run_config", help=argparse.SUPPRESS)
    run.add_argument("--queues", help="serve only these queues (comma-separated)")
    run.add_argument("--role", choices=["all", "worker", "leader"], default="all")

    health = sub.add_parser("health", help="probe /health of a running orchestrator (exit 0 healthy, 1 not)")
    health.add_argument("--url", help="base URL (default: from ORCH_HTTP_HOST/ORCH_HTTP_PORT)")
    health.add_argument("--timeout", type=float, default=3.0)
    health.add_argument("--json", action="store_true")

    config = sub.add_parser("config", help="print the effective settings (secrets masked)")
    config.add_argument("--json", action="store_true")

    plugins = sub.add_parser("plugins", help="list, show, test, install, scaffold, enable or disable plugins")
    psub = plugins.add_subparsers(dest="plugins_command", required=True, metavar="ACTION")
    psub.add_parser("list", help="every plugin with its state").add_argument("--json", action="store_true")
    show = psub.add_parser("show", help="one plugin's manifest, parameters and venv")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    test = psub.add_parser("test", help="run a plugin once now through the launcher (no queue)")
    test.add_argument("name")
    _params_options(test)
    test.add_argument("--timeout", type=parse_duration, help="override the manifest timeout")
    test.add_argument("--json", action="store_true")
    install = psub.add_parser("install", help="build plugin virtualenvs")
    install.add_argument("names", nargs="*")
    psub.add_parser("new", help="scaffold a plugin folder").add_argument("name")
    psub.add_parser("enable", help="allow triggers (seen by every instance)").add_argument("name")
    psub.add_parser("disable", help="refuse new triggers (seen by every instance)").add_argument("name")
    throttle = psub.add_parser(
        "throttle", help="show or change a plugin's cluster-wide limits live (every instance, within a second)"
    )
    throttle.add_argument("name")
    throttle.add_argument("--concurrency", type=_limit_int, help="most running at once (per key); 'none' removes it")
    throttle.add_argument("--rate", type=_limit_text, help="most starts per s/m/h, like 10/s; 'none' removes it")
    throttle.add_argument("--key", type=_limit_text, help="a template over params, like '{user_id}'; 'none' removes it")
    throttle.add_argument("--max-queued", type=_limit_int, help="most waiting (per key); 'none' removes it")
    throttle.add_argument("--reset", action="store_true", help="drop the live change: config and manifest again")
    throttle.add_argument("--json", action="store_true")
    psub.add_parser("reload", help="make every running instance re-read the plugins folder").add_argument(
        "name", nargs="?", help="one plugin (default: all)"
    )

    trigger = sub.add_parser("trigger", help="enqueue a job; prints its id")
    trigger.add_argument("name")
    _params_options(trigger)
    trigger.add_argument("--priority", help="high, default, low or 0-9 (0 most urgent)")
    trigger.add_argument("--queue")
    trigger.add_argument("--job-id", help="your own id; an existing id is not enqueued again")
    when = trigger.add_mutually_exclusive_group()
    when.add_argument("--defer", type=parse_duration, help="start no earlier than this from now (30s, 5m)")
    when.add_argument("--at", type=parse_at, help="start no earlier than this ISO 8601 time")
    trigger.add_argument("--wait", action="store_true", help="wait for the result (exit 1 if the job fails)")
    trigger.add_argument("--timeout", type=parse_duration, help="with --wait: give up after this long")
    trigger.add_argument("--json", action="store_true")

    status = sub.add_parser("status", help="a job's or a batch's state")
    status.add_argument("id")
    status.add_argument("--json", action="store_true")

    batch = sub.add_parser("batch", help='enqueue a JSON list of {"plugin", "params"} (FILE or - for stdin)')
    batch.add_argument("file")
    batch.add_argument("--wait", action="store_true", help="show progress until every job is final")
    batch.add_argument("--timeout", type=parse_duration)
    batch.add_argument("--json", action="store_true")

    jobs = sub.add_parser("jobs", help="list, stats, logs, cancel, retry")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    jlist = jsub.add_parser("list", help="jobs, newest first")
    jlist.add_argument("--state", choices=["queued", "deferred", "running", "succeeded", "failed", "cancelled"])
    jlist.add_argument("--plugin")
    jlist.add_argument("--limit", type=int, default=50)
    jlist.add_argument("--json", action="store_true")
    jsub.add_parser("stats", help="counts per state, depth and running per queue").add_argument(
        "--json", action="store_true"
    )
    logs = jsub.add_parser("logs", help="a job's captured output")
    logs.add_argument("id")
    logs.add_argument("--follow", "-f", action="store_true")
    cancel = jsub.add_parser("cancel", help="remove a queued job or stop a running one")
    cancel.add_argument("id")
    cancel.add_argument("--json", action="store_true")
    retry = jsub.add_parser("retry", help="run a failed or cancelled job again with the same params")
    retry.add_argument("id")
    retry.add_argument("--json", action="store_true")
    delete = jsub.add_parser("delete", help="delete a job's record, log and index entries (not while it runs)")
    delete.add_argument("id")
    delete.add_argument("--json", action="store_true")
    purge = jsub.add_parser("purge", help="delete final jobs by state, age and plugin")
    purge.add_argument("--state", required=True, choices=["succeeded", "failed", "cancelled"])
    purge.add_argument("--older-than", type=parse_duration, default=0.0, metavar="AGE", help="e.g. 3d, 12h")
    purge.add_argument("--plugin")
    purge.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    purge.add_argument("--json", action="store_true")
    commands_top.add_parser(sub)  # issue 13: orchestrator top
    cli_compat.add_parsers(sub, _params_options)
    commands_schedules.add_parser(sub)  # schedules
    commands_workflows.add_parser(sub, parse_duration)  # workflows
    commands_cdc.add_parser(sub)  # change capture: `orchestrator cdc ...`
    commands_es.add_parser(sub)  # search index: `orchestrator es check`
    return parser


HANDLERS: dict[str, Handler] = {
    "run": commands.run,
    "health": commands.health,
    "config": commands.show_config,
    "plugins": commands.plugins,
    "trigger": commands.trigger,
    "status": commands.status,
    "batch": commands.batch,
    "jobs": commands.jobs,
    "top": commands_top.top,
    "schedules": commands_schedules.run,  # schedules
    "workflow": commands_workflows.run,  # workflows
    **cli_compat.HANDLERS,
    "cdc": commands_cdc.run,
    "es": commands_es.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # plugin parameters as options (`trigger NAME --operation sync_data`), as the old CLI took them
        if args.command not in cli_compat.PARAMS_AS_OPTIONS or not hasattr(args, "param"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        try:
            args.param = cli_compat.params_from_options(extra) + args.param
        except ValueError as e:
            parser.error(str(e))
    out = Output(as_json=getattr(args, "json", False))
    config_path = getattr(args, "run_config", None) or args.config
    try:
        settings = load_settings(config_path)
    except ConfigError as e:
        out.error(str(e))
        return EXIT_USAGE
    configure(settings.log_level if args.command == "run" else "WARNING", settings.log_format)
    command = run_command(HANDLERS[args.command], args, Command(settings, out))
    return _run_async(command, out, long_running=args.command == "run")


def _run_async(coro: Awaitable[int], out: Output, *, long_running: bool) -> int:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        if not long_running:
            # Ctrl-C in a short command: stop quietly.
            runner.get_loop().add_signal_handler(signal.SIGINT, _interrupt)
        try:
            return runner.run(_guard(coro, out))
        except KeyboardInterrupt:
            return 130


_NONE = "none"


def _limit_int(text: str) -> int | str:
    """A positive count, or 'none' (the limit is removed)."""
    if text.lower() == _NONE:
        return _NONE
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number or 'none', got {text!r}")
    return value


def _limit_text(text: str) -> str:
    return _NONE if text.lower() == _NONE else text


def _interrupt() -> None:
    raise KeyboardInterrupt


async def _guard(coro: Awaitable[int], out: Output) -> int:
    """Map the error tree to exit codes in one place."""
    try:
        return await _unwrap_groups(coro)
    except (StartupError, ChangeFeedError) as e:
        out.error(str(e))
        return EXIT_FAILED
    except (ConfigError, JobError, PluginError) as e:
        out.error(str(e))
        if out.as_json:
            out.json({"error": str(e), **({"problems": e.problems} if hasattr(e, "problems") else {})})
        return EXIT_USAGE
    except (NotFoundError, ConflictError, QueueFull) as e:
        out.error(str(e))
        return EXIT_FAILED
    except json.JSONDecodeError as e:
        out.error(f"bad JSON: {e}")
        return EXIT_USAGE


async def _unwrap_groups(coro: Awaitable[int]) -> int:
    """A component that fails inside the app's TaskGroup arrives as an ExceptionGroup: surface the
    first error of ours so it gets its one-line message and exit code, not a traceback."""
    try:
        return await coro
    except* OrchestratorError as group:
        raise _first(group) from None


def _first(group: BaseExceptionGroup[OrchestratorError]) -> OrchestratorError:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


def entry() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
