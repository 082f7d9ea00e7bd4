"""Handlers for the queue, lease and control-plane tests (module level: a multiprocess engine ships
them to its shard processes; side effects go to files because handlers run there)."""

from __future__ import annotations

import os
import time
from typing import Any

from actorflow.tasks import TaskContext

from ._handlers import count, lines


def where(ctx: TaskContext, input: dict[str, Any]) -> Any:
    """Which process and queue ran it."""
    if "path" in input:
        count(input["path"], f"{ctx.execution_id} {ctx.queue} {os.getpid()}")
    return {"queue": ctx.queue, "pid": os.getpid()}


def hold(ctx: TaskContext, input: dict[str, Any]) -> Any:
    """Run until the file `input['release']` exists (heartbeating), then return."""
    count(input["path"], f"start {os.getpid()}")
    while not os.path.exists(input["release"]):
        ctx.heartbeat()
        time.sleep(0.02)
    return "released"


def stall_first(ctx: TaskContext, input: dict[str, Any]) -> Any:
    """Attempt 1 stops heartbeating (stalls up to `stall` s, leaving early once its lease is lost);
    later attempts succeed at once."""
    first = not lines(input["path"])
    count(input["path"], f"{'stall' if first else 'ok'} {ctx.attempt} {os.getpid()}")
    if first:
        deadline = time.time() + float(input.get("stall", 20))
        while time.time() < deadline and not ctx.cancelled:
            time.sleep(0.02)
        count(input["path"], f"stalled-ended cancelled={ctx.cancelled}")
        return "late result of a lost attempt"
    return "done"


def die_first(ctx: TaskContext, input: dict[str, Any]) -> Any:
    """Attempt 1 writes its pid and keeps heartbeating until killed; later attempts succeed."""
    first = not lines(input["path"])
    count(input["path"], f"{'victim' if first else 'ok'} {os.getpid()}")
    while first:
        ctx.heartbeat()
        time.sleep(0.02)
    return "survived"


def service(ctx: TaskContext, input: dict[str, Any]) -> Any:
    """A service: heartbeats until cancelled (heartbeat() raises Cancelled then)."""
    while True:
        ctx.heartbeat()
        count(input["path"], "beat")
        time.sleep(0.05)


def picky(ctx: TaskContext, input: dict[str, Any]) -> Any:
    if input.get("fail"):
        raise ValueError("no")
    return input.get("value")


def file_hook(info: Any) -> None:
    """A hook for processes that are not the test's: appends to $AF_HOOK_LOG."""
    with open(os.environ["AF_HOOK_LOG"], "a") as f:
        f.write(f"{type(info).__name__} {info.execution_id} {os.getpid()}\n")


def span(ctx: TaskContext, input: dict[str, Any]) -> Any:
    """Record when it began and ended (a node's concurrency is read from the overlaps)."""
    began = time.time()
    time.sleep(float(input.get("seconds", 0.4)))
    count(input["path"], f"{began} {time.time()} {os.getpid()}")
    return "spanned"
