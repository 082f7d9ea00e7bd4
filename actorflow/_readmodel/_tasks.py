"""The task queue as operator tools see it, read from the journal alone (no engine needed): executions
by task and state, the queued ones' depth by priority, delayed ones with their due time, dead
letters, and schedules with their next fire time.

An execution of task `t` is a run of workflow "task:t"; its state is derived exactly as
`engine.tasks()` derives it (`actorflow.tasks._status.event_of`), its options (priority, delay)
are the second argument journaled in its `run_started` event.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from storage import Journal, RunRecord

from .._types import RunStatus
from ..tasks._execution import clean_message
from ..tasks._queue import NS_REQUEUED
from ..tasks._schedules import next_slot
from ..tasks._status import TASK_STATES, event_of, state_of, task_name
from ._timeline import build_timeline

__all__ = ["TASK_STATES", "QueueView", "Delayed", "DeadLetterRow", "ScheduleRow", "queue_view", "dead_letters", "schedules", "task_state"]


@dataclass(frozen=True, slots=True)
class Delayed:
    execution_id: str
    task: str
    due: float | None
    priority: int


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    execution_id: str
    task: str
    error: str
    attempts: int
    input: Any
    failed_at: float


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    name: str
    task: str
    every: float | None
    cron: str | None
    last_slot: float | None
    next_slot: float
    catch_up: bool


@dataclass(slots=True)
class QueueView:
    tasks: list[str] = field(default_factory=list)
    by_task: dict[str, Counter[str]] = field(default_factory=dict)  # task -> state -> executions
    totals: Counter[str] = field(default_factory=Counter)
    depth: dict[int, int] = field(default_factory=dict)  # priority -> queued executions, highest first
    delayed: list[Delayed] = field(default_factory=list)


def _args(journal: Journal, run_id: str) -> tuple[Any, dict[str, Any]]:
    events = journal.events(run_id, strict=False)
    if events and events[0].kind == "run_started" and isinstance(events[0].data, dict):
        args = events[0].data.get("args")
        if isinstance(args, (list, tuple)) and len(args) == 2 and isinstance(args[1], dict):
            return args[0], args[1]
    return None, {}


def task_state(journal: Journal, rec: RunRecord, now: float) -> str:
    """queued, running, retrying, succeeded, failed or cancelled (as `engine.tasks()` says)."""
    return state_of(event_of(journal, lambda _rid: None, RunStatus.from_record(rec), now))


def queue_view(journal: Journal, now: float) -> QueueView:
    """Every execution counted by task and state; queued ones by priority; delayed ones with due time.

    Counting reads each run's record once (finished ones too); only unfinished executions have
    their journal read, for their options."""
    view = QueueView()
    for rec in journal.runs():
        task = task_name(rec.workflow)
        if task is None:
            continue
        state = task_state(journal, rec, now) if not rec.finished else _FINAL.get(rec.state, "failed")
        view.by_task.setdefault(task, Counter())[state] += 1
        view.totals[state] += 1
        if state != "queued":
            continue
        _, opts = _args(journal, rec.run_id)
        priority = int(opts.get("priority", 0) or 0)
        view.depth[priority] = view.depth.get(priority, 0) + 1
        if rec.state == "sleeping" and opts.get("delay"):
            due = next((w.due for w in build_timeline(rec, journal.events(rec.run_id, strict=False), now).waiting if w.kind == "timer"), None)
            view.delayed.append(Delayed(rec.run_id, task, due, priority))
    view.tasks = sorted(view.by_task)
    view.depth = dict(sorted(view.depth.items(), reverse=True))
    view.delayed.sort(key=lambda d: (d.due or 0.0, d.execution_id))
    return view


_FINAL = {"completed": "succeeded", "failed": "failed", "cancelled": "cancelled", "blocked": "failed"}


def dead_letters(journal: Journal) -> list[DeadLetterRow]:
    """Failed executions not requeued yet, most recent failure first (as `engine.dead_letters()`)."""
    out = []
    for rec in journal.runs("failed"):
        task = task_name(rec.workflow)
        if task is None or journal.kv_get(NS_REQUEUED, rec.run_id) is not None:
            continue
        events = journal.events(rec.run_id, strict=False)
        attempts = sum(1 for e in events if e.kind in ("step_attempt_failed", "step_failed"))
        data, _ = _args(journal, rec.run_id)
        out.append(DeadLetterRow(rec.run_id, task, clean_message(rec.error), attempts, data, rec.updated_at))
    out.sort(key=lambda d: d.failed_at, reverse=True)
    return out


def schedules(journal: Journal) -> list[ScheduleRow]:
    """Every durable schedule with the slot it fires next (as `engine.schedules()`)."""
    out = []
    for name, spec in journal.schedules():
        after = spec["last_slot"] if spec.get("last_slot") is not None else spec["anchor"]
        out.append(ScheduleRow(name, str(spec.get("task", name)), spec.get("every"), spec.get("cron"), spec.get("last_slot"), next_slot(spec, after), bool(spec.get("catch_up", True))))
    out.sort(key=lambda s: s.next_slot)
    return out
