"""Chains, groups and chords: one durable parent run whose stages are child task executions.

A stage's members are `ctx.child` runs with ids fixed by position, and a chord's callback is the stage
after the gather: after a crash the parent replays, finds every finished member in its journal and
starts the callback once - its run id is deterministic, so it can never exist twice."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .._retry import RetryPolicy
from ..errors import ConfigError, WorkflowFailed
from ._model import TASK_PREFIX, check_input, seconds
from ._routing import check_queue_name, check_requires

if TYPE_CHECKING:
    from ._queue import TaskQueue

__all__ = ["Chain", "CHAIN_WORKFLOW", "chain_workflow", "merge_outputs", "as_input", "member_id"]

CHAIN_WORKFLOW = "actorflow.chain"


def as_input(output: Any) -> dict[str, Any]:
    """The next stage's input from one output: a dict as is, None as {}, anything else {"value": it}."""
    if output is None:
        return {}
    if isinstance(output, dict):
        return output
    return {"value": output}


def merge_outputs(names: Sequence[str], outputs: Sequence[Any]) -> dict[str, Any]:
    """Parallel outputs -> one input: keyed by task name; a repeated name gets "#2", "#3"..."""
    merged: dict[str, Any] = {}
    seen: dict[str, int] = {}
    for name, out in zip(names, outputs):
        n = seen[name] = seen.get(name, 0) + 1
        merged[name if n == 1 else f"{name}#{n}"] = out
    return merged


def member_id(chain_id: str, stage: int, index: int) -> str:
    """The run id of a member whose options were decided at enqueue (queue, requirements, gate):
    fixed by position, so its gate entry can be written with the chain's creation."""
    return f"{chain_id}/m{stage}.{index}"


async def chain_workflow(ctx: Any, plan: dict[str, Any], input: dict[str, Any]) -> Any:
    """Run the stages in order; a failed stage runs `on_failure` (once) and fails the chain.

    A plan from before member options existed (no "member_opts") runs its members on the default
    queue with positional ids, as it did when it was journaled."""
    common = {k: plan[k] for k in ("retry", "timeout") if plan.get(k) is not None}
    decided: list[list[dict[str, Any]]] | None = plan.get("member_opts")

    def child(stage: int, index: int, name: str, data: dict[str, Any]) -> Any:
        if decided is None:
            return ctx.child(TASK_PREFIX + name, data, common)
        return ctx.child(TASK_PREFIX + name, data, decided[stage][index], run_id=member_id(ctx.run_id, stage, index))

    data: dict[str, Any] = input
    output: Any = None
    try:
        for stage, (kind, members) in enumerate(plan["stages"]):
            if kind == "one":
                output = await child(stage, 0, members, data)
            else:
                calls = [child(stage, i, name, data if own is None else own) for i, (name, own) in enumerate(members)]
                output = merge_outputs([name for name, _ in members], await ctx.gather(*calls))
            data = as_input(output)
    except WorkflowFailed as exc:
        if plan.get("on_failure"):
            info = {"chain_id": ctx.run_id, "chain": plan["name"], "error": exc.evidence.get("error"),
                    "failed_execution": exc.evidence.get("run_id"),
                    "input": input}
            if decided is None:
                await ctx.child(TASK_PREFIX + plan["on_failure"], info, {})
            else:
                stage = len(plan["stages"])
                await ctx.child(TASK_PREFIX + plan["on_failure"], info, decided[stage][0],
                                run_id=member_id(ctx.run_id, stage, 0))
        raise
    return output


