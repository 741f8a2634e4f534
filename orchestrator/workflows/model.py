"""A workflow is a tree of steps: a job, a chain (one after another) or a group (in parallel); a
group followed by a step in a chain is a chord. Parsed from JSON (the API, the CLI, config) or
built with `job()`, `chain()` and `group()`, then compiled into the graph the Lua side walks
(jobs/lua/workflow.lua): a node per job step, a join node per group.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.errors import JobError

OnFailure = Literal["fail", "continue"]
# how many job steps one workflow may have (the create script writes them in one transaction)
MAX_STEPS = 50_000


class WorkflowError(JobError):
    """A workflow description is invalid; the message names the step (`chain[1].group[0]`)."""


@dataclass(frozen=True)
class JobStep:
    plugin: str
    params: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: str | int | None = None
    retries: int | None = None
    timeout: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"plugin": self.plugin, "params": self.params}
        for key in ("queue", "priority", "retries", "timeout"):
            if (value := getattr(self, key)) is not None:
                out[key] = value
        return out


@dataclass(frozen=True)
class Chain:
    steps: tuple[Step, ...]

    def to_json(self) -> dict[str, Any]:
        return {"chain": [s.to_json() for s in self.steps]}


@dataclass(frozen=True)
class Group:
    steps: tuple[Step, ...]
    on_failure: OnFailure = "fail"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"group": [s.to_json() for s in self.steps]}
        if self.on_failure != "fail":
            out["on_failure"] = self.on_failure
        return out


Step = JobStep | Chain | Group


def job(
    plugin: str,
    params: dict[str, Any] | None = None,
    *,
    queue: str | None = None,
    priority: str | int | None = None,
    retries: int | None = None,
    timeout: float | None = None,
) -> JobStep:
    """One job step (`retries`, `timeout`: instead of the manifest's)."""
    return JobStep(plugin, params or {}, queue, priority, retries, timeout)


def chain(*steps: Step) -> Chain:
    """Steps one after another; each gets the one before's result as `previous`."""
    return Chain(tuple(steps))


def group(*steps: Step, on_failure: OnFailure = "fail") -> Group:
    """Steps in parallel; what follows gets their results as a list, in member order.
    `on_failure="continue"`: a failed member is an error entry in that list instead of failing the workflow."""
    return Group(tuple(steps), on_failure)


_JOB_KEYS = frozenset({"plugin", "params", "queue", "priority", "retries", "timeout"})


def parse_step(data: Any, where: str = "workflow") -> Step:
    """JSON -> steps. A list is a chain. Raises WorkflowError naming the bad step."""
    if isinstance(data, list):
        data = {"chain": data}
    if not isinstance(data, Mapping):
        msg = f"{where}: expected an object with 'plugin', 'chain' or 'group'"
        raise WorkflowError(msg)
    kinds = [k for k in ("plugin", "chain", "group") if k in data]
    if len(kinds) != 1:
        msg = f"{where}: expected exactly one of 'plugin', 'chain' or 'group'"
        raise WorkflowError(msg)
    kind = kinds[0]
    if kind == "plugin":
        return _parse_job(data, where)
    allowed = {kind, "on_failure"} if kind == "group" else {kind}
    if extra := sorted(set(data) - allowed):
        msg = f"{where}: unknown key(s) {', '.join(extra)}"
        raise WorkflowError(msg)
    items = data[kind]
    if not isinstance(items, list) or not items:
        msg = f"{where}.{kind}: expected a non-empty list of steps"
        raise WorkflowError(msg)
    steps = tuple(parse_step(item, f"{where}.{kind}[{i}]") for i, item in enumerate(items))
    if kind == "chain":
        return Chain(steps)
    on_failure = data.get("on_failure", "fail")
    if on_failure not in ("fail", "continue"):
        msg = f"{where}.on_failure: expected 'fail' or 'continue'"
        raise WorkflowError(msg)
    return Group(steps, on_failure)


def _parse_job(data: Mapping[str, Any], where: str) -> JobStep:
    if extra := sorted(set(data) - _JOB_KEYS):
        msg = f"{where}: unknown key(s) {', '.join(extra)}"
        raise WorkflowError(msg)
    plugin, params = data["plugin"], data.get("params", {})
    if not isinstance(plugin, str) or not plugin:
        msg = f"{where}.plugin: expected a plugin name"
        raise WorkflowError(msg)
    if not isinstance(params, Mapping):
        msg = f"{where}.params: expected an object"
        raise WorkflowError(msg)
    retries, timeout, priority, queue = (data.get(k) for k in ("retries", "timeout", "priority", "queue"))
    if retries is not None and (not isinstance(retries, int) or isinstance(retries, bool) or retries < 0):
        msg = f"{where}.retries: expected a whole number >= 0"
        raise WorkflowError(msg)
    if timeout is not None and (not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0):
        msg = f"{where}.timeout: expected seconds > 0"
        raise WorkflowError(msg)
    if queue is not None and not isinstance(queue, str):
        msg = f"{where}.queue: expected a queue name"
        raise WorkflowError(msg)
    if priority is not None and (not isinstance(priority, str | int) or isinstance(priority, bool)):
        msg = f"{where}.priority: expected high, default, low or 0-9"
        raise WorkflowError(msg)
    return JobStep(plugin, dict(params), queue, priority, retries, float(timeout) if timeout is not None else None)


@dataclass
class Node:
    """One node of the compiled graph (see jobs/lua/workflow.lua): a job step, or a group's join."""

    index: int
    step: JobStep | None  # None: a join node
    path: str
    next: list[int] = field(default_factory=list)
    join: int | None = None
    slot: int | None = None
    catch: tuple[int, int] | None = None
    count: int = 0


@dataclass
class Graph:
    nodes: list[Node]
    entries: list[int]  # the job nodes started when the workflow is created
    tree: dict[str, Any]  # the steps as shown: each job step names its node ("step")


def compile_graph(root: Step) -> Graph:
    """Number the steps and link them: a chain links each step's exit to the next one's entries;
    a group's members report into its join node, slot by slot; inside a group with
    on_failure = continue, a failure is caught at the member's slot."""
    nodes: list[Node] = []

    def add(step: JobStep | None, path: str) -> Node:
        node = Node(len(nodes) + 1, step, path)
        nodes.append(node)
        return node

    def walk(step: Step, path: str, catch: tuple[int, int] | None) -> tuple[list[Node], Node, dict[str, Any]]:
        if isinstance(step, JobStep):
            node = add(step, path)
            node.catch = catch
            return [node], node, {"kind": "job", "step": str(node.index), "path": path, **step.to_json()}
        if isinstance(step, Chain):
            entries: list[Node] = []
            exit_node: Node | None = None
            shown = []
            for i, s in enumerate(step.steps):
                e, x, t = walk(s, f"{path}.{i}" if path else str(i), catch)
                if exit_node is None:
                    entries = e
                else:
                    exit_node.next = [n.index for n in e]
                exit_node = x
                shown.append(t)
            assert exit_node is not None  # noqa: S101  narrows the type: a chain has at least one step
            return entries, exit_node, {"kind": "chain", "path": path, "steps": shown}
        join = add(None, path)
        join.count = len(step.steps)
        members: list[Node] = []
        shown = []
        for slot, s in enumerate(step.steps, 1):
            member_catch = (join.index, slot) if step.on_failure == "continue" else None
            e, x, t = walk(s, f"{path}.{slot - 1}" if path else str(slot - 1), member_catch)
            x.join, x.slot = join.index, slot
            members += e
            shown.append(t)
        tree = {"kind": "group", "path": path, "on_failure": step.on_failure, "steps": shown, "step": str(join.index)}
        return members, join, tree

    entries, _, tree = walk(root, "", None)
    jobs = sum(1 for n in nodes if n.step is not None)
    if jobs > MAX_STEPS:
        msg = f"workflow: {jobs} job steps; at most {MAX_STEPS}"
        raise WorkflowError(msg)
    return Graph(nodes, [n.index for n in entries], tree)
