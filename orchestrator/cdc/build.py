"""Which change-capture component a process runs: the poller, or a stand-in saying why not.

A light module on purpose: the poller (and asyncmy, ~3 MB) is imported only when it will run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.cdc.settings import DatabaseSettings
from orchestrator.cdc.status import CaptureOff
from orchestrator.components import Component

if TYPE_CHECKING:
    from orchestrator.cluster.lease import LeaderLease
    from orchestrator.jobs.shared import Shared
    from orchestrator.workflows.named import NamedWorkflows


def build(
    section: DatabaseSettings, shared: Shared, *, lease: LeaderLease, workflows: NamedWorkflows | None = None
) -> list[Component]:
    """The poller (changelog/timestamp rules) and binlog capture (binlog rules) when DATABASE_URL is set
    and rules are configured; else a component saying why not."""
    mysql = section.mysql_params()
    if mysql is None:
        return [CaptureOff("no DATABASE_URL set")]
    if not section.cdc.all_rules():
        return [CaptureOff("no [[cdc.rules]] configured")]
    components: list[Component] = []
    rules = section.cdc.all_rules()
    binlog = [r for r in rules if r.mode == "binlog"]
    if binlog:
        from orchestrator.cdc.binlog_capture import BinlogCapture

        try:
            capture = BinlogCapture(
                section,
                mysql,
                submitter=shared.submitter,
                lease=lease,
                redis=shared.redis,
                name="cdc" if len(binlog) == len(rules) else "cdc-binlog",
            )
        except ValueError as e:  # a table that names no database, and DATABASE_URL has none
            return [CaptureOff(str(e))]
        components.append(capture)
    if len(binlog) == len(rules):
        return components
    from orchestrator.cdc.poller import ChangePoller

    try:
        poller = ChangePoller(
            section.cdc,
            mysql,
            interval_s=section.db_change_polling_interval_s,
            submitter=shared.submitter,
            lease=lease,
            redis=shared.redis,
            tracing=shared.tracing,
            workflows=workflows,
        )
    except ValueError as e:  # e.g. no database to put the changelog in
        return [CaptureOff(str(e))]
    return [poller, *components]
