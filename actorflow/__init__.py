"""actorflow: durable workflows and background tasks on the actor model (Thespian + LMDB)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    ActorflowError,
    Cancelled,
    ConfigError,
    InvalidRunId,
    JournalCorrupt,
    JournalFull,
    JournalVersionError,
    NondeterminismError,
    PayloadError,
    RunConflict,
    RunFinished,
    RunIdTaken,
    RunNotFound,
    ShardUnavailable,
    StepFailed,
    StepTimeout,
    StorageError,
    TaskNotRegistered,
    WaitTimeout,
    WorkflowFailed,
    WorkflowNotRegistered,
)

if TYPE_CHECKING:
    from ._clock import Clock, MockClock, SystemClock
    from ._context import WorkflowContext
    from ._engine import Engine
    from ._handle import RunHandle
    from ._logging import configure_logging, log_context
    from ._multiproc._placement import PlacementWait
    from ._residency import Residency
    from ._retry import RetryPolicy
    from ._types import Event, RunState, RunStatus, StepInfo, current_step

# The engine is imported on first use, so `storage` (which raises actorflow.errors) can be
# imported on its own without pulling in the engine that imports it.
_LAZY = {
    "Clock": "._clock",
    "MockClock": "._clock",
    "SystemClock": "._clock",
    "WorkflowContext": "._context",
    "Engine": "._engine",
    "RunHandle": "._handle",
    "Residency": "._residency",
    "RetryPolicy": "._retry",
    "Event": "._types",
    "RunState": "._types",
    "RunStatus": "._types",
    "StepInfo": "._types",
    "current_step": "._types",
    "configure_logging": "._logging",
    "log_context": "._logging",
    "PlacementWait": "._multiproc._placement",  # Engine.waiting_for_placement() (README "Multiple machines")
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'actorflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

__all__ = [
    "Engine",
    "RunHandle",
    "WorkflowContext",
    "RetryPolicy",
    "RunState",
    "RunStatus",
    "Residency",
    "StepInfo",
    "Event",
    "current_step",
    "configure_logging",
    "log_context",
    "Clock",
    "SystemClock",
    "MockClock",
    "ActorflowError",
    "Cancelled",
    "ConfigError",
    "InvalidRunId",
    "JournalCorrupt",
    "JournalFull",
    "JournalVersionError",
    "ShardUnavailable",
    "NondeterminismError",
    "PayloadError",
    "RunConflict",
    "RunFinished",
    "RunIdTaken",
    "RunNotFound",
    "StepFailed",
    "StepTimeout",
    "StorageError",
    "TaskNotRegistered",
    "WaitTimeout",
    "WorkflowFailed",
    "WorkflowNotRegistered",
    "PlacementWait",
]
