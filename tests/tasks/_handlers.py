"""Module-level task handlers shared by the task tests (a multiprocess engine ships them to its
shard processes by cloudpickle; side effects go to files because handlers run there)."""

from __future__ import annotations

import os
import time
from typing import Any

from actorflow import Engine, RetryPolicy
from actorflow.tasks import TaskContext, TaskResult


def count(path: str, line: str = "x") -> int:
    """Append `line` to `path`; returns how many lines it has now."""
    with open(path, "a") as f:
        f.write(line + "\n")
    with open(path) as f:
        return len(f.readlines())


def lines(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [ln.strip() for ln in f]


def add(ctx: TaskContext, input: dict[str, Any]) -> Any:
    ctx.report_progress(0.5)
    return {"sum": input["a"] + input["b"]}


async def double(ctx: TaskContext, input: dict[str, Any]) -> Any:
    return {"sum": input["sum"] * 2}


def flaky(ctx: TaskContext, input: dict[str, Any]) -> Any:
    count(input["path"])
    if ctx.attempt < input["ok_at"]:
        return TaskResult.retry_later()
    return TaskResult.success({"attempt": ctx.attempt})


def broken(ctx: TaskContext, input: dict[str, Any]) -> Any:
    count(input["path"])
    raise ValueError("always broken")


def refuse(ctx: TaskContext, input: dict[str, Any]) -> Any:
    return TaskResult.failure("bad request")


def record(ctx: TaskContext, input: dict[str, Any]) -> Any:
    """Append this execution's label to the file; `hold`: keep running that long (cooperatively)."""
    count(input["path"], str(input.get("label", ctx.execution_id)))
    deadline = time.time() + float(input.get("hold", 0))
    while time.time() < deadline:
        if ctx.cancelled:
            count(input["path"] + ".cancelled", ctx.execution_id)
            return "stopped"
        time.sleep(0.01)
    return input.get("label")


def limited_body(ctx: TaskContext, input: dict[str, Any]) -> Any:
    """Tracks how many run at once (files named by pid/execution), holds briefly."""
    d = input["dir"]
    mine = os.path.join(d, ctx.execution_id)
    open(mine, "w").close()
    running = len([n for n in os.listdir(d) if not n.endswith(".done")])
    count(os.path.join(d, "max.log.done"), str(running))
    time.sleep(0.05)
    os.rename(mine, mine + ".done")
    return running


def merge(ctx: TaskContext, input: dict[str, Any]) -> Any:
    path = next(v["path"] for v in input.values() if isinstance(v, dict) and "path" in v)
    count(path, "callback")
    return sorted(input)


def echo(ctx: TaskContext, input: dict[str, Any]) -> Any:
    count(input["path"], input.get("label", "echo"))
    time.sleep(float(input.get("hold", 0)))
    return {**input}


def on_fail(ctx: TaskContext, input: dict[str, Any]) -> Any:
    count(input["input"]["path"], "on_failure")
    return None


def register(e: Engine) -> Engine:
    e.task()(add)
    e.task()(double)
    e.task(retry=RetryPolicy.linear(4, 0.05, jitter=False))(flaky)
    e.task(retry=RetryPolicy.linear(2, 0.05, jitter=False))(broken)
    e.task()(refuse)
    e.task()(record)
    e.task(concurrency=2)(limited_body)
    e.task()(merge)
    e.task()(echo)
    e.task()(on_fail)
    return e
