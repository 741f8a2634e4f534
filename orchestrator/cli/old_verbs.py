"""The old scheduler's verbs, mapped onto the commands that replace them (issue: moving over).

Each verb prints exactly what its new command prints (scripts that parse the output keep working)
and returns the same exit code. They are listed in `--help` under "compatibility", not among the
main commands. Also here: plugin parameters given as options (`trigger NAME --operation sync_data
--batch-size 50`), as the old `trigger` took them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from orchestrator.cli import commands
from orchestrator.cli import top as commands_top
from orchestrator.cli.context import Command, Handler

EPILOG = """\
compatibility (the old scheduler's commands, each the same as the new one):
  list-plugins             = plugins list
  test-plugin NAME         = plugins test NAME
  worker                   = run --role worker
  beat                     = run --role leader
  monitor                  = top
  status TASK_ID           = status (unchanged)
  health                   = health (unchanged)
  trigger NAME --operation X --batch-size 50: plugin parameters as options (dashes become underscores)
"""

# Commands whose unknown `--option value` pairs are plugin parameters.
PARAMS_AS_OPTIONS = frozenset({"trigger", "test-plugin", "plugins"})


def add_parsers(sub: Any, params_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Hidden from the main command list (no `help=`); EPILOG lists them."""
    sub.add_parser("list-plugins").add_argument("--json", action="store_true")
    test = sub.add_parser("test-plugin")
    test.add_argument("name")
    params_options(test)
    test.add_argument("--timeout", type=float, help="override the manifest timeout (seconds)")
    test.add_argument("--json", action="store_true")
    for verb in ("worker", "beat"):
        p = sub.add_parser(verb)
        p.add_argument("--queues", help="serve only these queues (comma-separated)")
    monitor = sub.add_parser("monitor")
    monitor.add_argument("--interval", type=float, default=1.0)
    monitor.add_argument("--once", action="store_true")


def _as(handler: Handler, **values: Any) -> Handler:
    async def run(args: argparse.Namespace, cmd: Command) -> int:
        for key, value in values.items():
            setattr(args, key, value)
        return await handler(args, cmd)

    return run


HANDLERS: dict[str, Handler] = {
    "list-plugins": _as(commands.plugins, plugins_command="list"),
    "test-plugin": _as(commands.plugins, plugins_command="test"),
    "worker": _as(commands.run, role="worker"),
    "beat": _as(commands.run, role="leader", queues=None),
    "monitor": commands_top.top,
}


def params_from_options(tokens: list[str]) -> list[str]:
    """`--batch-size 50 --dry-run --name=x` -> `["batch_size=50", "dry_run=true", "name=x"]`.

    A bare `--flag` (followed by another option or nothing) is `true`. Raises ValueError for a
    token that belongs to no option.
    """
    pairs: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or token == "--":  # noqa: S105  an argv word, not a password
            msg = f"unexpected argument {token!r}"
            raise ValueError(msg)
        name, sep, value = token[2:].partition("=")
        if not sep:
            if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                value, i = tokens[i + 1], i + 1
            else:
                value = "true"
        pairs.append(f"{name.replace('-', '_')}={value}")
        i += 1
    return pairs
