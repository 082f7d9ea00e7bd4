"""What task code and task callers see: TaskContext, TaskResult, the status events, and the checks
that refuse bad input before anything is written."""

from __future__ import annotations

import datetime as _dt
import math
import pickle
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from .._context import MAX_SECONDS
from .._retry import RetryPolicy
from ..errors import ActorflowError, Cancelled, ConfigError, PayloadError

__all__ = [
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
    "check_input",
    "seconds",
    "TASK_PREFIX",
    "UNIQUE_POLICIES",
]

TASK_PREFIX = "task:"  # an execution of task `t` is a run of the built-in workflow "task:t"
UNIQUE_POLICIES = ("keep", "replace")


class TaskFailure(ActorflowError):
    """A handler returned `TaskResult.failure(message)`: final, never retried."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class RetryLater(ActorflowError):
    """A handler returned `TaskResult.retry_later()`: retried per the task's RetryPolicy."""

    def __init__(self, message: str = "the task asked to be retried later") -> None:
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class TaskResult:
    """What a handler may return instead of a plain value (a plain value means success)."""

    kind: Literal["success", "failure", "retry_later"]
    data: Any = None
    message: str = ""

    @classmethod
    def success(cls, data: Any = None) -> TaskResult:
        return cls("success", data)

    @classmethod
    def failure(cls, message: str) -> TaskResult:
        """Fail for good: no retry; the execution ends `TaskFailed(message)` and is a dead letter."""
        return cls("failure", None, str(message))

    @classmethod
    def retry_later(cls, message: str = "the task asked to be retried later") -> TaskResult:
        """Try again after the retry policy's delay (a failed attempt when attempts run out)."""
        return cls("retry_later", None, str(message))


# --- status events: a sealed family (match on it exhaustively) ------------------------------------
@dataclass(frozen=True, slots=True)
class TaskQueued:
    """Waiting: delayed, queued behind a limit, or not picked up yet; `waiting_for` says why when
    no consumer takes its queue or requirements (see Engine(queues=, capabilities=))."""

    execution_id: str
    waiting_for: str = ""


@dataclass(frozen=True, slots=True)
class TaskRunning:
    execution_id: str
    progress: float = 0.0


@dataclass(frozen=True, slots=True)
class TaskRetrying:
    """An attempt failed; the next one starts in `next_attempt_in` seconds (durable timer)."""

    execution_id: str
    next_attempt_in: float
    attempt: int = 1
    error: str = ""


@dataclass(frozen=True, slots=True)
class TaskSucceeded:
    execution_id: str
    output: Any = None


@dataclass(frozen=True, slots=True)
class TaskFailed:
    execution_id: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class TaskCancelled:
    execution_id: str


TaskEvent: TypeAlias = TaskQueued | TaskRunning | TaskRetrying | TaskSucceeded | TaskFailed | TaskCancelled


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`count` executions started per `per` seconds."""

    count: int
    per: float
    text: str


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*$")
_UNIT = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0,
         "hour": 3600.0, "d": 86400.0, "day": 86400.0}


def parse_rate_limit(text: str) -> RateLimit:
    """"100/m", "5/s", "10/30s", "1000/h" -> RateLimit; anything else is a ConfigError."""
    m = _RATE.match(text) if isinstance(text, str) else None
    if m is None or int(m.group(1)) < 1 or (m.group(2) not in ("", ".") and float(m.group(2)) <= 0):
        raise ConfigError(
            f"rate_limit {text!r} does not parse: use 'COUNT/UNIT' with COUNT >= 1 and UNIT one of s, m, h, d "
            "(optionally with a multiple, e.g. '100/m', '5/s', '10/30s')",
            rate_limit=text,
        )
    mult = float(m.group(2)) if m.group(2) not in ("", ".") else 1.0
    return RateLimit(int(m.group(1)), mult * _UNIT[m.group(3)], text)


def seconds(value: Any, what: str, *, positive: bool = False) -> float:
    if isinstance(value, _dt.timedelta):
        s = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        s = float(value)
    else:
        raise ConfigError(f"{what} must be seconds (int/float) or a timedelta, got {value!r}")
    if not 0 <= s < math.inf or (positive and s == 0):
        raise ConfigError(f"{what} must be {'positive' if positive else 'non-negative'} and finite, got {value!r}")
    if s > MAX_SECONDS:
        raise ConfigError(f"{what} must be at most {MAX_SECONDS:g} s (about 317 years), got {value!r}")
    return s


def check_input(input: Any, what: str) -> dict[str, Any]:
    """None -> {}; a dict that pickles -> itself; anything else a clear error before any write."""
    if input is None:
        return {}
    if not isinstance(input, dict):
        raise ConfigError(f"{what}: input must be a dict (or None), got {type(input).__name__} {input!r:.80}")
    try:
        pickle.dumps(input, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - any pickling failure is the caller's input
        raise PayloadError(f"{what}: input cannot be serialized ({type(exc).__name__}: {exc})") from None
    return input


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: its handler and defaults (picklable: it travels to shard processes)."""

    name: str
    fn: Callable[..., Any]
    retry: RetryPolicy | None = None
    timeout: float | None = None
    concurrency: int | None = None
    rate_limit: RateLimit | None = None
    queue: str | None = None  # None: decided by the routing rules at enqueue
    lease: float | None = None  # seconds an attempt lives without a heartbeat (None: no lease)

    @property
    def limited(self) -> bool:
        return self.concurrency is not None or self.rate_limit is not None

    @property
    def workflow(self) -> str:
        return TASK_PREFIX + self.name


# executions whose run was cancelled while their handler ran, in this process (the handler thread
# reads it through TaskContext.cancelled); an entry leaves when that handler returns
_CANCELLED: set[str] = set()
_cancel_lock = threading.Lock()


def mark_cancelled(execution_id: str) -> None:
    with _cancel_lock:
        _CANCELLED.add(execution_id)


def clear_cancelled(execution_id: str) -> None:
    with _cancel_lock:
        _CANCELLED.discard(execution_id)


@dataclass
class TaskContext:
    """What a handler gets: its input, which attempt this is, progress and cancellation."""

    input: dict[str, Any]
    attempt: int
    execution_id: str
    task: str
    _progress: Callable[[float], None] = field(repr=False, default=lambda f: None)
    last_heartbeat: float | None = None
    queue: str = "default"
    _beat: Callable[[], None] = field(repr=False, default=lambda: None)
    _lost: Callable[[], bool] = field(repr=False, default=lambda: False)

    def report_progress(self, fraction: float) -> None:
        """0.0..1.0: seen by task_status()/monitor_execution() as TaskRunning(progress) (journaled)."""
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"progress must be a number in [0, 1], got {fraction!r}")
        self._progress(float(fraction))

    @property
    def cancelled(self) -> bool:
        """True once the execution was cancelled while this handler runs, or this attempt lost its
        lease (another attempt runs instead): stop cooperatively."""
        from .._procsteps import cancelled_in_worker

        return self.execution_id in _CANCELLED or self._lost() or cancelled_in_worker(self.execution_id)

    def heartbeat(self) -> None:
        """Renew this attempt's lease (`@engine.task(lease=...)`) and act as a cancellation point:
        raises Cancelled if the execution was cancelled (or this attempt lost its lease)."""
        import time

        self.last_heartbeat = time.time()
        self._beat()
        if self.cancelled:
            raise Cancelled(self.execution_id, "cancelled while running")
