"""Task status events derived from an execution's run record and journal (nothing stored twice)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage import Journal

from .._types import RunStatus
from ._execution import HANDLER_STEP, clean_message
from ._leases import INFLIGHT
from ._model import (
    TASK_PREFIX,
    TaskCancelled,
    TaskEvent,
    TaskFailed,
    TaskQueued,
    TaskRetrying,
    TaskRunning,
    TaskSucceeded,
)

__all__ = ["TaskInfo", "event_of", "state_of", "opts_of", "TASK_STATES", "NS_GATED"]

NS_GATED = "actorflow.gated"  # execution id -> (queue, requires) while no consumer has taken it

TASK_STATES = ("queued", "running", "retrying", "succeeded", "failed", "cancelled")
_STATE = {
    TaskQueued: "queued",
    TaskRunning: "running",
    TaskRetrying: "retrying",
    TaskSucceeded: "succeeded",
    TaskFailed: "failed",
    TaskCancelled: "cancelled",
}


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """One execution as `tasks()` lists it."""

    execution_id: str
    task: str
    state: str
    status: TaskEvent
    created_at: float
    updated_at: float
    queue: str = "default"


def opts_of(journal: Journal, run_id: str) -> dict[str, Any]:
    """An execution's journaled options (queue, priority, tags, requires ...); {} if unreadable."""
    events = journal.events(run_id, 0, strict=False)[:1]
    if events and isinstance(events[0].data, dict):
        args: Any = events[0].data.get("args") or ()
        if len(args) > 1 and isinstance(args[1], dict):
            return dict(args[1])
    return {}


def _queued(journal: Journal, rid: str) -> TaskQueued:
    gate = journal.kv_get(NS_GATED, rid)
    if gate is None:
        return TaskQueued(rid)
    queue, requires = gate
    needs = f" with {dict(requires)}" if requires else ""
    return TaskQueued(rid, f"no consumer takes queue {queue!r}{needs} yet")


def state_of(event: TaskEvent) -> str:
    return _STATE[type(event)]


def _retrying(journal: Journal, st: RunStatus, now: float) -> TaskRetrying | None:
    """The handler's last attempt failed and a retry timer is armed (else None: a delay sleep)."""
    for ev in reversed(journal.events(st.run_id, strict=False)):
        if ev.name != HANDLER_STEP:
            continue
        if ev.kind == "step_attempt_failed" and isinstance(ev.data, dict):
            due = float(ev.data.get("retry_at") or now)
            return TaskRetrying(st.run_id, max(0.0, due - now), int(ev.data.get("attempt", 1)), str(ev.data.get("error", "")))
        return None
    return None


def event_of(journal: Journal, final_event: Any, st: RunStatus, now: float) -> TaskEvent:
    """The sealed status event of an execution whose run status is `st`."""
    state = st.state.value
    rid = st.run_id
    if state == "completed":
        ev = final_event(rid)
        return TaskSucceeded(rid, None if ev is None else ev.data)
    if state == "failed":
        return TaskFailed(rid, clean_message(st.error))
    if state == "cancelled":
        return TaskCancelled(rid)
    if state == "blocked":
        return TaskFailed(rid, f"blocked: {st.error or 'the code no longer matches its journal'}")
    if state == "sleeping":
        return _retrying(journal, st, now) or _queued(journal, rid)
    if state == "running":  # a step waiting out its retry delay keeps its run "running"
        retrying = _retrying(journal, st, now)
        if retrying is not None and retrying.next_attempt_in > 0:
            return retrying
        return TaskRunning(rid, st.progress)
    if rid in INFLIGHT:  # its handler began (told at once) before the run's status record says so
        return TaskRunning(rid, st.progress)
    return _queued(journal, rid)  # pending, or waiting for a dispatch slot or a consumer


def task_name(workflow: str) -> str | None:
    return workflow[len(TASK_PREFIX) :] if workflow.startswith(TASK_PREFIX) else None
