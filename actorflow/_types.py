"""Public value types: run states, status snapshots, step identity."""

from __future__ import annotations

import contextvars
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from storage import Event, RunRecord

from ._messages import _fast_init

__all__ = ["RunState", "RunStatus", "StepInfo", "current_step", "Event", "FINAL_STATES", "STOPPED_STATES"]


class RunState(str, enum.Enum):
    """Where a run stands; the string values are what the journal stores."""

    PENDING = "pending"
    RUNNING = "running"
    SLEEPING = "sleeping"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"

    def __str__(self) -> str:
        return self.value


FINAL_STATES = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED})
# states after which a run makes no progress in this engine without outside help
STOPPED_STATES = FINAL_STATES | {RunState.BLOCKED}


@dataclass(frozen=True, slots=True)
class RunStatus:
    """A snapshot of one run, as `status()`, `runs()` and `monitor()` report it."""

    run_id: str
    workflow: str
    state: RunState
    progress: float
    created_at: float
    updated_at: float
    error: str | None = None
    parent: str | None = None

    @classmethod
    def from_record(cls, rec: RunRecord) -> RunStatus:
        return cls(
            rec.run_id,
            rec.workflow,
            RunState(rec.state),
            rec.progress,
            rec.created_at,
            rec.updated_at,
            rec.error,
            rec.parent,
        )

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "state": self.state.value,
            "progress": self.progress,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "error": self.error,
            "parent": self.parent,
        }


@dataclass(frozen=True, slots=True)
class StepInfo:
    """Identity of the step attempt now running; `idempotency_key` is stable across re-runs."""

    run_id: str
    name: str
    seq: int
    attempt: int
    idempotency_key: str


_fast_init(StepInfo)  # one per step attempt, built on the step's thread

_current_step: contextvars.ContextVar[StepInfo | None] = contextvars.ContextVar("actorflow_step", default=None)
# inside a step run by this process's step pool: how to post a message to the runtime hosting its run
step_post: contextvars.ContextVar[Callable[[Any], None] | None] = contextvars.ContextVar("actorflow_post", default=None)


def current_step() -> StepInfo:
    """Inside a running step function: which step and attempt this is."""
    info = _current_step.get()
    if info is None:
        raise RuntimeError("actorflow.current_step() called outside a running step")
    return info
