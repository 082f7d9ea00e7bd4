"""Fork a run: a new run whose journal is a prefix of another's, replayed and then run on today's code.

What is copied (DBOS' fork, Temporal's reset, on our journal):

* The *steps* of a run are its `ctx.step` commands, counted in the order of each one's first
  journaled event (`step_completed`, `step_failed`, or a `step_attempt_failed` before a retry).
* `from_step=N` keeps the first N steps: the `run_started` event (with the original arguments) and
  every event before the first event of step N+1, whatever its kind (timers, signals received,
  `ctx.now()`...). When the run has no step N+1 the prefix ends before the first event that ends or
  unwinds the run (`cancel_requested`, a compensation, `run_completed/failed/cancelled`,
  `run_blocked`), so forking a finished or blocked run from its last step runs what came after
  it again, on the new code.
* N ranges from 0 (only `run_started`: the whole workflow runs again with the same arguments) to
  the number of steps whose outcome is journaled.
* A step issued together with others by `ctx.gather` whose outcome lies past the cut runs again in
  the fork (the cut is a journal position).

The copy and the new run's creation are one atomic write: `create_run` (state "pending") plus one
`append` per event, with the events' original times and data. The engine then loads the new run
like any run it recovers - replaying the prefix without running any of its steps - and runs the
rest. The original run is only read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from storage import Event, Journal, RunRecord, WriteBatch
from storage._journal import check_run_id

from ._handle import new_run_id
from .errors import ConfigError, RunIdTaken, RunNotFound

__all__ = ["ForkPlan", "plan_fork", "add_fork", "check_created", "STOP_KINDS"]

# the first of these ends the copy when the run has no step after the kept ones
STOP_KINDS = frozenset(
    {
        "cancel_requested",
        "compensation_completed",
        "compensation_failed",
        "run_completed",
        "run_failed",
        "run_cancelled",
        "run_blocked",
    }
)
_STEP_OUTCOMES = ("step_completed", "step_failed")


@dataclass(frozen=True, slots=True)
class ForkPlan:
    """What a fork writes: the new run's record and the events copied from the source."""

    source: str
    run_id: str
    workflow: str
    from_step: int
    steps: int  # steps of the source whose outcome is journaled
    events: list[Event] = field(repr=False)
    record: RunRecord = field(repr=False)

    @property
    def replayed_steps(self) -> list[str]:
        """Names of the steps whose outcome the fork replays, in journal order."""
        return [ev.name for ev in self.events if ev.kind in _STEP_OUTCOMES]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "forked_from": self.source,
            "from_step": self.from_step,
            "workflow": self.workflow,
            "events_copied": len(self.events),
            "replayed_steps": self.replayed_steps,
        }


def _cut(events: list[Event], from_step: int, run_id: str) -> tuple[int, int]:
    """(number of events to copy, steps with a journaled outcome); ConfigError if N is out of range."""
    first_of: dict[int, int] = {}  # step position -> index of its first event
    order: list[int] = []
    finished: set[int] = set()
    stop: int | None = None
    for i, ev in enumerate(events):
        if ev.kind.startswith("step_"):
            if ev.pos not in first_of:
                first_of[ev.pos] = i
                order.append(ev.pos)
            if ev.kind in _STEP_OUTCOMES:
                finished.add(ev.pos)
        elif stop is None and ev.kind in STOP_KINDS:
            stop = i
    done = len(finished)
    if from_step > done:
        raise ConfigError(
            f"from_step={from_step} is out of range: run {run_id!r} has {done} step(s) with a journaled "
            f"outcome, so from_step must be 0..{done}",
            run_id=run_id,
            from_step=from_step,
            steps=done,
        )
    if from_step < len(order):
        cut = first_of[order[from_step]]
        if stop is not None:
            cut = min(cut, stop)
    else:
        cut = len(events) if stop is None else stop
    return max(cut, 1), done


def plan_fork(journal: Journal, source: str, from_step: int, run_id: str | None = None, now: float | None = None) -> ForkPlan:
    """Check everything a fork needs and say what it would write; nothing is written.

    RunNotFound (unknown source), ConfigError (N not an int in range, the source's journal has no
    `run_started`), RunIdTaken (the new id is taken), InvalidRunId, JournalCorrupt (an event of
    the prefix cannot be decoded)."""
    if isinstance(from_step, bool) or not isinstance(from_step, int) or from_step < 0:
        raise ConfigError(f"from_step must be an int >= 0 (the number of steps to keep), got {from_step!r}")
    check_run_id(source)
    src = journal.get_run(source)
    if src is None:
        raise RunNotFound(source)
    new_id = new_run_id() if run_id is None else run_id
    check_run_id(new_id)
    taken = journal.get_run(new_id)
    if taken is not None:
        raise RunIdTaken(new_id, taken.workflow)
    events = journal.events(source)
    if not events or events[0].kind != "run_started":
        raise ConfigError(f"run {source!r} has no run_started event to fork from", run_id=source)
    cut, done = _cut(events, from_step, source)
    at = time.time() if now is None else now
    meta = {"forked_from": source, "from_step": from_step}
    record = RunRecord(new_id, src.workflow, "pending", at, at, meta=meta)
    return ForkPlan(source, new_id, src.workflow, from_step, done, events[:cut], record)


def add_fork(batch: WriteBatch, plan: ForkPlan) -> int:
    """Add the fork's writes to `batch`; returns the index of its `create_run` op (result None: created).

    Events keep their seq, kind, name, position, time and data; only the run id changes."""
    started = plan.events[0]
    idx = batch.create_run(plan.record, started)
    for ev in plan.events[1:]:
        batch.append(plan.run_id, ev)
    return idx


def check_created(plan: ForkPlan, result: Any) -> None:
    """After the commit: `create_run`'s result is the existing record when another writer took the id
    between the plan and the commit."""
    if result is not None:
        raise RunIdTaken(plan.run_id, str(getattr(result, "workflow", "?")))
