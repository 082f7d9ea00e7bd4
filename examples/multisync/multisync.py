"""bg_orchestrator's "multiSync" chain on actorflow: fetchUsers -> [syncContacts, syncCalendar,
syncNotes] in parallel -> cleanup, with a live progress display of every execution.

    python examples/multisync/multisync.py [data_dir]

Kill it (even with kill -9) and run it again: the chain resumes where the journal says it was."""

from __future__ import annotations

import sys
import time
from typing import Any

from actorflow import Engine, RetryPolicy
from actorflow.tasks import (
    TaskCancelled,
    TaskContext,
    TaskFailed,
    TaskQueued,
    TaskRetrying,
    TaskRunning,
    TaskSucceeded,
)

engine = Engine(sys.argv[1] if len(sys.argv) > 1 else "./multisync-data")


def _work(ctx: TaskContext, steps: int, pause: float) -> None:
    for i in range(steps):
        if ctx.cancelled:
            return
        time.sleep(pause)
        ctx.report_progress((i + 1) / steps)


@engine.task(name="fetchUsers")
def fetch_users(ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
    _work(ctx, 4, 0.05)
    return {"users": ["ada", "grace", "alan"]}


@engine.task(name="syncContacts", retry=RetryPolicy.exponential(max_attempts=3, initial_delay=0.1))
def sync_contacts(ctx: TaskContext, input: dict[str, Any]) -> int:
    _work(ctx, 5, 0.04)
    return len(input["users"]) * 10


@engine.task(name="syncCalendar")
def sync_calendar(ctx: TaskContext, input: dict[str, Any]) -> int:
    _work(ctx, 3, 0.06)
    return len(input["users"]) * 4


@engine.task(name="syncNotes")
def sync_notes(ctx: TaskContext, input: dict[str, Any]) -> int:
    _work(ctx, 6, 0.03)
    return len(input["users"]) * 7


@engine.task(name="cleanup")
def cleanup(ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
    _work(ctx, 2, 0.05)
    return {"synced": sum(input.values())}


def line(ev: Any) -> str:
    match ev:
        case TaskQueued():
            return "queued"
        case TaskRunning(progress=p):
            return f"running {'#' * int(p * 20):<20} {p:4.0%}"
        case TaskRetrying(next_attempt_in=n):
            return f"retrying in {n:.1f}s"
        case TaskSucceeded(output=o):
            return f"done -> {o}"
        case TaskFailed(message=m):
            return f"FAILED: {m}"
        case TaskCancelled():
            return "cancelled"
    return "?"


def main() -> None:
    with engine:
        names: dict[str, str] = {}
        live = engine.monitor_task(None, timeout=30)  # every task's events, from now on
        chain_id = (
            engine.chain("multiSync")
            .then("fetchUsers")
            .then_all(["syncContacts", "syncCalendar", "syncNotes"])
            .then("cleanup")
            .enqueue(chain_id="multiSync-demo")
        )
        for ev in live:
            if ev.execution_id not in names:
                names[ev.execution_id] = engine.status(ev.execution_id).workflow.removeprefix("task:")
            print(f"{names[ev.execution_id]:>13}  {line(ev)}", flush=True)
            final = isinstance(ev, (TaskSucceeded, TaskFailed, TaskCancelled))
            if final and (names[ev.execution_id] == "cleanup" or not isinstance(ev, TaskSucceeded)):
                break
        live.close()
        print("chain result:", engine.result(chain_id, timeout=30))


if __name__ == "__main__":
    main()
