"""What change capture reports: per-rule state, and the stand-in component when it does not run."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from orchestrator.cdc.rules import Rule
from orchestrator.components import BaseComponent


@dataclass
class RuleState:
    rule: Rule
    table: str  # db.table
    enabled: bool
    delivered: int = 0
    matched: int = 0
    lag_s: float | None = None
    schema_error: str | None = None
    source_error: str | None = None
    position: Any = None

    @property
    def last_error(self) -> str | None:
        return self.schema_error or self.source_error

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.rule.name,
            "table": self.table,
            "mode": self.rule.mode,
            "enabled": self.enabled,
            "position": self.position,
            "lag_s": round(self.lag_s, 3) if self.lag_s is not None else None,
            "delivered": self.delivered,
            "matched": self.matched,
            "plugins": self.rule.plugins,
            "last_error": self.last_error,
        }


def disabled_status(reason: str) -> dict[str, Any]:
    """What `/status` shows when change capture does not run here."""
    return {"cdc": {"enabled": False, "reason": reason, "rules": []}}


class CaptureOff(BaseComponent):
    """Stands in for the poller when change capture does not run, so `/status` says why."""

    name = "cdc"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def status(self) -> dict[str, Any]:
        return disabled_status(self.reason)
