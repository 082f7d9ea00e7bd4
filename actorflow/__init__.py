"""actorflow: durable workflows and background tasks on the actor model (Thespian + LMDB)."""

from ._clock import Clock, MockClock, SystemClock
from ._context import WorkflowContext
from ._engine import Engine, RunHandle
from ._retry import RetryPolicy
from ._types import Event, RunState, RunStatus, StepInfo, current_step
from .errors import (
    ActorflowError,
    Cancelled,
    ConfigError,
    JournalCorrupt,
    JournalFull,
    JournalVersionError,
    NondeterminismError,
    PayloadError,
    RunConflict,
    RunFinished,
    RunNotFound,
    StepFailed,
    StepTimeout,
    StorageError,
    TaskNotRegistered,
    WaitTimeout,
    WorkflowFailed,
    WorkflowNotRegistered,
)

__version__ = "0.1.0"

__all__ = [
    "Engine",
    "RunHandle",
    "WorkflowContext",
    "RetryPolicy",
    "RunState",
    "RunStatus",
    "StepInfo",
    "Event",
    "current_step",
    "Clock",
    "SystemClock",
    "MockClock",
    "ActorflowError",
    "Cancelled",
    "ConfigError",
    "JournalCorrupt",
    "JournalFull",
    "JournalVersionError",
    "NondeterminismError",
    "PayloadError",
    "RunConflict",
    "RunFinished",
    "RunNotFound",
    "StepFailed",
    "StepTimeout",
    "StorageError",
    "TaskNotRegistered",
    "WaitTimeout",
    "WorkflowFailed",
    "WorkflowNotRegistered",
]
