"""`orchestrator es check`: the connection to Elasticsearch and the indices the rules write to."""

from __future__ import annotations

import argparse
from typing import Any

from orchestrator.cli.context import Command
from orchestrator.cli.exit_codes import FAILED, OK
from orchestrator.errors import ConfigError


def add_parser(sub: Any) -> None:
    """Add `es` and its actions to the top-level subparsers."""
    es = sub.add_parser("es", help="Elasticsearch: check the connection and the target indices")
    esub = es.add_subparsers(dest="es_command", required=True, metavar="ACTION")
    check = esub.add_parser("check", help="connect (ES_HOSTS, auth, TLS) and check every rule's index exists")
    check.add_argument("--index", action="append", default=[], help="also check this index (repeatable)")
    check.add_argument("--json", action="store_true")


async def run(args: argparse.Namespace, cmd: Command) -> int:
    settings, out = cmd.settings, cmd.out
    if not settings.es_hosts:
        raise ConfigError("es_hosts: not set (ES_HOSTS=http://host:9200[,http://other:9200])")
    from orchestrator.index.check import es_check  # Elasticsearch is loaded only for this command

    report = await es_check(settings, settings.cdc.rules, args.index)
    if args.json:
        out.json(report)
        return OK if report["ok"] else FAILED
    if report.get("error"):
        out.error(f"elasticsearch: {report['error']}")
        return FAILED
    out.line(
        f"elasticsearch: cluster {report.get('cluster')} version {report.get('version')} ({report['hosts']} host(s))"
    )
    for i in report["indices"]:
        rules = f" (rules: {', '.join(i['rules'])})" if i["rules"] else ""
        out.line(f"  {i['index']}: {'exists' if i['exists'] else 'MISSING'}{rules}")
    if not report["indices"]:
        out.line("  no rule has index = {...}")
    return OK if report["ok"] else FAILED