class Chain:
    """Builder: `engine.chain("name").then("a").then_all(["b", "c"]).then("d").enqueue(input)`."""

    def __init__(self, queue: TaskQueue, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a chain needs a non-empty name, got {name!r}")
        self._queue = queue
        self.name = name
        self._stages: list[tuple[str, Any]] = []
        self._where: list[list[tuple[str | None, dict[str, Any] | None]]] = []  # per member: (queue, requires)
        self._on_failure: str | None = None
        self._failure_where: tuple[str | None, dict[str, Any] | None] = (None, None)
        self._retry: RetryPolicy | None = None
        self._timeout: float | None = None

    def _check_where(self, task: str, queue: str | None, requires: dict[str, Any] | None) -> None:
        what = f"chain {self.name!r} member {task!r}"
        if queue is not None:
            check_queue_name(queue, what)
        check_requires(requires, what)

    def then(self, task: str, *, queue: str | None = None, requires: dict[str, Any] | None = None) -> Chain:
        """Run `task` next, with the previous stage's output as its input (see `as_input`); on
        `queue` (else the task's own queue or routing) and only where `requires` matches."""
        self._queue.spec(task)
        self._check_where(task, queue, requires)
        self._stages.append(("one", task))
        self._where.append([(queue, requires)])
        return self

    def then_all(self, tasks: Iterable[str | tuple[str, dict[str, Any] | None]], *, queue: str | None = None,
                 requires: dict[str, Any] | None = None) -> Chain:
        """Run these in parallel on the same input (or their own, as (name, input)); the next stage
        gets one dict of their outputs keyed by task name (a repeated name: "name#2", ...).
        `queue`/`requires` apply to every member (else each task's own queue or routing)."""
        members: list[tuple[str, dict[str, Any] | None]] = []
        for item in tasks:
            name, own = (item, None) if isinstance(item, str) else item
            self._queue.spec(name)
            members.append((name, None if own is None else check_input(own, f"input of {name!r} in chain {self.name!r}")))
        if not members:
            raise ConfigError(f"chain {self.name!r}: then_all needs at least one task")
        for name, _ in members:
            self._check_where(name, queue, requires)
        self._stages.append(("all", members))
        self._where.append([(queue, requires)] * len(members))
        return self

    def on_failure(self, task: str, *, queue: str | None = None, requires: dict[str, Any] | None = None) -> Chain:
        """Run `task` once if any stage fails; its input: chain_id, chain, error, failed_execution, input."""
        self._queue.spec(task)
        self._check_where(task, queue, requires)
        self._on_failure = task
        self._failure_where = (queue, requires)
        return self

    def with_retry(self, policy: RetryPolicy) -> Chain:
        """Every member's retry policy (instead of each task's own)."""
        if not isinstance(policy, RetryPolicy):
            raise ConfigError(f"chain {self.name!r}: with_retry takes a RetryPolicy, got {policy!r}")
        self._retry = policy
        return self

    def with_timeout(self, timeout: float | _dt.timedelta) -> Chain:
        """Every member's timeout per attempt, in seconds."""
        self._timeout = seconds(timeout, f"chain {self.name!r} timeout", positive=True)
        return self

    def plan(self) -> dict[str, Any]:
        if not self._stages:
            raise ConfigError(f"chain {self.name!r} has no stages: add .then(...) or .then_all([...])")
        names = [[m] if kind == "one" else [n for n, _ in m] for kind, m in self._stages]
        wheres = list(self._where)
        if self._on_failure is not None:
            names.append([self._on_failure])
            wheres.append([self._failure_where])
        member_opts = [
            [self._queue.options(self._queue.spec(n), retry=self._retry, priority=0, tags=(), delay=None,
                                 unique_policy="keep", timeout=self._timeout, queue=q, requires=r)
             for n, (q, r) in zip(ns, ws)]
            for ns, ws in zip(names, wheres)
        ]
        return {"name": self.name, "stages": list(self._stages), "on_failure": self._on_failure,
                "retry": self._retry, "timeout": self._timeout, "member_opts": member_opts}

    def enqueue(self, input: dict[str, Any] | None = None, *, chain_id: str | None = None) -> str:
        """Start the chain durably; returns its id (engine.result(id), cancel_chain(id))."""
        return self._queue.start_chain(self.plan(), check_input(input, f"chain {self.name!r}"), chain_id)
