"""Changes -> jobs: one job per matching rule and plugin, written with the new position atomically.

A round's jobs and the position after them go to Redis in one `Submitter.write_many` call (one Lua
script, refused whole when this instance no longer holds the lease). Job ids come from the change
(`cdc:<rule>:<change id>:<plugin>`), so a round replayed after a crash enqueues nothing twice.

A rule with `index = {...}` adds one action per change to its index stream in the same script
(cdc/index_actions.py); the index sink sends them on.

Validating every job against its manifest would cost a Redis round trip per job (the enable flag);
a round validates once per (rule, plugin) and derives the round's jobs from that template.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.cdc.index_actions import encode_action, index_stream
from orchestrator.cdc.model import CdcKeys, Change, job_id
from orchestrator.cdc.rules import Matcher, Rule, compile_matcher
from orchestrator.cluster.lease import LeaderLease
from orchestrator.errors import FencedError, JobError, PluginError
from orchestrator.jobs.store import Checkpoint
from orchestrator.jobs.submit import JobRequest, PreparedJob, Submitter
from orchestrator.tracing.facade import Tracing
from orchestrator.workflows.named import NamedWorkflows

logger = logging.getLogger(__name__)

# Jobs of one round for one queue get scores this far apart (ms): they stay in change order.
_SCORE_STEP_MS = 0.001


@dataclass
class Round:
    """The jobs of one atomic write, and what they count for."""

    jobs: list[PreparedJob] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)  # the rule of each job
    matched: dict[str, int] = field(default_factory=dict)  # rule -> changes it matched
    newest: dict[str, float] = field(default_factory=dict)  # rule -> newest changed_at
    index: dict[str, list[str]] = field(default_factory=dict)  # stream key -> index actions (JSON)
    workflows: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)  # rule, name, id, event


class Delivery:
    """Turns changes into prepared jobs and writes them with a checkpoint.

    Args:
        submitter: the job layer (validation + the atomic enqueue).
        lease: the leader lease whose fence every write carries; None for writes that are not
            leader-only (the CLI's replay and snapshot).
        tracing: a `cdc.change` span per matching change, the root of its jobs' traces (no-op when off).
    """

    def __init__(
        self,
        submitter: Submitter,
        lease: LeaderLease | None,
        tracing: Tracing | None = None,
        workflows: NamedWorkflows | None = None,
    ) -> None:
        self.submitter = submitter
        self.lease = lease
        self.tracing = tracing or Tracing()
        self.workflows = workflows
        self._templates: dict[tuple[str, str], PreparedJob | str] = {}
        self._seq = 0
        self._matchers: dict[str, Matcher] = {}
        self.plugin_errors: dict[str, str] = {}  # rule -> why some of its jobs could not be made

    def new_round(self) -> None:
        """Forget the templates and errors: the next round validates again (a plugin may have been disabled)."""
        self.refresh()
        self.plugin_errors.clear()

    def refresh(self) -> None:
        """Make the next jobs from fresh templates (their enqueue time and queue score)."""
        self._templates.clear()
        self._seq = 0

    async def _template(self, rule: Rule, plugin: str) -> PreparedJob | str:
        key = (rule.name, plugin)
        cached = self._templates.get(key)
        if cached is None:
            request = JobRequest(
                plugin=plugin,
                params=dict(rule.params),
                priority=rule.priority,
                queue=rule.queue,
                job_id=f"cdc:{rule.name}:template:{plugin}",
                source="cdc",
                context={"change_event": {}},
            )
            try:
                cached = await self.submitter.prepare(request)
            except (JobError, PluginError) as e:
                cached = f"plugin {plugin}: {e}"
            self._templates[key] = cached
        return cached

    async def add(self, batch: Round, change: Change, rules: Iterable[Rule]) -> None:
        """The jobs `change` makes for every rule that matches it."""
        matching = [rule for rule in rules if self._matcher(rule)(change.operation, change.row, change.before)]
        if not matching:
            return
        # The change is the root of what it causes: its jobs' spans are children, and the es.bulk
        # that carries it links to it (the context travels in the index action).
        with self.tracing.span(
            "cdc.change",
            root=True,
            kind="producer",
            attributes={
                "cdc.table": change.table,
                "cdc.operation": change.operation,
                "cdc.change_id": change.change_id,
                "cdc.position": change.seq or None,
                "cdc.rules": ",".join(r.name for r in matching),
            },
        ) as span:
            trace = span.carrier
        for rule in matching:
            batch.matched[rule.name] = batch.matched.get(rule.name, 0) + 1
            batch.newest[rule.name] = max(batch.newest.get(rule.name, 0.0), change.changed_at)
            if rule.index is not None:
                action = rule.index.action(rule.name, change)
                if trace is not None:
                    action["trace"] = trace
                batch.index.setdefault(index_stream(rule.name), []).append(encode_action(action))
            if rule.workflow is not None:
                workflow_id = job_id(rule.name, change.change_id, "wf")
                batch.workflows.append((rule.name, rule.workflow, workflow_id, change.event(rule.name)))
            if not rule.plugins:
                continue
            event = change.event(rule.name)
            for plugin in rule.plugins:
                template = await self._template(rule, plugin)
                if isinstance(template, str):
                    self.plugin_errors[rule.name] = template
                    continue
                record = template.record.derive(
                    job_id=job_id(rule.name, change.change_id, plugin), context={"change_event": event}, trace=trace
                )
                # later changes sort after earlier ones of the same template, across chunks too
                self._seq += 1
                score = template.score + _SCORE_STEP_MS * self._seq
                batch.jobs.append(PreparedJob(record=record, score=score, enqueue_ms=template.enqueue_ms))
                batch.rules.append(rule.name)

    def _matcher(self, rule: Rule) -> Matcher:
        match = self._matchers.get(rule.name)
        if match is None:
            match = self._matchers[rule.name] = compile_matcher(rule)
        return match

    async def write(self, batch: Round, position: Mapping[str, str], delivered: dict[str, int]) -> dict[str, int]:
        """Enqueue the round and write `position` in one atomic step.

        Returns the jobs enqueued per rule (ids that existed already, from a replayed round, are
        not counted) and adds them to `delivered`. The counts are statistics: they are added to
        Redis after the atomic write, and a crash in between loses a count, never a job.

        Raises:
            FencedError: this instance does not hold the lease (nothing written).
        """
        fence = None
        if self.lease is not None:
            fence = self.lease.fence()
            if fence is None:
                raise FencedError("change capture: this instance does not hold the leader lease")
        fresh: dict[str, int] = {}
        # Before the position: a crash in between starts them again under the same ids, which the
        # create script skips (a workflow per change, never two).
        for rule, name, workflow_id, event in batch.workflows:
            if await self._start_workflow(rule, name, workflow_id, event):
                fresh[rule] = fresh.get(rule, 0) + 1
        outcomes = await self.submitter.write_many(
            batch.jobs, fence=fence, checkpoint=Checkpoint(CdcKeys.state, dict(position), streams=batch.index)
        )
        for rule, outcome in zip(batch.rules, outcomes, strict=True):
            if outcome == 1:
                fresh[rule] = fresh.get(rule, 0) + 1
        if fresh:
            async with self.submitter.store.redis.pipeline(transaction=False) as pipe:
                for rule, n in fresh.items():
                    pipe.hincrby(CdcKeys.state, CdcKeys.delivered_field(rule), n)
                    delivered[rule] = delivered.get(rule, 0) + n
                await pipe.execute()
        return fresh

    async def _start_workflow(self, rule: str, name: str, workflow_id: str, event: dict[str, Any]) -> bool:
        if self.workflows is None:
            self.plugin_errors[rule] = f"workflow {name}: started by `orchestrator run` only"
            return False
        try:
            _, created = await self.workflows.start(
                name, source="cdc", workflow_id=workflow_id, context={"change_event": event}
            )
        except (JobError, PluginError) as e:
            self.plugin_errors[rule] = f"workflow {name}: {e}"
            return False
        return created
