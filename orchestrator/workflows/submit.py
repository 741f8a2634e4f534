"""Workflow requests: every job step validated against its plugin's manifest (one bad step:
nothing is written, the error names it), then compiled and created in one MULTI."""

from __future__ import annotations

import json
from typing import Any

from orchestrator.errors import OrchestratorError
from orchestrator.jobs.model import new_job_id, now, queue_score
from orchestrator.jobs.submit import JobRequest, PreparedJob, Submitter, arq_payload
from orchestrator.workflows.model import Graph, Step, WorkflowError, compile_graph
from orchestrator.workflows.store import NewWorkflow, WorkflowStore


async def prepare_workflow(
    submitter: Submitter, root: Step, *, name: str | None = None, source: str = "api",
    context: dict[str, Any] | None = None, workflow_id: str | None = None,
) -> NewWorkflow:  # fmt: skip
    """Check every step and lay out what WorkflowStore.create writes. Raises WorkflowError.

    The steps' job ids are `<workflow id>-<node>`: a workflow id made from its cause (a change)
    makes the same workflow again, which the create script then skips."""
    graph = compile_graph(root)
    workflow_id = workflow_id or new_job_id()
    prepared: dict[int, PreparedJob] = {}
    problems: list[str] = []
    for node in graph.nodes:
        step = node.step
        if step is None:
            continue
        request = JobRequest(
            plugin=step.plugin, params=step.params, priority=step.priority, queue=step.queue,
            source=source, context=context or {}, job_id=f"{workflow_id}-{node.index}",
        )  # fmt: skip
        try:
            job = await submitter.prepare(request)
        except OrchestratorError as e:
            problems.append(f"step {node.path or 'root'}: {e}")
            if len(problems) >= 10:
                break
            continue
        record = job.record
        record.workflow, record.step = workflow_id, str(node.index)
        if step.retries is not None:
            record.max_retries = step.retries
        if step.timeout is not None:
            record.timeout_s = step.timeout
        prepared[node.index] = job
    if problems:
        raise WorkflowError("invalid workflow: " + "; ".join(problems))
    return NewWorkflow(
        workflow_id=workflow_id,
        record=_record(graph, prepared, name, source),
        graph=_graph_fields(graph, prepared),
        left={str(n.index): str(n.count) for n in graph.nodes if n.step is None},
        entries=graph.entries,
    )


def _record(graph: Graph, prepared: dict[int, PreparedJob], name: str | None, source: str) -> dict[str, str]:
    for shown in _walk(graph.tree):
        if shown["kind"] == "job":
            shown["job_id"] = prepared[int(shown["step"])].record.job_id
    record = {
        "state": "running", "created_at": str(now()), "source": source, "nodes": str(len(graph.nodes)),
        "jobs": str(len(prepared)), "tree": json.dumps(graph.tree, separators=(",", ":")),
    }  # fmt: skip
    if name:
        record["name"] = name
    return record


def _graph_fields(graph: Graph, prepared: dict[int, PreparedJob]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for node in graph.nodes:
        i = node.index
        if node.next:
            fields[f"{i}:next"] = ",".join(map(str, node.next))
        if node.join is not None:
            fields[f"{i}:join"], fields[f"{i}:slot"] = str(node.join), str(node.slot)
        if node.catch is not None:
            fields[f"{i}:catch"] = f"{node.catch[0]}:{node.catch[1]}"
        if node.step is None:
            fields[f"{i}:count"] = str(node.count)
            continue
        record = prepared[i].record
        hashed = record.to_hash()
        hashed.pop("enqueued_at", None)  # set when the step is enqueued
        fields[f"{i}:job"] = record.job_id
        fields[f"{i}:fields"] = json.dumps([x for kv in hashed.items() for x in kv], separators=(",", ":"))
        payload = arq_payload(record.job_id, int(now() * 1000))
        fields[f"{i}:payload"] = payload.decode()
        fields[f"{i}:offset"] = str(queue_score(0, record.priority))
        fields[f"{i}:queue"] = record.queue
        fields[f"{i}:plugin"] = record.plugin
        fields[f"{i}:path"] = node.path or "root"
    return fields


def _walk(tree: dict[str, Any]) -> list[dict[str, Any]]:
    out = [tree]
    for child in tree.get("steps", ()):
        out += _walk(child)
    return out


async def submit_workflow(
    submitter: Submitter, store: WorkflowStore, root: Step, *, name: str | None = None, source: str = "api",
    context: dict[str, Any] | None = None, workflow_id: str | None = None,
) -> tuple[str, bool]:  # fmt: skip
    """Validate, create, start the first steps; returns (the workflow id, created: False when a
    workflow with this id existed and nothing was written)."""
    new = await prepare_workflow(submitter, root, name=name, source=source, context=context, workflow_id=workflow_id)
    return new.workflow_id, await store.create(new)
