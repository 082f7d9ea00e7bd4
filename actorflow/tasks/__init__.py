"""Background tasks on the workflow engine: an execution is a durable run of the built-in workflow
"task:<name>", so enqueue, delay, retries, cancellation and crash recovery share the journal and
the actors of workflows (embedded and multiprocess alike). See README "Tasks"."""

from __future__ import annotations

from ._api import TaskMethods
from ._chains import Chain, as_input, merge_outputs
from ._model import (
    RateLimit,
    RetryLater,
    TaskCancelled,
    TaskContext,
    TaskEvent,
    TaskFailed,
    TaskFailure,
    TaskQueued,
    TaskResult,
    TaskRetrying,
    TaskRunning,
    TaskSpec,
    TaskSucceeded,
    parse_rate_limit,
)
from ._queue import DeadLetter
from ._status import TaskInfo

__all__ = [
    "TaskMethods",
    "TaskContext",
    "TaskResult",
    "TaskSpec",
    "TaskEvent",
    "TaskQueued",
    "TaskRunning",
    "TaskRetrying",
    "TaskSucceeded",
    "TaskFailed",
    "TaskCancelled",
    "TaskFailure",
    "RetryLater",
    "RateLimit",
    "parse_rate_limit",
    "Chain",
    "as_input",
    "merge_outputs",
    "DeadLetter",
    "TaskInfo",
]
