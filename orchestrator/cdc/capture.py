"""Which change-capture component a process runs: the poller, or a stand-in saying why not.

A light module on purpose: the poller (and asyncmy, ~3 MB) is imported only when it will run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.cdc.status import CaptureOff
from orchestrator.components import Component
from orchestrator.config import Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from orchestrator.cluster.lease import LeaderLease
    from orchestrator.jobs.submit import Submitter


def build_capture(settings: Settings, submitter: Submitter, lease: LeaderLease, redis: Redis) -> Component:
    """The poller when DATABASE_URL is set and a rule is configured; else a component saying why not."""
    mysql = settings.mysql_params()
    if mysql is None:
        return CaptureOff("no DATABASE_URL set")
    if not settings.cdc.all_rules():
        return CaptureOff("no [[cdc.rules]] configured")
    from orchestrator.cdc.poller import ChangePoller

    try:
        return ChangePoller(
            settings.cdc,
            mysql,
            interval_s=settings.db_change_polling_interval_s,
            submitter=submitter,
            lease=lease,
            redis=redis,
        )
    except ValueError as e:  # e.g. no database to put the changelog in
        return CaptureOff(str(e))
